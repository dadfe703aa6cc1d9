/* bad_pointers.c — system calls whose buffers point where they must not.
 *
 * Usage: bad_pointers
 *
 * Each call hands the sandbox a pointer outside the guest's own memory:
 * past the end of a mapping, in the kernel half, in the supervisor-only
 * kernel area at the bottom of the address space (GDT, IDT, TSS), or a
 * write into read-only code.  The host must answer EFAULT (14) and never
 * read or write host memory (one case, marked, is EINVAL, as on Linux).
 * Raw syscall() is used so the C library
 * cannot check anything first.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define GDT_ADDRESS 0x1000UL
#define IDT_ADDRESS 0x2000UL
#define TSS_ADDRESS 0x3000UL
#define STACK_TOP 0x7ffffffff000UL
#define KERNEL_HALF 0xffff800000000000UL
#define NON_CANONICAL 0x0000800000000000UL

static void report(const char *name, long result)
{
    printf("%s: %d\n", name, result < 0 ? errno : 0);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    int fd = open("/dev/null", O_RDWR);
    report("write-gdt", syscall(SYS_write, fd, GDT_ADDRESS, 64));
    report("write-idt", syscall(SYS_write, fd, IDT_ADDRESS, 64));
    report("write-tss", syscall(SYS_write, fd, TSS_ADDRESS, 64));
    report("write-null", syscall(SYS_write, fd, 0UL, 64));
    report("write-kernel-half", syscall(SYS_write, fd, KERNEL_HALF, 64));
    report("write-non-canonical", syscall(SYS_write, fd, NON_CANONICAL, 64));
    report("write-past-stack", syscall(SYS_write, fd, STACK_TOP - 16, 4096));
    report("write-wrapping", syscall(SYS_write, fd, 0xfffffffffffff000UL, 0x2000UL));
    report("write-huge", syscall(SYS_write, fd, (unsigned long)&fd, 1UL << 62));
    report("read-into-gdt", syscall(SYS_read, 0, GDT_ADDRESS, 64));
    report("read-into-code", syscall(SYS_read, open("/dev/zero", O_RDONLY),
                                     (unsigned long)&main, 16));
    report("open-path-in-idt", syscall(SYS_openat, AT_FDCWD, IDT_ADDRESS, O_RDONLY));
    report("stat-into-tss", syscall(SYS_fstat, fd, TSS_ADDRESS));
    report("writev-bad-iovec", syscall(SYS_writev, fd, GDT_ADDRESS, 2));
    /* a length that is negative as ssize_t: EINVAL before the buffer is looked at */
    struct iovec negative = {&fd, 1UL << 63};
    report("writev-negative-length", syscall(SYS_writev, fd, &negative, 1));
    report("getrandom-null-huge", syscall(SYS_getrandom, 0UL, 1UL << 30, 0));
    printf("still here\n");
    return 0;
}
