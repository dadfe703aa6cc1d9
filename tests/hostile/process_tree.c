/* process_tree.c — a guest whose processes try to outgrow, outlive or
 * reach beyond the sandbox (tests/test_processes.py).
 *
 * Usage:
 *   process_tree bomb             fork forever, and every child too; the
 *                                 first process says once what a refused
 *                                 fork answered ("fork refused: EAGAIN")
 *   process_tree kill PID         a child tries kill(PID, 0) and
 *                                 kill(PID, SIGTERM) on a host process
 *                                 outside the sandbox
 *   process_tree exec PATH        a child tries execve(PATH)
 *   process_tree sleepers N hold  N children, each with a grandchild, all
 *                                 sleeping 60 s; "ready" once all run, then
 *                                 the first process sleeps too (the test
 *                                 SIGKILLs minikvm)
 *   process_tree sleepers N leave the same, but the first process exits 0
 *                                 right after "ready"
 *
 * Each attempt prints one line with the errno's name; nothing is asserted
 * in the guest.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *errname(long result)
{
    if (result >= 0)
        return "ok";
    switch (errno) {
    case ESRCH: return "ESRCH";
    case EPERM: return "EPERM";
    case EAGAIN: return "EAGAIN";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case ENOMEM: return "ENOMEM";
    default: return strerror(errno);
    }
}

static void report_status(int status)
{
    if (WIFEXITED(status))
        printf("child exited %d\n", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        printf("child killed by signal %d\n", WTERMSIG(status));
}

static void wait_child(pid_t pid)
{
    int status;
    if (waitpid(pid, &status, 0) == pid)
        report_status(status);
    else
        printf("waitpid: %s\n", errname(-1));
}

_Noreturn static void bomb(void)
{
    pid_t first = getpid();
    int told = 0;
    for (;;) {
        pid_t pid = fork();
        if (pid < 0 && !told && getpid() == first) {
            printf("fork refused: %s\n", errname(-1));
            told = 1;
        }
    }
}

static int kill_host(pid_t target)
{
    pid_t pid = fork();
    if (pid < 0) {
        printf("fork: %s\n", errname(-1));
        return 1;
    }
    if (pid == 0) {
        printf("kill(host pid, 0): %s\n", errname(kill(target, 0)));
        printf("kill(host pid, SIGTERM): %s\n", errname(kill(target, SIGTERM)));
        _exit(0);
    }
    wait_child(pid);
    return 0;
}

static int exec_outside(char *path)
{
    pid_t pid = fork();
    if (pid < 0) {
        printf("fork: %s\n", errname(-1));
        return 1;
    }
    if (pid == 0) {
        char *argv[] = {path, NULL};
        execve(path, argv, (char *[]){NULL});
        printf("execve: %s\n", errname(-1));
        _exit(1);
    }
    wait_child(pid);
    return 0;
}

static void sleep_long(void)
{
    struct timespec ts = {60, 0};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int sleepers(int count, int leave)
{
    int ready[2];
    if (pipe(ready) < 0)
        return 1;
    for (int i = 0; i < count; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            printf("fork: %s\n", errname(-1));
            return 1;
        }
        if (pid == 0) {
            pid_t grandchild = fork();
            if (grandchild == 0) {
                (void)!write(ready[1], "g", 1);
                sleep_long();
                _exit(0);
            }
            (void)!write(ready[1], "c", 1);
            sleep_long();
            _exit(0);
        }
    }
    char byte;
    for (int i = 0; i < 2 * count; i++)
        if (read(ready[0], &byte, 1) != 1)
            return 1;
    printf("ready\n");
    if (!leave)
        sleep_long();
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc == 2 && strcmp(argv[1], "bomb") == 0)
        bomb();
    if (argc == 3 && strcmp(argv[1], "kill") == 0)
        return kill_host(atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "exec") == 0)
        return exec_outside(argv[2]);
    if (argc == 4 && strcmp(argv[1], "sleepers") == 0)
        return sleepers(atoi(argv[2]), strcmp(argv[3], "leave") == 0);
    fprintf(stderr, "usage: process_tree bomb | kill PID | exec PATH | sleepers N hold|leave\n");
    return 64;
}
