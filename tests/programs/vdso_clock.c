/* vdso_clock.c — the clocks the C library reads through the vDSO, checked
 * against the kernel's own answer to a real system call.
 *
 *   vdso_clock loop N     N clock_gettime(CLOCK_MONOTONIC) calls (the libc's
 *                         way: through the vDSO when there is one)
 *   vdso_clock check N    N rounds of: libc clock, syscall(SYS_clock_gettime),
 *                         libc clock, for MONOTONIC, BOOTTIME and REALTIME:
 *                         the three must be ordered.  Then time(),
 *                         gettimeofday(), clock_getres() and getcpu() against
 *                         their system calls; last line: "realtime NS", the
 *                         libc's REALTIME, for the caller to compare with its own.
 *   vdso_clock coarse N   N calls each of CLOCK_MONOTONIC_COARSE and
 *                         CLOCK_PROCESS_CPUTIME_ID, and one unknown clock id
 *                         (EINVAL): the vDSO hands these to the kernel
 *   vdso_clock auxv       whether AT_SYSINFO_EHDR names a vDSO
 *
 * Only "ok" lines on success, so native and sandboxed runs compare; a
 * failure prints the numbers and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long ns(struct timespec t) { return (long long)t.tv_sec * 1000000000LL + t.tv_nsec; }

static long long libc_clock(clockid_t clock)
{
    struct timespec t;
    if (clock_gettime(clock, &t) != 0) { perror("clock_gettime"); exit(1); }
    return ns(t);
}

static long long kernel_clock(clockid_t clock)
{
    struct timespec t;
    if (syscall(SYS_clock_gettime, clock, &t) != 0) { perror("SYS_clock_gettime"); exit(1); }
    return ns(t);
}

static void ordered(const char *name, clockid_t clock, int rounds)
{
    for (int i = 0; i < rounds; i++) {
        long long before = libc_clock(clock);
        long long kernel = kernel_clock(clock);
        long long after = libc_clock(clock);
        if (!(before <= kernel && kernel <= after)) {
            printf("%s not ordered in round %d: libc %lld, kernel %lld, libc %lld\n",
                   name, i, before, kernel, after);
            exit(1);
        }
    }
    printf("%s ordered ok\n", name);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "check";
    int count = argc > 2 ? atoi(argv[2]) : 10;
    if (strcmp(mode, "loop") == 0) {
        long long last = 0;
        for (int i = 0; i < count; i++) {
            long long now = libc_clock(CLOCK_MONOTONIC);
            if (now < last) { printf("backwards: %lld after %lld\n", now, last); return 1; }
            last = now;
        }
        printf("loop ok\n");
        return 0;
    }
    if (strcmp(mode, "auxv") == 0) {
        printf("vdso %s\n", getauxval(AT_SYSINFO_EHDR) ? "yes" : "no");
        return 0;
    }
    if (strcmp(mode, "coarse") == 0) {
        struct timespec t;
        for (int i = 0; i < count; i++) {
            if (clock_gettime(CLOCK_MONOTONIC_COARSE, &t) || clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)) {
                perror("clock_gettime");
                return 1;
            }
        }
        if (clock_gettime(12345, &t) == 0 || errno != EINVAL) {
            printf("clock 12345 did not fail with EINVAL\n");
            return 1;
        }
        printf("coarse ok\n");
        return 0;
    }
    ordered("monotonic", CLOCK_MONOTONIC, count);
    ordered("boottime", CLOCK_BOOTTIME, count);
    ordered("realtime", CLOCK_REALTIME, count);

    time_t before = time(NULL);
    long kernel_seconds = syscall(SYS_time, NULL);
    time_t after = time(NULL);
    if (!(before <= kernel_seconds && kernel_seconds <= after)) {
        printf("time not ordered: %ld %ld %ld\n", (long)before, kernel_seconds, (long)after);
        return 1;
    }
    printf("time ok\n");

    struct timeval tv1, tv2, tv3;
    struct timezone zone = {99, 99};
    gettimeofday(&tv1, &zone);
    syscall(SYS_gettimeofday, &tv2, NULL);
    gettimeofday(&tv3, NULL);
    long long u1 = tv1.tv_sec * 1000000LL + tv1.tv_usec, u2 = tv2.tv_sec * 1000000LL + tv2.tv_usec,
              u3 = tv3.tv_sec * 1000000LL + tv3.tv_usec;
    if (!(u1 <= u2 && u2 <= u3) || tv1.tv_usec >= 1000000) {
        printf("gettimeofday not ordered: %lld %lld %lld\n", u1, u2, u3);
        return 1;
    }
    printf("gettimeofday ok\n");

    struct timespec resolution;
    if (clock_getres(CLOCK_MONOTONIC, &resolution) != 0 || resolution.tv_sec != 0
            || resolution.tv_nsec < 1 || resolution.tv_nsec > 1000000) {
        printf("clock_getres: %ld.%09ld\n", (long)resolution.tv_sec, resolution.tv_nsec);
        return 1;
    }
    printf("clock_getres ok\n");

    int cpu = sched_getcpu();
    unsigned kernel_cpu = 99, node = 99;
    syscall(SYS_getcpu, &kernel_cpu, &node, NULL);
    if (cpu < 0 || cpu >= sysconf(_SC_NPROCESSORS_CONF) || kernel_cpu >= (unsigned)sysconf(_SC_NPROCESSORS_CONF)) {
        printf("getcpu: %d, the kernel says %u\n", cpu, kernel_cpu);
        return 1;
    }
    printf("getcpu ok\n");
    printf("realtime %lld\n", libc_clock(CLOCK_REALTIME));
    return 0;
}
