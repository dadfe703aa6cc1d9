/* A request handler that tries to make one request's state outlive it.
 *
 * Under `minikvm serve` (or a snapshot's forks) every request must start
 * from the snapshot taken at the first minikvm_wait_request: memory, and
 * everything the host keeps for the process.  Each request here changes
 * one piece of that host-side state and answers; "peek" answers with a
 * summary of all of it, so tests/test_snapshot.py and tests/test_serve.py
 * compare "peek" after each change with "peek" in a fresh fork: any
 * difference (or a crash, or a leftover thread running) is a leak.
 *
 *   thread:SECRET  a thread that keeps writing SECRET into a global and
 *                  sleeping: it must not run in a later request
 *   spinner        a thread that spins without system calls (preempted)
 *   waiter         a thread blocked on a futex for ever (a futex waiter)
 *   brk            moves the program break inside its page
 *   open           opens /dev/null (a new fd)
 *   close          closes the eventfd made at start-up
 *   handler        installs a SIGUSR1 handler
 *   block          blocks SIGUSR2 and raises it: masked and pending
 *   altstack       installs a sigaltstack
 *   alarm          sets a 20 ms ITIMER_REAL: SIGALRM would kill a later request
 *   umask          umask(077)
 *   chdir:PATH     chdir(PATH)
 *   epoll          registers the eventfd in the epoll made at start-up
 *   eventfd        adds 5 to the eventfd
 *   pipe           reads the pipe filled at start-up
 *   pipes          makes three pipes and closes them: a later pipe's inode
 *                  number must not tell how many pipes requests made
 *   identity       setsid/prctl(PR_SET_NAME)/setpriority/personality
 *   tid            set_tid_address and set_robust_list on the main thread
 *
 * For Fork.call(): start_thread() starts a thread and returns 1,
 * thread_alive() returns 1 when thread 1001 (the first thread a request
 * can start) exists, move_break(delta) moves the break, current_break();
 * crash_after_moving_break() does, then faults.
 */
#define _GNU_SOURCE
#include "../../include/minikvm.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define FUTEX_WAIT 0            /* linux/futex.h, which musl-gcc cannot see */
#define FIRST_THREAD_TID 1001   /* minikvm: the pid is 1000, threads follow */
#define PEEK_SLEEP_NS 30000000  /* 30 ms: longer than the "alarm" timer */

static char request[4096];
static char answer[4096];
static char leaked[64];          /* what a leftover thread writes */
static char secret[64];
static atomic_int started;
static int never;                /* a futex word nobody wakes */
static int epoll_fd, event_fd, pipe_fds[2];

