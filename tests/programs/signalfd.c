/* signalfd under minikvm and natively: the same lines must come out.
 *
 * Parts (each prints its name, then indented lines): create (the errors
 * of bad flags, sizes, fds and pointers; SFD_CLOEXEC and SFD_NONBLOCK),
 * read (three blocked signals, sent by raise, kill and sigqueue, read as
 * three records, lowest number first, each with its sender and value; a
 * buffer smaller than one record), nonblock (EAGAIN with none pending),
 * poll (poll and epoll see it readable only while one is pending), mask
 * (signalfd4 on the fd changes what it takes; SIGKILL in a mask is
 * dropped), alarm (a blocking read ended by SIGALRM of an interval timer),
 * thread (a thread blocks in read until the main thread sends a signal).
 * No line depends on how long anything took.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include "errnames.h"

static long raw_signalfd4(int fd, const void *mask, size_t size, int flags) {
    return syscall(SYS_signalfd4, fd, mask, size, flags);
}

static void print_record(const struct signalfd_siginfo *s) {
    printf("  signo=%u code=%d pid_is_self=%d uid_is_self=%d int=%d\n", s->ssi_signo,
           s->ssi_code, s->ssi_pid == (uint32_t)getpid(), s->ssi_uid == (uint32_t)getuid(),
           s->ssi_int);
}

static int readable(int fd) {
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void part_create(void) {
    puts("create:");
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    printf("  bad flags: %s\n", err(raw_signalfd4(-1, &set, 8, 0x1234)));
    printf("  size 4: %s\n", err(raw_signalfd4(-1, &set, 4, 0)));
    printf("  size 128: %s\n", err(raw_signalfd4(-1, &set, 128, 0)));
    printf("  bad mask pointer: %s\n", err(raw_signalfd4(-1, (void *)8, 8, 0)));
    printf("  closed fd: %s\n", err(raw_signalfd4(999, &set, 8, 0)));
    printf("  not a signalfd: %s\n", err(raw_signalfd4(1, &set, 8, 0)));
    int fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    printf("  created: %s cloexec=%d nonblock=%d\n", err(fd),
           (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0, (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
    char buffer[128];
    printf("  write: %s\n", err(write(fd, buffer, sizeof buffer)));
    close(fd);
}

static void part_read(void) {
    puts("read:");
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int fd = signalfd(-1, &set, 0);
    kill(getpid(), SIGUSR2);
    raise(SIGUSR1);
    union sigval value = {.sival_int = 42};
    sigqueue(getpid(), SIGRTMIN, value);
    char small[64];
    printf("  64-byte buffer: %s\n", err(read(fd, small, sizeof small)));
    struct signalfd_siginfo records[4];
    long n = read(fd, records, sizeof records);
    printf("  read: %s, %ld records\n", err(n), n / (long)sizeof records[0]);
    for (long i = 0; i < n / (long)sizeof records[0]; i++)
        print_record(&records[i]);
    sigset_t pending;
    sigpending(&pending);
    printf("  still pending: %d %d\n", sigismember(&pending, SIGUSR1),
           sigismember(&pending, SIGUSR2));
    close(fd);
}

static void part_nonblock(void) {
    puts("nonblock:");
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    int fd = signalfd(-1, &set, SFD_NONBLOCK);
    struct signalfd_siginfo record;
    printf("  empty: %s\n", err(read(fd, &record, sizeof record)));
    close(fd);
}

static void part_poll(void) {
    puts("poll:");
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    int fd = signalfd(-1, &set, SFD_NONBLOCK);
    int ep = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.u32 = 7};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &event);
    struct epoll_event got;
    printf("  before: poll=%d epoll=%d\n", readable(fd), epoll_wait(ep, &got, 1, 0));
    raise(SIGUSR1);
    int ready = epoll_wait(ep, &got, 1, 0);
    printf("  pending: poll=%d epoll=%d data=%u\n", readable(fd), ready,
           ready == 1 ? got.data.u32 : 0);
    struct signalfd_siginfo record;
    read(fd, &record, sizeof record);
    printf("  after read: poll=%d epoll=%d\n", readable(fd), epoll_wait(ep, &got, 1, 0));
    close(ep);
    close(fd);
}

static void part_mask(void) {
    puts("mask:");
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGKILL);
    int fd = signalfd(-1, &set, SFD_NONBLOCK);
    raise(SIGUSR2);                          /* blocked since part read */
    printf("  SIGUSR2 not in mask: readable=%d\n", readable(fd));
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    printf("  new mask: same fd=%d\n", signalfd(fd, &set, 0) == fd);
    printf("  SIGUSR2 in mask: readable=%d\n", readable(fd));
    struct signalfd_siginfo record;
    if (read(fd, &record, sizeof record) == sizeof record)
        print_record(&record);
    close(fd);
}

static void part_alarm(void) {
    puts("alarm:");
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGALRM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int fd = signalfd(-1, &set, 0);
    struct itimerval timer = {{0, 20000}, {0, 20000}};
    setitimer(ITIMER_REAL, &timer, NULL);
    struct signalfd_siginfo record;
    long n = read(fd, &record, sizeof record);
    printf("  blocking read: %s\n", err(n));
    if (n == sizeof record)
        printf("  signo=%u code=%d\n", record.ssi_signo, record.ssi_code);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    close(fd);
    sigset_t pending;
    sigpending(&pending);
    if (sigismember(&pending, SIGALRM)) {    /* one more may have come */
        int drain = signalfd(-1, &set, SFD_NONBLOCK);
        read(drain, &record, sizeof record);
        close(drain);
    }
}

static int thread_fd;
static void *reader(void *unused) {
    (void)unused;
    struct signalfd_siginfo record;
    long n = read(thread_fd, &record, sizeof record);
    printf("  thread read: %s signo=%u\n", err(n), n == sizeof record ? record.ssi_signo : 0);
    return NULL;
}

static void part_thread(void) {
    puts("thread:");
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    thread_fd = signalfd(-1, &set, 0);
    pthread_t thread;
    pthread_create(&thread, NULL, reader, NULL);
    struct timespec pause = {0, 10000000};
    nanosleep(&pause, NULL);
    kill(getpid(), SIGUSR1);
    pthread_join(thread, NULL);
    close(thread_fd);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    part_create();
    part_read();
    part_nonblock();
    part_poll();
    part_mask();
    part_alarm();
    part_thread();
    return 0;
}
