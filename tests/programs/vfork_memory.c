/* vfork_memory.c — a vfork child's stores reach its parent, as on Linux.
 *
 * A vfork child (and posix_spawn's CLONE_VM|CLONE_VFORK child) borrows its
 * parent's memory until it execs or exits: what it stores there, the parent
 * sees.  glibc's posix_spawn relies on it to report the execve error of a
 * missing program (the child stores it in the parent's memory); musl's uses
 * a pipe.  Each part prints one line; the output is compared with a native
 * run (tests/test_process_views.py).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void spawn_and_report(const char *path)
{
    pid_t pid = -1;
    char *argv[] = {(char *)path, "-c", "exit 3", NULL};
    int error = posix_spawn(&pid, path, NULL, NULL, argv, environ);
    if (error != 0) {
        printf("posix_spawn(%s) = %s\n", path, strerror(error));
        return;
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) {
        printf("waitpid: %s\n", strerror(errno));
        return;
    }
    printf("posix_spawn(%s) = 0, child %s %d\n", path,
           WIFEXITED(status) ? "exited" : "killed by",
           WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

static volatile int stored_by_the_child;
static char written_by_a_read[32];

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    spawn_and_report("/no/such/program");
    spawn_and_report(argc > 1 ? argv[1] : "/bin/sh");

    /* The guest's own store, and one the kernel makes (read into a buffer). */
    int fds[2];
    if (pipe(fds) != 0 || write(fds[1], "through the pipe", 16) != 16)
        return 1;
    pid_t pid = vfork();
    if (pid == 0) {
        stored_by_the_child = 42;
        if (read(fds[0], written_by_a_read, 16) != 16)
            _exit(1);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    printf("vfork child stored %d and read \"%s\", exited %d\n", stored_by_the_child,
           written_by_a_read, WEXITSTATUS(status));
    return 0;
}
