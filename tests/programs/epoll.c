/* epoll, natively and under minikvm: the same output (tests/test_epoll.py).
 *
 * Each argument names a part to run (all of them when there is none).
 * Pipes and eventfds, level- and edge-triggered, EPOLLONESHOT and its
 * re-arm with EPOLL_CTL_MOD, EPOLL_CTL_DEL, timeouts, the errors Linux
 * gives, an epoll inside an epoll, and a thread writing a pipe while
 * another waits in epoll_wait, and a signal sent to the waiting thread
 * (pthread_kill), which ends its epoll_wait with EINTR and runs the
 * handler in that thread.  Every line printed depends only on what
 * the calls return, never on timing.  Run in a scratch directory: the
 * "errors" part creates a regular file there.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_epoll_pwait2
#define SYS_epoll_pwait2 441
#endif
#define MAX_EVENTS 8

static const char *errno_name(int error) {
    switch (error) {
    case 0: return "ok";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case EEXIST: return "EEXIST";
    case ENOENT: return "ENOENT";
    case EPERM: return "EPERM";
    case ELOOP: return "ELOOP";
    case EFAULT: return "EFAULT";
    case EAGAIN: return "EAGAIN";
    case EINTR: return "EINTR";
    default: return strerror(error);
    }
}

/* "name: result" for a call returning -1 and errno on failure */
static void show(const char *what, long result) {
    printf("  %s: %s\n", what, result < 0 ? errno_name(errno) : "ok");
}

static void die(const char *what) {
    printf("%s failed: %s\n", what, strerror(errno));
    exit(1);
}

static int make_epoll(void) {
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");
    return epfd;
}

static void make_pipe(int ends[2]) {
    if (pipe2(ends, O_NONBLOCK) < 0)
        die("pipe2");
}

static void add(int epfd, int fd, uint32_t events, uint64_t data) {
    struct epoll_event event = {.events = events, .data.u64 = data};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event) < 0)
        die("epoll_ctl ADD");
}

