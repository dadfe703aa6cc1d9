/* exec.c — execve and execveat, compared natively and under minikvm
 * (tests/test_exec.py).
 *
 * Usage:
 *   exec show...             print argc, argv, the EXEC_* environment, comm,
 *                            AT_EXECFN and the signal state (the exec'd side;
 *                            any mode starting with "show", so a #! line's
 *                            argument "show a b" lands here too)
 *   exec run PATH ARGS...    execve(PATH, [PATH, ARGS...], a small env)
 *   exec at FILE ARGS...     execveat(open(FILE), "", ..., AT_EMPTY_PATH)
 *   exec fds FILE            open FILE twice (one O_CLOEXEC), exec "show-fds"
 *   exec signals             catch SIGUSR1, ignore SIGUSR2, block SIGTERM, exec "show"
 *   exec thread              a second thread execs "show" while the first waits
 *   exec chain N             exec itself N times, then exit 0 (a measure of exec)
 *   exec fails DIR           every failing execve the test's DIR prepares; the
 *                            program goes on after each and says "still here"
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "errnames.h"

extern char **environ;
static char *child_env[] = {"EXEC_ONE=1", "EXEC_TWO=two words", "PATH=/usr/bin:/bin", NULL};
static const char *self;

static void on_signal(int sig) { (void)sig; }

static int show(int argc, char **argv)
{
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++)
        printf("argv[%d]=%s\n", i, argv[i]);
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "EXEC_", 5) == 0)
            printf("env %s\n", *e);
    char name[16] = {0};
    prctl(PR_GET_NAME, name);
    printf("comm=%s\n", name);
    const char *execfn = (const char *)getauxval(AT_EXECFN);
    printf("execfn=%s\n", execfn ? execfn : "(none)");
    printf("pid is tid: %s\n", getpid() == syscall(SYS_gettid) ? "yes" : "no");
    char exe[4096] = {0};
    printf("exe=%s\n", readlink("/proc/self/exe", exe, sizeof exe - 1) > 0 ? exe : "?");
    char buffer[4096];
    int fd = open("/proc/self/cmdline", O_RDONLY);
    ssize_t got = fd >= 0 ? read(fd, buffer, sizeof buffer) : -1;
    printf("cmdline=");
    for (ssize_t i = 0; i < got; i++)
        putchar(buffer[i] ? buffer[i] : '|');
    putchar('\n');
    if (fd >= 0)
        close(fd);
    fd = open("/proc/self/comm", O_RDONLY);
    got = fd >= 0 ? read(fd, buffer, sizeof buffer - 1) : -1;
    printf("/proc/self/comm=%.*s", got > 0 ? (int)got : 0, buffer);
    if (fd >= 0)
        close(fd);
    struct sigaction action;
    sigaction(SIGUSR1, NULL, &action);
    printf("SIGUSR1 %s\n", action.sa_handler == SIG_DFL ? "default" : "not default");
    sigaction(SIGUSR2, NULL, &action);
    printf("SIGUSR2 %s\n", action.sa_handler == SIG_IGN ? "ignored" : "not ignored");
    sigset_t mask;
    sigprocmask(SIG_BLOCK, NULL, &mask);
    printf("SIGTERM %s\n", sigismember(&mask, SIGTERM) ? "blocked" : "not blocked");
    if (strcmp(argv[0], "show-fds") == 0 || (argc > 1 && strcmp(argv[1], "show-fds") == 0)) {
        int kept = atoi(argv[argc - 1]), closed = atoi(argv[argc - 2]);
        printf("fd %d (O_CLOEXEC): %s\n", closed,
               fcntl(closed, F_GETFD) < 0 && errno == EBADF ? "closed" : "open");
        printf("fd %d: %s\n", kept, fcntl(kept, F_GETFD) == 0 ? "open" : "closed");
        printf("write to it: %zd\n", write(kept, "written after exec\n", 19));
    }
    return 0;
}

static void report(const char *name, long result)
{
    printf("%s: %s\n", name, err(result));
}

static int fails(const char *dir)
{
    char path[4096];
    char *args[] = {"x", NULL};
#define AT(name) (snprintf(path, sizeof path, "%s/%s", dir, name), path)
    report("missing", execve(AT("no-such-file"), args, child_env));
    report("directory", execve(dir, args, child_env));
    report("not-executable", execve(AT("plain.txt"), args, child_env));
    report("unknown-format", execve(AT("text-with-x"), args, child_env));
    report("script-loop", execve(AT("loop.sh"), args, child_env));
    report("missing-interpreter", execve(AT("orphan.sh"), args, child_env));
    report("empty-path", execve("", args, child_env));
    char *bad_argv[] = {"x", (char *)1, NULL};
    report("bad-argv-string", execve(self, bad_argv, child_env));
    char **volatile unmapped_array = (char **)8;     /* volatile: no warning, no folding */
    char *volatile unmapped_path = (char *)8;
    report("bad-argv-array", execve(self, unmapped_array, child_env));
    report("bad-path", execve(unmapped_path, args, child_env));
    /* 3 MiB of arguments: more than the 2 MiB (a quarter of the stack limit) allowed */
    size_t count = 3 * 1024, size = 1024;
    char **big = calloc(count + 1, sizeof *big);
    char *block = malloc(size);
    memset(block, 'a', size - 1);
    block[size - 1] = 0;
    for (size_t i = 0; i < count; i++)
        big[i] = block;
    report("e2big", execve(self, big, child_env));
    char *long_string = malloc(33 * 4096);
    memset(long_string, 'b', 33 * 4096 - 1);
    long_string[33 * 4096 - 1] = 0;
    char *long_argv[] = {"x", long_string, NULL};
    report("string-too-long", execve(self, long_argv, child_env));
    report("nofollow", syscall(SYS_execveat, AT_FDCWD, AT("link-to-self"), args, child_env,
                               AT_SYMLINK_NOFOLLOW));
    report("bad-flags", syscall(SYS_execveat, AT_FDCWD, self, args, child_env, 0x4));
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
    report("dirfd-empty-path", syscall(SYS_execveat, dirfd, "", args, child_env, AT_EMPTY_PATH));
    printf("still here\n");
    return 0;
}

