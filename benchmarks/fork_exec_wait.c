/* fork_exec_wait.c — the cost of starting a child program and waiting for it.
 *
 * Usage: fork_exec_wait CHILD ITERATIONS REPETITIONS
 *
 * Each iteration is what a shell does for an external command: fork(),
 * execv(CHILD) in the child, waitpid() in the parent, and a check that the
 * child exited with status 0.  One untimed fork+exec+wait warms the
 * host's paths, then each of REPETITIONS prints one line: milliseconds per
 * fork+exec+wait, from CLOCK_MONOTONIC around ITERATIONS of them.
 *
 * A sandbox that refuses a second process makes fork fail: the program
 * then says so on stderr (with the errno) and exits with status 3, so the
 * harness can report the figure as not measured, with that reason.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Exit statuses the harness tells apart from a crash. */
#define STATUS_FORK_REFUSED 3
#define STATUS_CHILD_FAILED 4

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* One fork+exec+wait of *child* (iteration -1 is the warm-up); exits
 * the program on any failure, saying which. */
static void spawn(const char *child, long iteration)
{
    pid_t pid = fork();
    if (pid < 0) {
        if (iteration < 0)
            fprintf(stderr, "fork_exec_wait: the first fork failed: %s\n", strerror(errno));
        else
            fprintf(stderr, "fork_exec_wait: fork failed at iteration %ld: %s\n",
                    iteration, strerror(errno));
        exit(STATUS_FORK_REFUSED);
    }
    if (pid == 0) {
        char *const argv[] = {(char *)child, NULL};
        execv(child, argv);
        fprintf(stderr, "fork_exec_wait: execv(%s) failed: %s\n", child, strerror(errno));
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid) {
        fprintf(stderr, "fork_exec_wait: waitpid(%d) failed: %s\n", pid, strerror(errno));
        exit(STATUS_CHILD_FAILED);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "fork_exec_wait: child %s ended with wait status %#x at "
                "iteration %ld\n", child, status, iteration);
        exit(STATUS_CHILD_FAILED);
    }
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: fork_exec_wait CHILD ITERATIONS REPETITIONS\n");
        return 2;
    }
    const char *child = argv[1];
    long iterations = atol(argv[2]), repetitions = atol(argv[3]);
    if (iterations < 1 || repetitions < 1) {
        fprintf(stderr, "fork_exec_wait: ITERATIONS and REPETITIONS must be at least 1\n");
        return 2;
    }

    spawn(child, -1);   /* the warm-up */
    for (long rep = 0; rep < repetitions; rep++) {
        double start = now_ms();
        for (long i = 0; i < iterations; i++)
            spawn(child, i);
        printf("%.4f\n", (now_ms() - start) / iterations);
        fflush(stdout);
    }
    return 0;
}
