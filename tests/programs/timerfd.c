/* timerfd under minikvm and natively: the same lines must come out.
 *
 * Parts (each prints its name, then indented lines): create (flags,
 * clocks, errors), settime (the errors of bad values and flags, huge
 * values saturate), loop (a 10 ms interval timer read 5 times, blocking),
 * nonblock (EAGAIN before the expiration), epoll (5 expirations through
 * epoll_wait, level and edge), poll (poll and select see it readable),
 * gettime (remaining time and interval, disarm, the old value),
 * abstime (TFD_TIMER_ABSTIME on CLOCK_MONOTONIC and CLOCK_REALTIME, in
 * the past expires at once), thread (a thread blocks in read while the
 * main thread waits for it).  No line depends on how long anything took:
 * counts print as ">= 1" checks, times as range checks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MS 1000000L

#include "errnames.h"

static struct itimerspec spec(long interval_ns, long value_ns) {
    struct itimerspec s;
    s.it_interval.tv_sec = interval_ns / 1000000000L;
    s.it_interval.tv_nsec = interval_ns % 1000000000L;
    s.it_value.tv_sec = value_ns / 1000000000L;
    s.it_value.tv_nsec = value_ns % 1000000000L;
    return s;
}

static void create(void) {
    puts("create:");
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    printf("  monotonic nonblock cloexec: %s, O_NONBLOCK %d, FD_CLOEXEC %d\n", err(fd),
           !!(fcntl(fd, F_GETFL) & O_NONBLOCK), !!(fcntl(fd, F_GETFD) & FD_CLOEXEC));
    char link[64] = "";
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, link, sizeof link - 1);
    printf("  readlink: %s\n", n > 0 ? link : err(n));
    close(fd);
    fd = timerfd_create(CLOCK_REALTIME, 0);
    printf("  realtime: %s\n", err(fd));
    close(fd);
    fd = timerfd_create(CLOCK_BOOTTIME, 0);
    printf("  boottime: %s\n", err(fd));
    close(fd);
    printf("  CLOCK_PROCESS_CPUTIME_ID: %s\n", err(timerfd_create(CLOCK_PROCESS_CPUTIME_ID, 0)));
    printf("  clock 99: %s\n", err(timerfd_create(99, 0)));
    printf("  clock -1: %s\n", err(timerfd_create(-1, 0)));
    printf("  bad flags: %s\n", err(timerfd_create(CLOCK_MONOTONIC, 0x1)));
    printf("  TFD_TIMER_ABSTIME as a create flag: %s\n",
           err(timerfd_create(CLOCK_MONOTONIC, TFD_TIMER_ABSTIME)));
}

static void settime(void) {
    puts("settime:");
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec s = spec(0, 0);
    s.it_value.tv_nsec = -1;
    printf("  negative nsec: %s\n", err(timerfd_settime(fd, 0, &s, NULL)));
    s.it_value.tv_nsec = 1000000000L;
    printf("  nsec 10^9: %s\n", err(timerfd_settime(fd, 0, &s, NULL)));
    s = spec(0, 0);
    s.it_value.tv_sec = -5;
    printf("  negative sec: %s\n", err(timerfd_settime(fd, 0, &s, NULL)));
    s = spec(0, 0);
    s.it_interval.tv_nsec = -7;
    s.it_value.tv_sec = 1;
    printf("  negative interval nsec: %s\n", err(timerfd_settime(fd, 0, &s, NULL)));
    s = spec(0, MS);
    printf("  bad flags: %s\n", err(timerfd_settime(fd, 0x100, &s, NULL)));
    printf("  CANCEL_ON_SET without ABSTIME: %s\n",
           err(timerfd_settime(fd, TFD_TIMER_CANCEL_ON_SET, &s, NULL)));
    printf("  CANCEL_ON_SET on CLOCK_MONOTONIC: %s\n",
           err(timerfd_settime(fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &s, NULL)));
    printf("  NULL new value: %s\n", err(syscall(SYS_timerfd_settime, fd, 0, NULL, NULL)));
    printf("  bad new value pointer: %s\n",
           err(syscall(SYS_timerfd_settime, fd, 0, (void *)8, NULL)));
    printf("  bad old value pointer: %s\n",
           err(syscall(SYS_timerfd_settime, fd, 0, &s, (void *)8)));
    printf("  not a timerfd: %s\n", err(timerfd_settime(0, 0, &s, NULL)));
    printf("  closed fd: %s\n", err(timerfd_settime(999, 0, &s, NULL)));
    struct itimerspec cur;
    printf("  gettime of a non-timerfd: %s\n", err(timerfd_gettime(0, &cur)));
    printf("  gettime to a bad pointer: %s\n", err(syscall(SYS_timerfd_gettime, fd, (void *)8)));
    /* huge values: valid, and they saturate: the timer simply never expires */
    s = spec(0, 0);
    s.it_value.tv_sec = INT64_MAX;
    s.it_value.tv_nsec = 999999999;
    s.it_interval.tv_sec = INT64_MAX;
    printf("  INT64_MAX seconds: %s\n", err(timerfd_settime(fd, 0, &s, NULL)));
    printf("  gettime after it: %s", err(timerfd_gettime(fd, &cur)));
    printf(", value > 200 years %d, interval > 200 years %d\n",
           cur.it_value.tv_sec > 200L * 365 * 86400, cur.it_interval.tv_sec > 200L * 365 * 86400);
    uint64_t count;
    printf("  read before it expires: %s\n", err(read(fd, &count, sizeof count)));
    printf("  absolute INT64_MAX: %s\n", err(timerfd_settime(fd, TFD_TIMER_ABSTIME, &s, NULL)));
    printf("  read with a 4-byte buffer: %s\n", err(read(fd, &count, 4)));
    printf("  write: %s\n", err(write(fd, &count, sizeof count)));
    close(fd);
}

