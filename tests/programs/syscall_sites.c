/* Patched system-call sites (minikvm/machine/syscall_sites.py) must be
 * invisible to programs, but for the bytes of their own code.
 *
 * Parts: code (a `syscall` in this program's text, executed, then read
 * back: "0f05" natively, "e6e1" in the sandbox once patched — the one
 * documented difference), registers (RCX and R11 after a system call at a
 * site executed many times: RCX is the next instruction, R11 the flags),
 * jit (code written into a writable+executable page, run twice, rewritten
 * to another system call, run again: never patched), wx (code written,
 * made read+exec, run — patched — then made writable, rewritten, made
 * executable again and run: the new call runs).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

extern const unsigned char site[], after_site[];

__attribute__((noinline)) static long site_getpid(void) {
    long result;
    __asm__ volatile(".globl site\n"
                     "site: syscall\n"
                     ".globl after_site\n"
                     "after_site:"
                     : "=a"(result) : "a"((long)SYS_getpid) : "rcx", "r11", "memory");
    return result;
}

static void part_code(void) {
    puts("code:");
    for (int i = 0; i < 3; i++)
        site_getpid();
    printf("  site bytes: %02x%02x\n", site[0], site[1]);
    printf("  the call still works: %d\n", site_getpid() == getpid());
}

static void part_registers(void) {
    puts("registers:");
    int rcx_good = 0, r11_good = 0;
    for (int i = 0; i < 100; i++) {
        uint64_t rcx, r11, expected, flags;
        __asm__ volatile("pushfq\n"
                         "pop %[flags]\n"
                         "lea 1f(%%rip), %[expected]\n"
                         "mov %[number], %%eax\n"
                         "syscall\n"
                         "1:\n"
                         "mov %%rcx, %[rcx]\n"
                         "mov %%r11, %[r11]\n"
                         : [rcx] "=r"(rcx), [r11] "=r"(r11), [expected] "=&r"(expected),
                           [flags] "=&r"(flags)
                         : [number] "i"(SYS_getppid)
                         : "rax", "rcx", "r11", "memory");
        rcx_good += rcx == expected;
        r11_good += (r11 & ~(1ULL << 16)) == (flags & ~(1ULL << 16));
    }
    printf("  RCX is the next instruction: %d of 100\n", rcx_good);
    printf("  R11 holds the flags: %d of 100\n", r11_good);
}

static const unsigned char getpid_code[] = {0xb8, SYS_getpid, 0, 0, 0,   /* mov $n,%eax */
                                            0x0f, 0x05,                  /* syscall */
                                            0xc3};                       /* ret */

static void part_jit(void) {
    puts("jit:");
    unsigned char *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memcpy(code, getpid_code, sizeof getpid_code);
    long (*function)(void) = (long (*)(void))code;
    printf("  getpid twice: %d %d\n", function() == getpid(), function() == getpid());
    printf("  bytes kept: %02x%02x\n", code[5], code[6]);
    code[1] = SYS_getppid;
    printf("  rewritten to getppid: %d\n", function() == getppid());
    munmap(code, 4096);
}

static void part_wx(void) {
    puts("wx:");
    unsigned char *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memcpy(code, getpid_code, sizeof getpid_code);
    mprotect(code, 4096, PROT_READ | PROT_EXEC);
    long (*function)(void) = (long (*)(void))code;
    printf("  getpid twice: %d %d\n", function() == getpid(), function() == getpid());
    mprotect(code, 4096, PROT_READ | PROT_WRITE);
    memcpy(code, getpid_code, sizeof getpid_code);     /* a JIT writes it afresh */
    code[1] = SYS_getppid;
    mprotect(code, 4096, PROT_READ | PROT_EXEC);
    printf("  rewritten to getppid: %d %d\n", function() == getppid(), function() == getppid());
    munmap(code, 4096);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    part_code();
    part_registers();
    part_jit();
    part_wx();
    return 0;
}
