/* A CGI-style request handler for serve --max-processes: each request may
 * run a helper program in a process of its own, as a CGI script runs one.
 *
 * The request's path chooses:
 *   /spawn        fork, exec this program as the helper ("helper" argument),
 *                 read its output through a pipe, wait for it
 *   /posix_spawn  the same with posix_spawn (CLONE_VM|CLONE_VFORK)
 *   /missing      posix_spawn of a program that does not exist
 *   /leave        fork a child that sleeps and never reap it: the reset
 *                 must end it
 *   /probe-PID    kill(PID, 0): whether that process still exists
 *   /count        how many processes /proc lists
 * Each answers one line.
 */
#include "../../include/minikvm.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
static char request[1 << 14];
static char answer[1 << 12];

static const char *path_of(char *text, long length)
{
    char *start = memchr(text, '/', length);
    if (!start)
        return "";
    start++;
    start[strcspn(start, " ?\r\n")] = 0;
    return start;
}

/* The helper's output (read through the pipe *fd*) and its exit status. */
static int collect(int fd, pid_t pid, char *out, size_t size)
{
    size_t got = 0;
    ssize_t n;
    while (got + 1 < size && (n = read(fd, out + got, size - 1 - got)) > 0)
        got += n;
    out[got] = 0;
    close(fd);
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return -errno;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void run_helper(int use_posix_spawn, const char *program)
{
    int fds[2];
    char output[256];
    if (pipe(fds) != 0) {
        snprintf(answer, sizeof answer, "pipe: %s", strerror(errno));
        return;
    }
    char *argv[] = {(char *)program, "helper", NULL};
    pid_t pid;
    if (use_posix_spawn) {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
        int error = posix_spawn(&pid, program, &actions, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&actions);
        close(fds[1]);
        if (error) {
            close(fds[0]);
            snprintf(answer, sizeof answer, "posix_spawn: %s", strerror(error));
            return;
        }
    } else {
        pid = fork();
        if (pid < 0) {
            snprintf(answer, sizeof answer, "fork: %s", strerror(errno));
            return;
        }
        if (pid == 0) {
            dup2(fds[1], 1);
            execve(program, argv, environ);
            _exit(127);
        }
        close(fds[1]);
    }
    int status = collect(fds[0], pid, output, sizeof output);
    snprintf(answer, sizeof answer, "child %d said \"%s\" and exited %d", pid, output, status);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "helper")) {
        printf("helper %d of %d", getpid(), getppid());
        return 5;
    }
    for (;;) {
        long n = minikvm_wait_request(request, sizeof request - 1);
        if (n <= 0)
            break;
        request[n] = 0;
        const char *path = path_of(request, n);
        if (!strcmp(path, "spawn")) {
            run_helper(0, "/proc/self/exe");
        } else if (!strcmp(path, "posix_spawn")) {
            run_helper(1, "/proc/self/exe");
        } else if (!strcmp(path, "missing")) {
            run_helper(1, "/no/such/program");
        } else if (!strcmp(path, "leave")) {
            pid_t pid = fork();
            if (pid == 0) {
                for (;;)
                    pause();
            }
            snprintf(answer, sizeof answer, "left %d", pid);
        } else if (!strncmp(path, "probe-", 6)) {
            int alive = kill(atoi(path + 6), 0) == 0;
            snprintf(answer, sizeof answer, "%s", alive ? "alive" : strerror(errno));
        } else if (!strcmp(path, "count")) {
            int count = 0;
            DIR *proc = opendir("/proc");
            struct dirent *entry;
            while (proc && (entry = readdir(proc)))
                count += entry->d_name[0] >= '1' && entry->d_name[0] <= '9';
            if (proc)
                closedir(proc);
            snprintf(answer, sizeof answer, "%d processes", count);
        } else {
            snprintf(answer, sizeof answer, "unknown request %s", path);
        }
        minikvm_respond(answer, strlen(answer));
    }
    return 0;
}