static void *keep_writing(void *unused)
{
    char mine[64];
    strcpy(mine, secret);        /* on this thread's stack, made in the request */
    started = 1;
    for (;;) {
        strcpy(leaked, mine);
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static void *spin(void *unused)
{
    started = 1;
    for (;;)
        __asm__ volatile ("" ::: "memory");
    return NULL;
}

static void *wait_for_ever(void *unused)
{
    started = 1;
    for (;;)
        syscall(SYS_futex, &never, FUTEX_WAIT, 0, NULL, NULL, 0);
    return NULL;
}

static int start(void *(*function)(void *))
{
    pthread_t thread;
    started = 0;
    if (pthread_create(&thread, NULL, function, NULL))
        return -1;
    while (!started)
        sched_yield();
    return 0;
}

long start_thread(void) { return start(keep_writing) == 0; }

long thread_alive(void) { return syscall(SYS_tgkill, getpid(), FIRST_THREAD_TID, 0) == 0; }

long current_break(void) { return syscall(SYS_brk, 0); }

long move_break(long delta) { return syscall(SYS_brk, current_break() + delta); }

/* An address no program maps (the kernel area): reading it faults. */
static volatile long *volatile nowhere = (volatile long *)16;

long crash_after_moving_break(void)
{
    move_break(8);
    return *nowhere;
}

static void on_usr1(int sig) { (void)sig; }

/* Move the break without leaving its page: the mappings do not change. */
static long break_within_page(void)
{
    long now = current_break();
    return move_break(now % 4096 && now % 4096 <= 4096 - 8 ? 8 : -8);
}

static int peek(char *out, size_t size)
{
    /* Let any leftover thread run (and write `leaked`), and any leftover
     * alarm fire, before looking. */
    struct timespec pause = {0, PEEK_SLEEP_NS};
    nanosleep(&pause, NULL);
    unsigned fds = 0;
    for (int fd = 0; fd < 32; fd++)
        fds |= (fcntl(fd, F_GETFD) != -1) << fd;
    struct sigaction usr1;
    sigaction(SIGUSR1, NULL, &usr1);
    sigset_t mask, pending;
    sigprocmask(SIG_BLOCK, NULL, &mask);
    sigpending(&pending);
    stack_t stack;
    sigaltstack(NULL, &stack);
    struct itimerval timer;
    getitimer(ITIMER_REAL, &timer);
    mode_t mask_bits = umask(0);
    umask(mask_bits);
    char cwd[256] = "?";
    if (!getcwd(cwd, sizeof cwd))
        strcpy(cwd, "?");
    struct epoll_event event;
    int ready = epoll_wait(epoll_fd, &event, 1, 0);
    int registered = epoll_ctl(epoll_fd, EPOLL_CTL_DEL, event_fd, NULL) == 0;
    uint64_t count = 0;
    long counted = read(event_fd, &count, sizeof count);
    char piped[32] = "";
    long got = read(pipe_fds[0], piped, sizeof piped - 1);
    piped[got > 0 ? got : 0] = 0;
    int probe[2];
    struct stat probed = {0};
    if (pipe(probe) == 0) {
        fstat(probe[0], &probed);
        close(probe[0]);
        close(probe[1]);
    }
    char name[17] = "";
    prctl(PR_GET_NAME, name);
    errno = 0;
    int nice_value = getpriority(PRIO_PROCESS, 0);
    return snprintf(out, size,
                    "leaked=%s thread=%ld brk=%#lx fds=%#x usr1=%s mask=%#lx pending=%#lx "
                    "altstack=%s alarm=%ld.%06ld umask=%03o cwd=%s epoll=%d registered=%d "
                    "eventfd=%ld:%llu pipe=%s pipe_inode=%lu sid=%d pgid=%d name=%s nice=%d personality=%#x",
                    leaked, thread_alive(), current_break(), fds,
                    usr1.sa_handler == SIG_DFL ? "default" : "changed",
                    *(unsigned long *)&mask, *(unsigned long *)&pending,
                    stack.ss_flags & SS_DISABLE ? "off" : "on",
                    (long)timer.it_value.tv_sec, (long)timer.it_value.tv_usec, mask_bits, cwd,
                    ready, registered, counted, (unsigned long long)count, piped,
                    (unsigned long)probed.st_ino,
                    getsid(0), getpgid(0), name, nice_value, personality(0xffffffff));
}

static int act(const char *command)
{
    if (!strncmp(command, "thread:", 7)) {
        snprintf(secret, sizeof secret, "%s", command + 7);
        return start(keep_writing);
    }
    if (!strcmp(command, "spinner"))
        return start(spin);
    if (!strcmp(command, "waiter"))
        return start(wait_for_ever);
    if (!strcmp(command, "brk"))
        return break_within_page() == current_break() ? 0 : -1;
    if (!strcmp(command, "open"))
        return open("/dev/null", O_RDONLY);
    if (!strcmp(command, "close"))
        return close(event_fd);
    if (!strcmp(command, "handler")) {
        struct sigaction action = {.sa_handler = on_usr1};
        return sigaction(SIGUSR1, &action, NULL);
    }
    if (!strcmp(command, "block")) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR2);
        sigprocmask(SIG_BLOCK, &set, NULL);
        return raise(SIGUSR2);
    }
    if (!strcmp(command, "altstack")) {
        static char area[1 << 16];
        stack_t stack = {.ss_sp = area, .ss_size = sizeof area};
        return sigaltstack(&stack, NULL);
    }
    if (!strcmp(command, "alarm")) {
        struct itimerval timer = {{0, 0}, {0, 20000}};
        return setitimer(ITIMER_REAL, &timer, NULL);
    }
    if (!strcmp(command, "umask"))
        return umask(077) == 077 ? -1 : 0;
    if (!strncmp(command, "chdir:", 6))
        return chdir(command + 6);
    if (!strcmp(command, "epoll")) {
        struct epoll_event event = {.events = EPOLLIN, .data.u64 = 7};
        uint64_t one = 1;
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, event_fd, &event))
            return -1;
        return write(event_fd, &one, sizeof one) == sizeof one ? 0 : -1;
    }
    if (!strcmp(command, "eventfd")) {
        uint64_t five = 5;
        return write(event_fd, &five, sizeof five) == sizeof five ? 0 : -1;
    }
    if (!strcmp(command, "pipe")) {
        char buffer[32];
        return read(pipe_fds[0], buffer, sizeof buffer) > 0 ? 0 : -1;
    }
    if (!strcmp(command, "pipes")) {
        for (int i = 0; i < 3; i++) {
            int ends[2];
            if (pipe(ends))
                return -1;
            close(ends[0]);
            close(ends[1]);
        }
        return 0;
    }
    if (!strcmp(command, "identity")) {
        setsid();               /* EPERM (a group leader), as under a shell */
        setpgid(0, 0);
        prctl(PR_SET_NAME, "changed");
        setpriority(PRIO_PROCESS, 0, 5);
        personality(ADDR_NO_RANDOMIZE);
        return 0;
    }
    if (!strcmp(command, "tid")) {
        syscall(SYS_set_tid_address, &never);
        return syscall(SYS_set_robust_list, &never, 24);
    }
    return -2;
}

int main(void)
{
    epoll_fd = epoll_create1(0);
    event_fd = eventfd(0, EFD_NONBLOCK);
    if (epoll_fd < 0 || event_fd < 0 || pipe2(pipe_fds, O_NONBLOCK))
        return 1;
    if (write(pipe_fds[1], "start-up", 8) != 8)
        return 1;
    move_break(100);             /* inside a page, whatever the C library did */
    for (;;) {
        long n = minikvm_wait_request(request, sizeof request - 1);
        if (n <= 0)
            break;
        request[n] = 0;
        /* The command: the request, or an HTTP request's path without "/". */
        char *command = request;
        char *space = strchr(request, ' ');
        if (space && space[1] == '/') {
            command = space + 2;
            command[strcspn(command, " ?\r\n")] = 0;
        }
        int length;
        if (!strcmp(command, "peek")) {
            length = peek(answer, sizeof answer);
        } else {
            int result = act(command);
            length = snprintf(answer, sizeof answer, "%s: %s", command,
                              result >= 0 ? "done" : result == -2 ? "unknown" : strerror(errno));
        }
        minikvm_respond(answer, length);
    }
    return 0;
}