static void loop(void) {
    puts("loop:");
    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec s = spec(10 * MS, 10 * MS);
    printf("  settime 10 ms interval: %s\n", err(timerfd_settime(fd, 0, &s, NULL)));
    uint64_t total = 0;
    for (int i = 0; i < 5; i++) {
        uint64_t count = 0;
        ssize_t n = read(fd, &count, sizeof count);
        printf("  read %d: %s, %zd bytes, count >= 1: %d\n", i, err(n), n, count >= 1);
        total += count;
    }
    printf("  5 reads saw >= 5 expirations: %d\n", total >= 5);
    s = spec(0, 0);
    printf("  disarm: %s\n", err(timerfd_settime(fd, 0, &s, NULL)));
    close(fd);
}

static void nonblock(void) {
    puts("nonblock:");
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    uint64_t count = 0;
    printf("  read disarmed: %s\n", err(read(fd, &count, sizeof count)));
    struct itimerspec s = spec(0, 60000 * MS);
    timerfd_settime(fd, 0, &s, NULL);
    printf("  read before a 60 s timer: %s\n", err(read(fd, &count, sizeof count)));
    s = spec(0, 1);
    timerfd_settime(fd, 0, &s, NULL);
    struct pollfd p = {fd, POLLIN, 0};
    poll(&p, 1, -1);
    ssize_t n = read(fd, &count, sizeof count);
    printf("  read after a 1 ns one-shot: %s, count %llu\n", err(n), (unsigned long long)count);
    printf("  read again: %s\n", err(read(fd, &count, sizeof count)));
    close(fd);
}

static void via_epoll(void) {
    puts("epoll:");
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
    printf("  epoll_ctl add: %s\n", err(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)));
    struct epoll_event out[4];
    printf("  disarmed, timeout 0: %d events\n", epoll_wait(ep, out, 4, 0));
    struct itimerspec s = spec(10 * MS, 10 * MS);
    timerfd_settime(fd, 0, &s, NULL);
    for (int i = 0; i < 5; i++) {
        int n = epoll_wait(ep, out, 4, -1);
        uint64_t count = 0;
        ssize_t r = read(fd, &count, sizeof count);
        printf("  wait %d: %d event, data %llu, EPOLLIN %d, read %s, count >= 1: %d\n", i, n,
               (unsigned long long)out[0].data.u64, !!(out[0].events & EPOLLIN), err(r),
               count >= 1);
    }
    ev.events = EPOLLIN | EPOLLET;
    printf("  epoll_ctl mod to edge: %s\n", err(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev)));
    /* Linux's timer stops after an expiration until a read re-arms it: an
     * edge-triggered wait sees one edge, then nothing until the read. */
    printf("  edge wait: %d event\n", epoll_wait(ep, out, 4, -1));
    printf("  edge wait again, 50 ms: %d events\n", epoll_wait(ep, out, 4, 50));
    uint64_t count = 0;
    read(fd, &count, sizeof count);
    printf("  the read after them, count >= 2: %d\n", count >= 2);
    printf("  edge wait after the read: %d event\n", epoll_wait(ep, out, 4, -1));
    close(ep);
    close(fd);
}

static void via_poll(void) {
    puts("poll:");
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct pollfd p = {fd, POLLIN, 0};
    printf("  disarmed: poll %d, revents %#x\n", poll(&p, 1, 0), p.revents);
    struct itimerspec s = spec(0, 5 * MS);
    timerfd_settime(fd, 0, &s, NULL);
    int n = poll(&p, 1, 10000);
    printf("  5 ms timer: poll %d, revents %#x\n", n, p.revents);
    uint64_t count;
    read(fd, &count, sizeof count);
    timerfd_settime(fd, 0, &s, NULL);
    fd_set set;
    FD_ZERO(&set);
    FD_SET(fd, &set);
    n = select(fd + 1, &set, NULL, NULL, NULL);
    printf("  select: %d, set %d\n", n, FD_ISSET(fd, &set));
    close(fd);
}

