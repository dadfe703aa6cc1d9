/* stat_bench.c — the cost of one stat(2) of a path, timed by the program itself.
 *
 * Usage: stat_bench PATH ITERATIONS REPETITIONS
 *
 * As getpid_bench.c: one warm-up repetition, then REPETITIONS timed ones,
 * each printing microseconds per call.  Every call must give the answer
 * the first one gave (found, or the same errno), so a path that comes and
 * goes is reported instead of timed.  Under minikvm this is the cost of a
 * path lookup in the policy: a missing path outside every grant (hidden,
 * ENOENT) or a path in the system view (/usr/bin/env).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int answer(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? 0 : errno;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: stat_bench PATH ITERATIONS REPETITIONS\n");
        return 2;
    }
    const char *path = argv[1];
    long iterations = atol(argv[2]), repetitions = atol(argv[3]);
    int first = answer(path);

    for (long rep = 0; rep <= repetitions; rep++) {
        double start = now_us();
        for (long i = 0; i < iterations; i++) {
            if (answer(path) != first) {
                fprintf(stderr, "stat(%s) changed its answer at iteration %ld\n", path, i);
                return 1;
            }
        }
        double elapsed = now_us() - start;
        if (rep > 0)
            printf("%.3f\n", elapsed / iterations);
    }
    return 0;
}
