/* fork_wait.c — what one new process costs the guest: fork (or vfork, or a
 * thread, for comparison), the child's _exit, the parent's wait.
 *
 * Per repetition the program times, with clock_gettime(CLOCK_MONOTONIC)
 * (the vDSO's clock in the sandbox, as natively), one
 *   fork()  -> child _exit(7) -> waitpid() sees status 7        ("fork")
 *   vfork() -> child _exit(7) -> waitpid() sees status 7        ("vfork")
 *   pthread_create() -> the thread returns -> pthread_join()    ("thread")
 * after touching MIB mebibytes of heap first, so that the guest memory a
 * fork must copy can be made larger (docs/explanation/processes.md).
 *
 * Usage:  fork_wait [fork|vfork|thread] [REPETITIONS] [MIB]
 * Prints one line: the mode, the repetitions, and the mean, median, min
 * and max in milliseconds.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void *nothing(void *argument) { return argument; }

static int one(const char *mode)
{
    if (strcmp(mode, "thread") == 0) {
        pthread_t thread;
        return pthread_create(&thread, NULL, nothing, NULL) == 0
            && pthread_join(thread, NULL) == 0;
    }
    pid_t child = strcmp(mode, "vfork") == 0 ? vfork() : fork();
    if (child == 0)
        _exit(7);
    int status;
    return child > 0 && waitpid(child, &status, 0) == child
        && WIFEXITED(status) && WEXITSTATUS(status) == 7;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "fork";
    int repetitions = argc > 2 ? atoi(argv[2]) : 50;
    long mib = argc > 3 ? atol(argv[3]) : 0;
    if (repetitions < 1 || mib < 0) {
        fprintf(stderr, "usage: fork_wait [fork|vfork|thread] [REPETITIONS] [MIB]\n");
        return 2;
    }
    if (mib > 0)
        memset(malloc(mib << 20), 1, mib << 20);    /* pages the fork must copy */
    double *ms = malloc(repetitions * sizeof *ms), total = 0;
    for (int i = 0; i < repetitions; i++) {
        double start = now_ms();
        if (!one(mode)) {
            fprintf(stderr, "fork_wait: %s number %d failed\n", mode, i);
            return 1;
        }
        ms[i] = now_ms() - start;
        total += ms[i];
    }
    qsort(ms, repetitions, sizeof *ms, by_value);
    printf("%s x%d, %ld MiB touched: mean %.3f ms, median %.3f ms, min %.3f ms, max %.3f ms\n",
           mode, repetitions, mib, total / repetitions, ms[repetitions / 2], ms[0],
           ms[repetitions - 1]);
    return 0;
}