static void *exec_from_thread(void *unused)
{
    (void)unused;
    char *args[] = {"from-thread", "show", "thread", NULL};
    execve(self, args, child_env);
    printf("execve from a thread: %s\n", err(-1));
    exit(1);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    self = (const char *)getauxval(AT_EXECFN);
    if (argc < 2)
        return show(argc, argv);
    const char *mode = argv[1];
    if (strncmp(mode, "show", 4) == 0 || strncmp(argv[0], "show", 4) == 0)
        return show(argc, argv);
    if (strcmp(mode, "run") == 0 && argc >= 3) {
        execve(argv[2], argv + 2, child_env);
        printf("execve %s: %s\n", argv[2], err(-1));
        return 1;
    }
    if (strcmp(mode, "at") == 0 && argc >= 3) {
        int fd = open(argv[2], O_RDONLY);
        syscall(SYS_execveat, fd, "", argv + 2, child_env, AT_EMPTY_PATH);
        printf("execveat %s: %s\n", argv[2], err(-1));
        return 1;
    }
    if (strcmp(mode, "fds") == 0 && argc >= 3) {
        int closed = open(argv[2], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        int kept = open(argv[2], O_WRONLY | O_APPEND);
        char a[16], b[16];
        snprintf(a, sizeof a, "%d", closed);
        snprintf(b, sizeof b, "%d", kept);
        char *args[] = {"show-fds", a, b, NULL};
        execve(self, args, child_env);
        printf("execve: %s\n", err(-1));
        return 1;
    }
    if (strcmp(mode, "signals") == 0) {
        signal(SIGUSR1, on_signal);
        signal(SIGUSR2, SIG_IGN);
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        char *args[] = {"after-signals", "show", NULL};
        execve(self, args, child_env);
        printf("execve: %s\n", err(-1));
        return 1;
    }
    if (strcmp(mode, "thread") == 0) {     /* de_thread: the caller becomes the leader */
        pthread_t thread;
        pthread_create(&thread, NULL, exec_from_thread, NULL);
        pthread_join(thread, NULL);          /* waits for ever: the exec ends this thread */
        return 3;
    }
    if (strcmp(mode, "chain") == 0 && argc >= 3) {  /* exec itself N times, then exit */
        int left = atoi(argv[2]);
        if (left <= 0)
            return 0;
        char *touched = malloc(1 << 20);   /* memory the next image must not keep */
        memset(touched, 1, 1 << 20);
        char next[16];
        snprintf(next, sizeof next, "%d", left - 1);
        char *args[] = {argv[0], "chain", next, NULL};
        execve(self, args, child_env);
        printf("execve: %s\n", err(-1));
        return 1;
    }
    if (strcmp(mode, "fails") == 0 && argc >= 3)
        return fails(argv[2]);
    fprintf(stderr, "usage: exec show|run PATH ARGS|at FILE ARGS|fds FILE|signals|thread|"
            "fails DIR\n");
    return 2;
}
