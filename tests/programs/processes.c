/* processes.c — a second process: posix_spawn, fork, vfork, exec, wait and
 * signals between parent and child, compared natively and under minikvm
 * (tests/test_processes.py).
 *
 * Run with no argument it prints one heading per part ("spawn-echo:"),
 * and under it, indented, only what is the same on every run and under
 * any pid numbering: statuses, relations between pids ("yes"), counts and
 * sums of the bytes that crossed a pipe — never a pid itself.
 *
 * The children are this program again, exec'd by the path in argv[0]
 * (which the test makes absolute, inside the granted directory):
 *   processes echo WORDS...   print WORDS, exit 0
 *   processes exit N          exit N
 *   processes term            kill itself with SIGTERM
 *   processes kill9           kill itself with SIGKILL
 *   processes wait-fd FD N    read FD until end of file, then exit N
 *   processes sum             read stdin to its end, print "COUNT SUM"
 *   processes count           read stdin to its end, exit with the count of bytes
 *   processes produce N       write N bytes (i * 7 % 251) to stdout
 *
 * stdout is unbuffered, so that no fork copies unwritten output and a
 * child's lines and the parent's come out in the order they were made.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;
static char *self;

/* How wait reports a status, in the words of the <sys/wait.h> macros. */
static void print_status(const char *what, int status)
{
    if (WIFEXITED(status))
        printf("  %s: exited %d\n", what, WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        printf("  %s: killed by signal %d%s\n", what, WTERMSIG(status),
               WCOREDUMP(status) ? " (core)" : "");
    else
        printf("  %s: status 0x%x\n", what, status);
}

static const char *errname(int number)
{
    switch (number) {
    case ESRCH: return "ESRCH";
    case ECHILD: return "ECHILD";
    case EAGAIN: return "EAGAIN";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    default: return strerror(number);
    }
}

static void fail(const char *what)
{
    printf("  %s failed: %s\n", what, errname(errno));
    exit(1);
}

/* A pipe into *fds*, then a fork: what fork returned (0 in the child).
 * The parts below that hand something from a child to its parent start so. */
static pid_t fork_with_pipe(int fds[2])
{
    if (pipe(fds) < 0)
        fail("pipe");
    pid_t pid = fork();
    if (pid < 0)
        fail("fork");
    return pid;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* --- the children's side ------------------------------------------------- */

static int child_main(int argc, char **argv)
{
    const char *mode = argv[1];
    if (strcmp(mode, "echo") == 0) {
        for (int i = 2; i < argc; i++)
            printf("%s%s", i > 2 ? " " : "", argv[i]);
        printf("\n");
        return 0;
    }
    if (strcmp(mode, "exit") == 0 && argc > 2)
        return atoi(argv[2]);
    if (strcmp(mode, "term") == 0) {
        kill(getpid(), SIGTERM);
        return 99;                    /* not reached: SIGTERM's default ends it */
    }
    if (strcmp(mode, "kill9") == 0) {
        kill(getpid(), SIGKILL);
        return 99;                    /* not reached */
    }
    if (strcmp(mode, "wait-fd") == 0 && argc > 3) {
        char c;
        while (read(atoi(argv[2]), &c, 1) > 0)
            ;
        return atoi(argv[3]);
    }
    if (strcmp(mode, "sum") == 0) {
        unsigned char buffer[8192];
        unsigned long count = 0, sum = 0;
        ssize_t got;
        while ((got = read(0, buffer, sizeof buffer)) > 0)
            for (ssize_t i = 0; i < got; i++, count++)
                sum = sum * 31 + buffer[i];
        printf("%lu %lu\n", count, sum);
        return 0;
    }
    if (strcmp(mode, "count") == 0) {
        char c;
        int count = 0;
        while (read(0, &c, 1) > 0)
            count++;
        return count & 0xff;
    }
    if (strcmp(mode, "produce") == 0 && argc > 2) {
        long total = atol(argv[2]);
        unsigned char buffer[4096];
        long done = 0;
        while (done < total) {
            long n = total - done < (long)sizeof buffer ? total - done : (long)sizeof buffer;
            for (long i = 0; i < n; i++)
                buffer[i] = (unsigned char)((done + i) * 7 % 251);
            ssize_t put = write(1, buffer, n);
            if (put <= 0)
                return 2;
            done += put;
        }
        return 0;
    }
    fprintf(stderr, "processes: unknown mode %s\n", mode);
    return 64;
}

/* --- the parent's parts ---------------------------------------------------- */

static pid_t spawn(char *const argv[], posix_spawn_file_actions_t *actions)
{
    pid_t pid;
    int error = posix_spawn(&pid, self, actions, NULL, argv, environ);
    if (error) {
        errno = error;
        fail("posix_spawn");
    }
    return pid;
}

static void wait_for(pid_t pid, const char *what)
{
    int status;
    pid_t got = waitpid(pid, &status, 0);
    if (got != pid)
        fail("waitpid");
    print_status(what, status);
}

static void spawn_statuses(void)
{
    printf("spawn:\n");
    char *echo[] = {self, "echo", "  hello from a spawned child", NULL};
    wait_for(spawn(echo, NULL), "echo");
    char *seven[] = {self, "exit", "7", NULL};
    wait_for(spawn(seven, NULL), "exit 7");
    char *term[] = {self, "term", NULL};
    wait_for(spawn(term, NULL), "SIGTERM");
    char *kill9[] = {self, "kill9", NULL};
    wait_for(spawn(kill9, NULL), "SIGKILL (itself)");
    /* the child's stdout made a pipe by the file actions */
    int fds[2];
    if (pipe(fds) < 0)
        fail("pipe");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    char *piped[] = {self, "echo", "through", "a", "pipe", NULL};
    pid_t pid = spawn(piped, &actions);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    char line[256] = {0};
    ssize_t got, total = 0;
    while (total < (ssize_t)sizeof line - 1
           && (got = read(fds[0], line + total, sizeof line - 1 - total)) > 0)
        total += got;
    close(fds[0]);
    printf("  read from the pipe: %s", line);
    wait_for(pid, "piped echo");
}

static void fork_exec_wnohang(void)
{
    printf("fork-exec-wnohang:\n");
    int fds[2];
    if (pipe(fds) < 0)
        fail("pipe");
    char fd_text[16];
    snprintf(fd_text, sizeof fd_text, "%d", fds[0]);
    pid_t pid = fork();
    if (pid < 0)
        fail("fork");
    if (pid == 0) {
        close(fds[1]);
        execl(self, self, "wait-fd", fd_text, "5", (char *)NULL);
        _exit(127);
    }
    close(fds[0]);
    int status;
    struct rusage usage;
    /* the child blocks on the pipe until we close it: it cannot have ended */
    printf("  wait4(WNOHANG) while it runs: %d\n", (int)wait4(pid, &status, WNOHANG, &usage));
    close(fds[1]);
    pid_t got;
    int polls = 0;
    while ((got = wait4(pid, &status, WNOHANG, &usage)) == 0 && polls < 20000) {
        sleep_ms(1);
        polls++;
    }
    printf("  then wait4 returned the child's pid: %s\n", got == pid ? "yes" : "no");
    print_status("child", status);
    int again = (int)wait4(pid, &status, WNOHANG, NULL);
    printf("  wait4 again: %d %s\n", again, errname(errno));
}

static void waitid_all(void)
{
    printf("waitid-all:\n");
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            fail("fork");
        if (pids[i] == 0)
            _exit(3 + i);
    }
    int seen = 0, statuses = 0;
    for (int i = 0; i < 2; i++) {
        siginfo_t info;
        memset(&info, 0, sizeof info);
        if (waitid(P_ALL, 0, &info, WEXITED) < 0)
            fail("waitid");
        for (int j = 0; j < 2; j++)
            if (info.si_pid == pids[j])
                seen |= 1 << j;
        if (info.si_code == CLD_EXITED && info.si_signo == SIGCHLD)
            statuses += info.si_status;
    }
    printf("  both children reported: %s\n", seen == 3 ? "yes" : "no");
    printf("  sum of their CLD_EXITED statuses: %d\n", statuses);
    siginfo_t info;
    int none = waitid(P_ALL, 0, &info, WEXITED);
    printf("  waitid with no child left: %d %s\n", none, errname(errno));
}

static void parent_pid(void)
{
    printf("getppid:\n");
    int fds[2];
    pid_t pid = fork_with_pipe(fds);
    if (pid == 0) {
        pid_t mine[2] = {getppid(), getpid()};
        write(fds[1], mine, sizeof mine);
        _exit(0);
    }
    pid_t theirs[2] = {0, 0};
    read(fds[0], theirs, sizeof theirs);
    close(fds[0]);
    close(fds[1]);
    printf("  the child's getppid() is the parent's getpid(): %s\n",
           theirs[0] == getpid() ? "yes" : "no");
    printf("  the child's getpid() is what fork returned: %s\n", theirs[1] == pid ? "yes" : "no");
    wait_for(pid, "child");
}

static volatile sig_atomic_t got_usr1;
static void on_usr1(int sig) { got_usr1 = sig; }

static void signal_child(void)
{
    printf("kill-child:\n");
    int ready[2];
    pid_t pid = fork_with_pipe(ready);
    if (pid == 0) {
        sigset_t usr1, none;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        sigemptyset(&none);
        sigprocmask(SIG_BLOCK, &usr1, NULL);
        struct sigaction action = {.sa_handler = on_usr1};
        sigaction(SIGUSR1, &action, NULL);
        write(ready[1], "r", 1);
        while (!got_usr1)
            sigsuspend(&none);
        printf("  the child's handler ran for signal %d\n", (int)got_usr1);
        _exit(0);
    }
    char c;
    read(ready[0], &c, 1);
    close(ready[0]);
    close(ready[1]);
    int sent = kill(pid, SIGUSR1);
    const char *outcome = sent == 0 ? "ok" : errname(errno);
    int status;
    if (waitpid(pid, &status, 0) != pid)
        fail("waitpid");
    /* printed after the wait, so after the child's own line */
    printf("  kill(child, SIGUSR1): %s\n", outcome);
    print_status("child", status);
    /* and a child that does nothing about it dies of it */
    pid = fork();
    if (pid < 0)
        fail("fork");
    if (pid == 0) {
        for (;;)
            pause();
    }
    kill(pid, SIGKILL);
    wait_for(pid, "a pausing child sent SIGKILL");
}

static void vfork_exec(void)
{
    printf("vfork:\n");
    pid_t pid = vfork();
    if (pid < 0)
        fail("vfork");
    if (pid == 0) {
        execl(self, self, "echo", "  the vforked child ran", (char *)NULL);
        _exit(127);
    }
    wait_for(pid, "vforked child");
    pid = vfork();
    if (pid == 0)
        _exit(9);
    wait_for(pid, "vforked _exit(9)");
}

/* 320 KiB to a child's stdin, 400 KiB back from another's stdout: both more
 * than a pipe holds (64 KiB), so each side blocks and is woken many times. */
static void large_pipes(void)
{
    printf("large-pipes:\n");
    enum { TO_CHILD = 320 * 1024, FROM_CHILD = 400 * 1024 };
    int in[2], out[2];
    if (pipe(in) < 0 || pipe(out) < 0)
        fail("pipe");
    pid_t pid = fork();
    if (pid < 0)
        fail("fork");
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]); close(in[1]); close(out[0]); close(out[1]);
        execl(self, self, "sum", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    static unsigned char data[TO_CHILD];
    unsigned long sum = 0;
    for (long i = 0; i < TO_CHILD; i++) {
        data[i] = (unsigned char)(i * 13 % 256);
        sum = sum * 31 + data[i];
    }
    for (long done = 0; done < TO_CHILD;) {
        ssize_t put = write(in[1], data + done, TO_CHILD - done);
        if (put <= 0)
            fail("write to the child");
        done += put;
    }
    close(in[1]);
    char line[128] = {0};
    ssize_t got, total = 0;
    while (total < (ssize_t)sizeof line - 1
           && (got = read(out[0], line + total, sizeof line - 1 - total)) > 0)
        total += got;
    close(out[0]);
    unsigned long their_count = 0, their_sum = 0;
    sscanf(line, "%lu %lu", &their_count, &their_sum);
    printf("  the child read %lu bytes, its sum matches: %s\n", their_count,
           their_sum == sum ? "yes" : "no");
    wait_for(pid, "summing child");

    pid = fork_with_pipe(out);
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]); close(out[1]);
        char size[32];
        snprintf(size, sizeof size, "%d", FROM_CHILD);
        execl(self, self, "produce", size, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    static unsigned char back[FROM_CHILD + 1];
    long have = 0;
    while (have < (long)sizeof back && (got = read(out[0], back + have, sizeof back - have)) > 0)
        have += got;
    close(out[0]);
    long wrong = 0;
    for (long i = 0; i < have; i++)
        wrong += back[i] != (unsigned char)(i * 7 % 251);
    printf("  read %ld bytes from the producing child, %ld wrong\n", have, wrong);
    wait_for(pid, "producing child");
}

/* The main thread waits for a child that reads its stdin to the end,
 * while a second thread is still to write it: the wait must leave the
 * other thread running (Go's os/exec feeds a child's stdin this way). */
static int feed_fd;
static void *feeder(void *unused)
{
    (void)unused;
    sleep_ms(100);
    for (int i = 0; i < 3; i++)
        if (write(feed_fd, "abc", 3) != 3)
            break;
    close(feed_fd);
    return NULL;
}

static void wait_in_a_thread(void)
{
    printf("wait-beside-a-thread:\n");
    int in[2];
    pid_t pid = fork_with_pipe(in);
    if (pid == 0) {
        dup2(in[0], 0);
        close(in[0]);
        close(in[1]);
        execl(self, self, "count", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    feed_fd = in[1];
    pthread_t thread;
    if (pthread_create(&thread, NULL, feeder, NULL) != 0)
        fail("pthread_create");
    wait_for(pid, "child fed by the other thread");
    pthread_join(thread, NULL);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    self = argv[0];
    if (argc > 1)
        return child_main(argc, argv);
    spawn_statuses();
    fork_exec_wnohang();
    waitid_all();
    parent_pid();
    signal_child();
    vfork_exec();
    large_pipes();
    wait_in_a_thread();
    return 0;
}
