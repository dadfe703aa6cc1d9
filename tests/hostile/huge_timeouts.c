/* huge_timeouts.c — time values at the edges, in every call that takes one.
 *
 * Each line is one call and its answer (result and errno name); the test
 * runs this natively and in minikvm and compares the lines.  Waits are on
 * a pipe that is already readable, so none of them waits: what is checked
 * is how each call reads the value (INT64_MAX seconds overflowed a
 * struct.pack in ppoll, select, pselect6 and getitimer: "internal error").
 * The socket needs an --allow-connect grant to exist in the sandbox.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#define FUTEX_WAIT 0   /* <linux/futex.h>: not among musl's headers */
static void show(const char *what, long r)
{
    printf("%s: %ld %s\n", what, r, r < 0 ? strerror(errno) : "");
}
int main(void) {
    int p[2]; pipe(p); write(p[1], "x", 1);    /* readable: waits return at once */
    struct pollfd fd = {p[0], POLLIN, 0};
    struct timespec big = {INT64_MAX, 999999999}, neg = {-1, 0}, badns = {0, 1000000000};
    show("ppoll big", syscall(SYS_ppoll, &fd, 1, &big, NULL, 8));
    show("ppoll neg", syscall(SYS_ppoll, &fd, 1, &neg, NULL, 8));
    show("ppoll ns", syscall(SYS_ppoll, &fd, 1, &badns, NULL, 8));
    struct timeval tbig = {INT64_MAX, 999999}; fd_set r; FD_ZERO(&r); FD_SET(p[0], &r);
    show("select big", syscall(SYS_select, p[0] + 1, &r, NULL, NULL, &tbig));
    struct timeval tneg = {-5, 0}; FD_ZERO(&r); FD_SET(p[0], &r);
    show("select neg", syscall(SYS_select, p[0] + 1, &r, NULL, NULL, &tneg));
    struct timeval tus = {0, 2000000}; FD_ZERO(&r); FD_SET(p[0], &r);
    show("select us", syscall(SYS_select, p[0] + 1, &r, NULL, NULL, &tus));
    struct timespec big2 = big; FD_ZERO(&r); FD_SET(p[0], &r);
    show("pselect6 big", syscall(SYS_pselect6, p[0] + 1, &r, NULL, NULL, &big2, NULL));
    struct itimerval it = {{INT64_MAX, 0}, {INT64_MAX, 999999}}, old;
    show("setitimer big", syscall(SYS_setitimer, ITIMER_REAL, &it, &old));
    show("getitimer", syscall(SYS_getitimer, ITIMER_REAL, &old));
    printf("getitimer interval above 292 years: %d\n", old.it_interval.tv_sec > 9000000000LL);
    struct itimerval zero = {{0, 0}, {0, 0}}; syscall(SYS_setitimer, ITIMER_REAL, &zero, NULL);
    struct itimerval neg_it = {{0, 0}, {-1, 0}};
    show("setitimer neg", syscall(SYS_setitimer, ITIMER_REAL, &neg_it, NULL));
    int s = socket(AF_INET, SOCK_STREAM, 0);
    show("socket", s);
    struct timeval sobig = {INT64_MAX, 999999};
    show("SO_RCVTIMEO big", setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &sobig, sizeof sobig));
    socklen_t l = sizeof sobig; struct timeval got;
    show("getsockopt", getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &got, &l));
    printf("SO_RCVTIMEO after INT64_MAX: {%lld, %lld}\n", (long long)got.tv_sec,
           (long long)got.tv_usec);
    struct timeval soneg = {-3, 0};
    show("SO_RCVTIMEO negative", setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &soneg, sizeof soneg));
    l = sizeof got;
    getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &got, &l);
    printf("SO_RCVTIMEO after -3: {%lld, %lld}\n", (long long)got.tv_sec, (long long)got.tv_usec);
    show("SO_SNDTIMEO big", setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &sobig, sizeof sobig));
    show("alarm big", syscall(SYS_alarm, 0xFFFFFFFFu)); syscall(SYS_alarm, 0);
    int e = epoll_create1(0);
    show("epoll_wait", syscall(SYS_epoll_wait, e, &(struct epoll_event){0}, 1, 0));
    int word = 0; struct timespec fbig = big;
    show("futex big", syscall(SYS_futex, &word, FUTEX_WAIT, 1, &fbig, NULL, 0));
    show("nanosleep neg", syscall(SYS_nanosleep, &neg, NULL));
    show("clock_nanosleep abs big", syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, 1, &(struct timespec){INT64_MIN, 0}, NULL));
    return 0;
}
