/* clock_bench.c — the cost of reading the clock, timed by the program itself.
 *
 * Usage: clock_bench ITERATIONS REPETITIONS
 *
 * Runs one warm-up repetition, then REPETITIONS timed ones, and prints one
 * line per timed repetition: nanoseconds per clock_gettime(CLOCK_MONOTONIC)
 * call.  The C library answers it in the vDSO when the kernel (or minikvm,
 * minikvm/process/vdso.py) maps one: no system call, so no VM exit.  A
 * sandbox without a vDSO pays a full system call per read; this figure
 * beside getpid_bench's says which one a runner does (issue 12, item 3).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: clock_bench ITERATIONS REPETITIONS\n");
        return 2;
    }
    long iterations = atol(argv[1]), repetitions = atol(argv[2]);
    struct timespec previous = {0, 0}, t;

    for (long rep = 0; rep <= repetitions; rep++) {
        double start = now_ns();
        for (long i = 0; i < iterations; i++) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if (t.tv_sec < previous.tv_sec
                || (t.tv_sec == previous.tv_sec && t.tv_nsec < previous.tv_nsec)) {
                fprintf(stderr, "CLOCK_MONOTONIC went back at iteration %ld\n", i);
                return 1;
            }
            previous = t;
        }
        double elapsed = now_ns() - start;
        if (rep > 0)   /* repetition 0 warms caches and the host's paths */
            printf("%.3f\n", elapsed / iterations);
    }
    return 0;
}