static void gettime(void) {
    puts("gettime:");
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec cur, old;
    timerfd_gettime(fd, &cur);
    printf("  disarmed: %ld %ld %ld %ld\n", (long)cur.it_interval.tv_sec,
           cur.it_interval.tv_nsec, (long)cur.it_value.tv_sec, cur.it_value.tv_nsec);
    struct itimerspec s = spec(2500 * MS, 30000 * MS);
    timerfd_settime(fd, 0, &s, NULL);
    timerfd_gettime(fd, &cur);
    printf("  interval %ld.%09ld, value in (20 s, 30 s]: %d, nsec in range %d\n",
           (long)cur.it_interval.tv_sec, cur.it_interval.tv_nsec,
           (cur.it_value.tv_sec >= 20 && cur.it_value.tv_sec < 30) ||
               (cur.it_value.tv_sec == 30 && cur.it_value.tv_nsec == 0),
           cur.it_value.tv_nsec >= 0 && cur.it_value.tv_nsec < 1000000000L);
    s = spec(0, 0);
    timerfd_settime(fd, 0, &s, &old);
    printf("  old value: interval %ld.%09ld, value in (20 s, 30 s]: %d\n",
           (long)old.it_interval.tv_sec, old.it_interval.tv_nsec,
           old.it_value.tv_sec >= 20 && old.it_value.tv_sec <= 30);
    timerfd_gettime(fd, &cur);
    printf("  after disarming: %ld %ld %ld %ld\n", (long)cur.it_interval.tv_sec,
           cur.it_interval.tv_nsec, (long)cur.it_value.tv_sec, cur.it_value.tv_nsec);
    close(fd);
}

static void abstime(void) {
    puts("abstime:");
    clockid_t clocks[] = {CLOCK_MONOTONIC, CLOCK_REALTIME};
    const char *names[] = {"monotonic", "realtime"};
    for (int i = 0; i < 2; i++) {
        int fd = timerfd_create(clocks[i], 0);
        struct timespec now;
        clock_gettime(clocks[i], &now);
        struct itimerspec s = spec(0, 0);
        s.it_value = now;
        s.it_value.tv_nsec += 20 * MS;
        if (s.it_value.tv_nsec >= 1000000000L) {
            s.it_value.tv_sec++;
            s.it_value.tv_nsec -= 1000000000L;
        }
        printf("  %s in 20 ms: %s", names[i], err(timerfd_settime(fd, TFD_TIMER_ABSTIME, &s, NULL)));
        uint64_t count = 0;
        ssize_t n = read(fd, &count, sizeof count);
        struct timespec after;
        clock_gettime(clocks[i], &after);
        int late = after.tv_sec > s.it_value.tv_sec ||
                   (after.tv_sec == s.it_value.tv_sec && after.tv_nsec >= s.it_value.tv_nsec);
        printf(", read %s, count %llu, not early %d\n", err(n), (unsigned long long)count, late);
        /* one second in the past, every 100 ms: 10 or 11 expirations at once */
        s = spec(100 * MS, 0);
        s.it_value.tv_sec = after.tv_sec - 1;
        s.it_value.tv_nsec = after.tv_nsec;
        timerfd_settime(fd, TFD_TIMER_ABSTIME, &s, NULL);
        n = read(fd, &count, sizeof count);
        printf("  %s 1 s in the past, 100 ms interval: read %s, 10 <= count <= 12: %d\n",
               names[i], err(n), count >= 10 && count <= 12);
        close(fd);
    }
}

static int thread_fd;
static uint64_t thread_count;

static void *reader(void *arg) {
    (void)arg;
    for (int i = 0; i < 3; i++) {
        uint64_t count = 0;
        if (read(thread_fd, &count, sizeof count) == sizeof count)
            thread_count += count;
    }
    return NULL;
}

static void thread(void) {
    puts("thread:");
    thread_fd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec s = spec(10 * MS, 10 * MS);
    timerfd_settime(thread_fd, 0, &s, NULL);
    pthread_t t;
    pthread_create(&t, NULL, reader, NULL);
    pthread_join(t, NULL);
    printf("  a thread read 3 times, count >= 3: %d\n", thread_count >= 3);
    close(thread_fd);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    create();
    settime();
    loop();
    nonblock();
    via_epoll();
    via_poll();
    gettime();
    abstime();
    thread();
    return 0;
}