static void put(int fd, const char *text) {
    if (write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        die("write");
}

static void drain(int fd) {
    char buffer[256];
    while (read(fd, buffer, sizeof buffer) > 0) {
    }
}

static const char *event_names(uint32_t events) {
    static char names[128];
    names[0] = 0;
    if (events & EPOLLIN) strcat(names, "|IN");
    if (events & EPOLLOUT) strcat(names, "|OUT");
    if (events & EPOLLERR) strcat(names, "|ERR");
    if (events & EPOLLHUP) strcat(names, "|HUP");
    if (events & EPOLLRDHUP) strcat(names, "|RDHUP");
    if (events & ~(EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
        strcat(names, "|other");
    return names[0] ? names + 1 : "none";
}

/* epoll_wait, printing what came back */
static int wait_and_show(const char *what, int epfd, int max, int timeout_ms) {
    struct epoll_event events[MAX_EVENTS];
    int count = epoll_wait(epfd, events, max, timeout_ms);
    if (count < 0) {
        printf("  %s: %s\n", what, errno_name(errno));
        return count;
    }
    printf("  %s: %d", what, count);
    for (int i = 0; i < count; i++)
        printf(" [%s data=%#llx]", event_names(events[i].events),
               (unsigned long long)events[i].data.u64);
    printf("\n");
    return count;
}

/* -- creating one ------------------------------------------------------------------- */
static void part_create(void) {
    printf("create:\n");
    printf("  sizeof(struct epoll_event) = %zu\n", sizeof(struct epoll_event));
    show("epoll_create(0)", epoll_create(0));
    show("epoll_create(-1)", epoll_create(-1));
    show("epoll_create1(O_NONBLOCK)", epoll_create1(O_NONBLOCK));
    int old = epoll_create(1);
    show("epoll_create(1)", old);
    printf("  epoll_create: FD_CLOEXEC %d\n", fcntl(old, F_GETFD) & FD_CLOEXEC);
    int epfd = make_epoll();
    printf("  epoll_create1(EPOLL_CLOEXEC): FD_CLOEXEC %d\n", fcntl(epfd, F_GETFD) & FD_CLOEXEC);
    char path[64], link[64] = "";
    snprintf(path, sizeof path, "/proc/self/fd/%d", epfd);
    ssize_t length = readlink(path, link, sizeof link - 1);
    if (length >= 0)
        link[length] = 0;
    printf("  link: %s\n", link);
    char byte;
    show("read(epfd)", read(epfd, &byte, 1));
    close(old);
    close(epfd);
}

/* -- the errors -------------------------------------------------------------------- */
static void part_errors(void) {
    printf("errors:\n");
    int epfd = make_epoll(), ends[2];
    make_pipe(ends);
    struct epoll_event event = {.events = EPOLLIN, .data.u64 = 1};
    show("ADD to a closed epfd", epoll_ctl(999, EPOLL_CTL_ADD, ends[0], &event));
    show("ADD a closed fd", epoll_ctl(epfd, EPOLL_CTL_ADD, 999, &event));
    show("ADD to a pipe, not an epoll", epoll_ctl(ends[1], EPOLL_CTL_ADD, ends[0], &event));
    show("ADD the epoll to itself", epoll_ctl(epfd, EPOLL_CTL_ADD, epfd, &event));
    show("ADD", epoll_ctl(epfd, EPOLL_CTL_ADD, ends[0], &event));
    show("ADD again", epoll_ctl(epfd, EPOLL_CTL_ADD, ends[0], &event));
    show("MOD an fd not added", epoll_ctl(epfd, EPOLL_CTL_MOD, ends[1], &event));
    show("DEL an fd not added", epoll_ctl(epfd, EPOLL_CTL_DEL, ends[1], &event));
    show("op 99", epoll_ctl(epfd, 99, ends[0], &event));
    event.events = EPOLLIN | EPOLLEXCLUSIVE;
    show("MOD with EPOLLEXCLUSIVE", epoll_ctl(epfd, EPOLL_CTL_MOD, ends[0], &event));
    event.events = EPOLLIN;
    int file = open("epoll-regular-file", O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (file < 0)
        die("open");
    show("ADD a regular file", epoll_ctl(epfd, EPOLL_CTL_ADD, file, &event));
    int directory = open(".", O_RDONLY | O_DIRECTORY);
    show("ADD a directory", epoll_ctl(epfd, EPOLL_CTL_ADD, directory, &event));
    int null = open("/dev/null", O_RDWR);
    show("ADD /dev/null", epoll_ctl(epfd, EPOLL_CTL_ADD, null, &event));
    struct epoll_event events[1];
    show("wait with maxevents 0", epoll_wait(epfd, events, 0, 0));
    volatile int negative = -1;    /* not a constant: the compiler would warn */
    show("wait with maxevents -1", epoll_wait(epfd, events, negative, 0));
    show("wait on a pipe", epoll_wait(ends[0], events, 1, 0));
    show("wait on a closed fd", epoll_wait(999, events, 1, 0));
    uint64_t mask = 0;
    show("pwait with sigsetsize 3", syscall(SYS_epoll_pwait, epfd, events, 1, 0, &mask, 3));
    close(file);
    close(directory);
    close(null);
    unlink("epoll-regular-file");
    close(ends[0]);
    close(ends[1]);
    close(epfd);
}

/* -- level-triggered --------------------------------------------------------------- */
static void part_level(void) {
    printf("level:\n");
    int epfd = make_epoll(), ends[2];
    make_pipe(ends);
    add(epfd, ends[0], EPOLLIN, 0x1122334455667788ull);
    wait_and_show("empty pipe", epfd, MAX_EVENTS, 0);
    put(ends[1], "ab");
    wait_and_show("after a write", epfd, MAX_EVENTS, 0);
    wait_and_show("again, not read", epfd, MAX_EVENTS, -1);
    drain(ends[0]);
    wait_and_show("after reading all", epfd, MAX_EVENTS, 0);
    add(epfd, ends[1], EPOLLOUT, 2);
    wait_and_show("the write end too", epfd, MAX_EVENTS, 0);
    struct epoll_event event = {.events = EPOLLIN | EPOLLOUT, .data.u64 = 3};
    show("MOD the write end", epoll_ctl(epfd, EPOLL_CTL_MOD, ends[1], &event));
    wait_and_show("after MOD", epfd, MAX_EVENTS, 0);
    show("DEL the write end", epoll_ctl(epfd, EPOLL_CTL_DEL, ends[1], NULL));
    close(ends[1]);
    wait_and_show("writer closed (HUP unasked)", epfd, MAX_EVENTS, 0);
    close(ends[0]);
    wait_and_show("reader closed: forgotten", epfd, MAX_EVENTS, 0);
    int again[2];
    make_pipe(again);
    show("ADD the reused fd number", epoll_ctl(epfd, EPOLL_CTL_ADD, again[0], &event));
    close(again[0]);
    close(again[1]);
    close(epfd);
}

/* -- edge-triggered ---------------------------------------------------------------- */
static void part_edge(void) {
    printf("edge:\n");
    int epfd = make_epoll(), ends[2];
    make_pipe(ends);
    add(epfd, ends[0], EPOLLIN | EPOLLET, 7);
    wait_and_show("empty pipe", epfd, MAX_EVENTS, 0);
    put(ends[1], "a");
    wait_and_show("after a write", epfd, MAX_EVENTS, 0);
    wait_and_show("again, nothing new", epfd, MAX_EVENTS, 0);
    put(ends[1], "b");
    wait_and_show("more data, still unread", epfd, MAX_EVENTS, 0);
    drain(ends[0]);
    wait_and_show("after reading all", epfd, MAX_EVENTS, 0);
    put(ends[1], "c");
    wait_and_show("new data", epfd, MAX_EVENTS, 0);
    add(epfd, ends[1], EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, 8);   /* as Go does */
    wait_and_show("the write end, as Go adds it", epfd, MAX_EVENTS, 0);
    wait_and_show("again", epfd, MAX_EVENTS, 0);
    close(ends[1]);
    wait_and_show("writer closed", epfd, MAX_EVENTS, 0);
    wait_and_show("again", epfd, MAX_EVENTS, 0);
    close(ends[0]);
    close(epfd);
}

/* -- one-shot ---------------------------------------------------------------------- */
static void part_oneshot(void) {
    printf("oneshot:\n");
    int epfd = make_epoll(), ends[2];
    make_pipe(ends);
    add(epfd, ends[0], EPOLLIN | EPOLLONESHOT, 5);
    put(ends[1], "x");
    wait_and_show("first", epfd, MAX_EVENTS, 0);
    wait_and_show("disabled", epfd, MAX_EVENTS, 0);
    put(ends[1], "y");
    wait_and_show("more data, still disabled", epfd, MAX_EVENTS, 0);
    struct epoll_event event = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = 6};
    show("MOD re-arms", epoll_ctl(epfd, EPOLL_CTL_MOD, ends[0], &event));
    wait_and_show("re-armed", epfd, MAX_EVENTS, 0);
    wait_and_show("disabled again", epfd, MAX_EVENTS, 0);
    show("DEL", epoll_ctl(epfd, EPOLL_CTL_DEL, ends[0], NULL));
    show("MOD after DEL", epoll_ctl(epfd, EPOLL_CTL_MOD, ends[0], &event));
    close(ends[0]);
    close(ends[1]);
    close(epfd);
}

/* -- more ready than maxevents: each in turn ---------------------------------------- */
static void part_turns(void) {
    printf("turns:\n");
    int epfd = make_epoll(), pipes[3][2];
    for (int i = 0; i < 3; i++) {
        make_pipe(pipes[i]);
        add(epfd, pipes[i][0], EPOLLIN, 0xa0 + i);
    }
    for (int i = 0; i < 3; i++)
        put(pipes[i][1], "z");
    wait_and_show("maxevents 2", epfd, 2, 0);
    wait_and_show("maxevents 2 again", epfd, 2, 0);
    wait_and_show("all", epfd, MAX_EVENTS, 0);
    for (int i = 0; i < 3; i++) {
        close(pipes[i][0]);
        close(pipes[i][1]);
    }
    close(epfd);
}

/* -- timeouts ----------------------------------------------------------------------- */
static void part_timeouts(void) {
    printf("timeouts:\n");
    int epfd = make_epoll(), ends[2];
    make_pipe(ends);
    add(epfd, ends[0], EPOLLIN, 1);
    wait_and_show("epoll_wait 30 ms", epfd, MAX_EVENTS, 30);
    struct epoll_event events[MAX_EVENTS];
    printf("  epoll_pwait 10 ms: %d\n", epoll_pwait(epfd, events, MAX_EVENTS, 10, NULL));
    struct timespec timeout = {0, 20 * 1000 * 1000};
    printf("  epoll_pwait2 20 ms: %ld\n",
           syscall(SYS_epoll_pwait2, epfd, events, MAX_EVENTS, &timeout, NULL, 8));
    put(ends[1], "t");
    printf("  epoll_pwait2 ready: %ld\n",
           syscall(SYS_epoll_pwait2, epfd, events, MAX_EVENTS, NULL, NULL, 8));
    close(ends[0]);
    close(ends[1]);
    close(epfd);
}

/* -- eventfd ------------------------------------------------------------------------ */
static void part_eventfd(void) {
    printf("eventfd:\n");
    int epfd = make_epoll(), level = eventfd(0, EFD_NONBLOCK), edge = eventfd(0, EFD_NONBLOCK);
    if (level < 0 || edge < 0)
        die("eventfd");
    add(epfd, level, EPOLLIN, 0x10);
    add(epfd, edge, EPOLLIN | EPOLLET, 0x20);
    wait_and_show("zero counters", epfd, MAX_EVENTS, 0);
    uint64_t value = 3;
    if (write(level, &value, sizeof value) != sizeof value
        || write(edge, &value, sizeof value) != sizeof value)
        die("write eventfd");
    wait_and_show("after adding 3", epfd, MAX_EVENTS, 0);
    wait_and_show("again", epfd, MAX_EVENTS, 0);
    if (read(level, &value, sizeof value) != sizeof value)
        die("read eventfd");
    printf("  read: %llu\n", (unsigned long long)value);
    show("read again", read(level, &value, sizeof value));
    wait_and_show("after reading the level one", epfd, MAX_EVENTS, 0);
    value = 1;
    if (write(edge, &value, sizeof value) != sizeof value)
        die("write eventfd");
    wait_and_show("edge: written again", epfd, MAX_EVENTS, 0);
    uint32_t small;
    show("read into 4 bytes", read(edge, &small, sizeof small));
    value = UINT64_MAX;
    show("write 0xffffffffffffffff", write(edge, &value, sizeof value));
    int semaphore = eventfd(2, EFD_SEMAPHORE | EFD_NONBLOCK);
    for (int i = 0; i < 3; i++) {
        ssize_t got = read(semaphore, &value, sizeof value);
        printf("  semaphore read: %s %llu\n", got < 0 ? errno_name(errno) : "ok",
               got < 0 ? 0ull : (unsigned long long)value);
    }
    show("eventfd2 with flag 0x10", syscall(SYS_eventfd2, 0, 0x10));
    close(semaphore);
    close(level);
    close(edge);
    close(epfd);
}

/* -- an epoll inside an epoll, and inside poll ---------------------------------------- */
static void part_nested(void) {
    printf("nested:\n");
    int outer = make_epoll(), inner = make_epoll(), ends[2];
    make_pipe(ends);
    add(inner, ends[0], EPOLLIN, 1);
    add(outer, inner, EPOLLIN, 2);
    wait_and_show("nothing yet", outer, MAX_EVENTS, 0);
    struct pollfd poller = {.fd = inner, .events = POLLIN};
    printf("  poll(inner): %d\n", poll(&poller, 1, 0));
    put(ends[1], "n");
    wait_and_show("the pipe is ready", outer, MAX_EVENTS, 0);
    int ready = poll(&poller, 1, 0);
    printf("  poll(inner): %d revents %#x\n", ready, poller.revents);
    struct epoll_event event = {.events = EPOLLIN};
    show("ADD outer to inner (a loop)", epoll_ctl(inner, EPOLL_CTL_ADD, outer, &event));
    close(ends[0]);
    close(ends[1]);
    close(inner);
    close(outer);
}

/* -- a thread writes while another waits ------------------------------------------------ */
static int thread_pipe[2];

static void *late_writer(void *unused) {
    (void)unused;
    struct timespec pause = {0, 20 * 1000 * 1000};
    nanosleep(&pause, NULL);
    put(thread_pipe[1], "from a thread");
    return NULL;
}

static void part_thread(void) {
    printf("thread:\n");
    int epfd = make_epoll();
    make_pipe(thread_pipe);
    add(epfd, thread_pipe[0], EPOLLIN | EPOLLET, 0x77);
    pthread_t writer;
    if (pthread_create(&writer, NULL, late_writer, NULL))
        die("pthread_create");
    wait_and_show("wait with no timeout", epfd, MAX_EVENTS, -1);
    char buffer[32] = "";
    ssize_t length = read(thread_pipe[0], buffer, sizeof buffer - 1);
    printf("  read %zd: %s\n", length, length > 0 ? buffer : "");
    pthread_join(writer, NULL);
    close(thread_pipe[0]);
    close(thread_pipe[1]);
    close(epfd);
}

/* -- a signal to the waiting thread: EINTR, the handler in that thread ----------------- */
static pthread_t waiter_thread;
static volatile int handled_in_waiter, waiter_done;

static void on_usr1(int sig) {
    (void)sig;
    handled_in_waiter = pthread_equal(pthread_self(), waiter_thread);
}

static void *waiter(void *argument) {
    int epfd = *(int *)argument;
    struct epoll_event events[1];
    int result = epoll_wait(epfd, events, 1, 20000);
    printf("  epoll_wait: %s\n", result < 0 ? errno_name(errno) : "returned");
    waiter_done = 1;
    return NULL;
}

static void part_interrupt(void) {
    printf("interrupt:\n");
    struct sigaction action = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
    sigaction(SIGUSR1, &action, NULL);
    int epfd = make_epoll(), ends[2];
    make_pipe(ends);
    add(epfd, ends[0], EPOLLIN, 1);
    if (pthread_create(&waiter_thread, NULL, waiter, &epfd))
        die("pthread_create");
    struct timespec pause = {0, 20 * 1000 * 1000};
    for (int tries = 0; !waiter_done && tries < 500; tries++) {
        nanosleep(&pause, NULL);
        if (!waiter_done)
            pthread_kill(waiter_thread, SIGUSR1);
    }
    pthread_join(waiter_thread, NULL);
    printf("  the handler ran in the waiting thread: %s\n", handled_in_waiter ? "yes" : "no");
    signal(SIGUSR1, SIG_DFL);
    close(ends[0]);
    close(ends[1]);
    close(epfd);
}

static const struct {
    const char *name;
    void (*run)(void);
} PARTS[] = {
    {"create", part_create}, {"errors", part_errors}, {"level", part_level},
    {"edge", part_edge}, {"oneshot", part_oneshot}, {"turns", part_turns},
    {"timeouts", part_timeouts}, {"eventfd", part_eventfd}, {"nested", part_nested},
    {"thread", part_thread}, {"interrupt", part_interrupt},
};
#define PART_COUNT (sizeof PARTS / sizeof PARTS[0])

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    for (size_t i = 0; i < PART_COUNT; i++) {
        int wanted = argc == 1;
        for (int a = 1; a < argc; a++)
            wanted |= strcmp(argv[a], PARTS[i].name) == 0;
        if (wanted)
            PARTS[i].run();
    }
    return 0;
}
