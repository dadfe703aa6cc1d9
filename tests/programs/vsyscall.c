/* vsyscall.c — the legacy vsyscall page at 0xffffffffff600000, called
 * directly through function pointers as pre-vDSO C libraries did.
 *
 *   vsyscall calls       gettimeofday (+0x0), time (+0x400) and getcpu (+0x800),
 *                        each checked against its real system call
 *   vsyscall misaligned  a call to +0x4, inside the page but no entry: SIGSEGV
 *   vsyscall badpointer  gettimeofday with a pointer to unmapped memory: SIGSEGV
 *   vsyscall badstack    a jump to the time entry with an unusable stack: SIGSEGV
 *   vsyscall read        a load from the page: SIGSEGV (it is not readable)
 *
 * Only "ok" lines on success; a failure prints the numbers and exits 1.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define VSYSCALL 0xffffffffff600000UL

typedef long (*gettimeofday_fn)(struct timeval *, struct timezone *);
typedef long (*time_fn)(long *);
typedef long (*getcpu_fn)(unsigned *, unsigned *, void *);

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "calls";
    gettimeofday_fn vgettimeofday = (gettimeofday_fn)(VSYSCALL + 0x000);
    time_fn vtime = (time_fn)(VSYSCALL + 0x400);
    getcpu_fn vgetcpu = (getcpu_fn)(VSYSCALL + 0x800);

    if (strcmp(mode, "calls") == 0) {
        struct timeval before, kernel, after;
        struct timezone zone = {99, 99};
        long r1 = vgettimeofday(&before, &zone);
        syscall(SYS_gettimeofday, &kernel, NULL);
        long r2 = vgettimeofday(&after, NULL);
        long long b = before.tv_sec * 1000000LL + before.tv_usec,
                  k = kernel.tv_sec * 1000000LL + kernel.tv_usec,
                  a = after.tv_sec * 1000000LL + after.tv_usec;
        if (r1 || r2 || !(b <= k && k <= a)) {
            printf("gettimeofday: %ld %ld, %lld %lld %lld\n", r1, r2, b, k, a);
            return 1;
        }
        printf("gettimeofday ok\n");

        long stored = -1;
        long t1 = vtime(&stored);
        long tk = syscall(SYS_time, NULL);
        long t2 = vtime(NULL);
        if (t1 != stored || !(t1 <= tk && tk <= t2)) {
            printf("time: %ld (stored %ld) %ld %ld\n", t1, stored, tk, t2);
            return 1;
        }
        printf("time ok\n");

        unsigned cpu = 99, node = 99;
        long r3 = vgetcpu(&cpu, &node, NULL);
        long r4 = vgetcpu(NULL, NULL, NULL);
        if (r3 || r4 || cpu >= (unsigned)sysconf(_SC_NPROCESSORS_CONF) || node > 64) {
            printf("getcpu: %ld %ld cpu %u node %u\n", r3, r4, cpu, node);
            return 1;
        }
        printf("getcpu ok\n");
        return 0;
    }
    if (strcmp(mode, "misaligned") == 0) {
        ((time_fn)(VSYSCALL + 0x4))(NULL);
    } else if (strcmp(mode, "badpointer") == 0) {
        vgettimeofday((struct timeval *)0x10, NULL);
    } else if (strcmp(mode, "badstack") == 0) {
        __asm__ volatile ("mov $0x10, %%rsp\n\tjmp *%0" :: "r"(VSYSCALL + 0x400) : "memory");
    } else if (strcmp(mode, "read") == 0) {
        printf("%lx\n", *(volatile unsigned long *)VSYSCALL);
    }
    printf("%s: survived\n", mode);
    return 1;
}
