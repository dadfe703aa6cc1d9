/* getpid_bench.c — the cost of one system call, timed by the program itself.
 *
 * Usage: getpid_bench ITERATIONS REPETITIONS
 *
 * Runs one warm-up repetition, then REPETITIONS timed ones, and prints one
 * line per timed repetition: microseconds per getpid call, from
 * CLOCK_MONOTONIC read before and after ITERATIONS calls.  Under a sandbox
 * that emulates clock_gettime with a system call, the two clock reads add
 * two calls per repetition: negligible against ITERATIONS.
 *
 * syscall(SYS_getpid) is used rather than getpid() so that no C library
 * answers from a cache: every iteration is one real system call.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: getpid_bench ITERATIONS REPETITIONS\n");
        return 2;
    }
    long iterations = atol(argv[1]), repetitions = atol(argv[2]);
    long pid = syscall(SYS_getpid);

    for (long rep = 0; rep <= repetitions; rep++) {
        double start = now_us();
        for (long i = 0; i < iterations; i++) {
            if (syscall(SYS_getpid) != pid) {
                fprintf(stderr, "getpid changed at iteration %ld\n", i);
                return 1;
            }
        }
        double elapsed = now_us() - start;
        if (rep > 0)   /* repetition 0 warms caches and the host's paths */
            printf("%.3f\n", elapsed / iterations);
    }
    return 0;
}
