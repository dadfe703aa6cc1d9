/* cpu.c — a guest that attacks the virtual CPU and the guest kernel area.
 *
 * Usage: cpu CASE [N]  (one case per run: most end the guest; N is the
 *                       vector, port or offset of "int", "out-port",
 *                       "in-port" and "stub-offset")
 *
 * The guest runs at CPL 3.  Everything that would give it more — writing
 * the page tables, GDT, IDT or TSS, changing LSTAR (where `syscall` jumps),
 * touching MSRs, I/O ports, halting the CPU, jumping into the exception
 * stubs or to a non-canonical address — must fault, and the sandbox must
 * report that fault in one line, like a kernel killing a process.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE_TABLE_POOL 0x10000UL   /* physical; not mapped for the guest */
#define GDT_ADDRESS 0x1000UL
#define IDT_ADDRESS 0x2000UL
#define TSS_ADDRESS 0x3000UL
#define SYSCALL_STUB 0x4000UL
#define EXCEPTION_STUBS 0x5000UL
#define IST_STACK 0x6000UL
#define MSR_LSTAR 0xC0000082U
#define MSR_EFER 0xC0000080U
#define EXCEPTION_PORT_PAGE_FAULT (0xC0 + 14)
#define SYSCALL_PORT 0xE0
#define KERNEL_CODE_SELECTOR 0x08

static void poke(uintptr_t address)
{
    *(volatile uint64_t *)address = 0;
}

static void wrmsr(uint32_t msr, uint64_t value)
{
    __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)value), "d"((uint32_t)(value >> 32)));
}

static uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}

static void jump(uintptr_t target)
{
    __asm__ volatile("jmp *%0" ::"r"(target));
}

/* Run CODE (machine code bytes, ending in a ret) from a fresh executable page. */
static void run_code(const unsigned char *code, size_t size)
{
    unsigned char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
        printf("mmap failed\n");
        exit(1);
    }
    memcpy(page, code, size);
    ((void (*)(void))page)();
}

/* getpid by hand with RSP pointing at garbage: on PVM `syscall` stays in
 * CPL 3 and the stub never touches the stack, the host returns to RCX. */
static long getpid_with_rsp(uint64_t rsp)
{
    long result;
    __asm__ volatile("mov %%rsp, %%r12\n"
                     "mov %2, %%rsp\n"
                     "syscall\n"
                     "mov %%r12, %%rsp\n"
                     : "=a"(result) : "a"((long)SYS_getpid), "r"(rsp)
                     : "rcx", "r11", "r12", "memory");
    return result;
}

/* A system call made by jumping into the stub, without `syscall`: on PVM
 * that is the same exit; RFLAGS comes from R11 minus what a program may
 * not set (IOPL here, which would allow `out` to any port). */
static long getpid_through_stub_jump(uint64_t r11)
{
    long result;
    __asm__ volatile("lea 1f(%%rip), %%rcx\n"
                     "mov %2, %%r11\n"
                     "jmp *%3\n"
                     "1:\n"
                     : "=a"(result) : "a"((long)SYS_getpid), "r"(r11), "r"(SYSCALL_STUB)
                     : "rcx", "r11", "memory");
    return result;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *c = argc > 1 ? argv[1] : "";
    printf("case %s\n", c);
    if (!strcmp(c, "page-tables")) poke(PAGE_TABLE_POOL);
    else if (!strcmp(c, "gdt")) poke(GDT_ADDRESS);
    else if (!strcmp(c, "idt")) poke(IDT_ADDRESS);
    else if (!strcmp(c, "tss")) poke(TSS_ADDRESS + 4);          /* RSP0 */
    else if (!strcmp(c, "syscall-stub")) poke(SYSCALL_STUB);
    else if (!strcmp(c, "ist-stack")) poke(IST_STACK + 0x100);
    else if (!strcmp(c, "read-gdt")) printf("%lx\n", (unsigned long)*(volatile uint64_t *)GDT_ADDRESS);
    else if (!strcmp(c, "wrmsr-lstar")) wrmsr(MSR_LSTAR, 0x401000);
    else if (!strcmp(c, "wrmsr-efer")) wrmsr(MSR_EFER, 0);
    else if (!strcmp(c, "rdmsr-lstar")) printf("%lx\n", (unsigned long)rdmsr(MSR_LSTAR));
    else if (!strcmp(c, "rdmsr-random")) printf("%lx\n", (unsigned long)rdmsr(0x12345678));
    else if (!strcmp(c, "wrmsr-random")) wrmsr(0x40000000, 1);   /* hypervisor range */
    else if (!strcmp(c, "out-random")) __asm__ volatile("outb %%al, $0x80" ::"a"(0));
    else if (!strcmp(c, "in-random")) { uint8_t v; __asm__ volatile("inb $0x60, %%al" : "=a"(v)); }
    else if (!strcmp(c, "out-dx-random")) __asm__ volatile("outl %%eax, %%dx" ::"a"(0), "d"(0xCF8));
    else if (!strcmp(c, "out-exception-port"))
        __asm__ volatile("outb %%al, %1" ::"a"(0), "N"(EXCEPTION_PORT_PAGE_FAULT));
    else if (!strcmp(c, "out-syscall-port"))   /* the port of the stub, but not from the stub */
        __asm__ volatile("outb %%al, %1" ::"a"(0), "N"(SYSCALL_PORT));
    else if (!strcmp(c, "hlt")) __asm__ volatile("hlt");
    else if (!strcmp(c, "cli")) __asm__ volatile("cli");
    else if (!strcmp(c, "int3")) __asm__ volatile("int3");
    else if (!strcmp(c, "int80")) __asm__ volatile("int $0x80" ::"a"(1));
    else if (!strcmp(c, "int-pagefault")) __asm__ volatile("int $14");
    else if (!strcmp(c, "ud2")) __asm__ volatile("ud2");
    else if (!strcmp(c, "mov-cr3")) __asm__ volatile("mov %0, %%cr3" ::"r"(0UL));
    else if (!strcmp(c, "lidt")) { uint8_t idtr[10] = {0}; __asm__ volatile("lidt %0" ::"m"(idtr)); }
    else if (!strcmp(c, "sysret")) __asm__ volatile("sysretq");
    else if (!strcmp(c, "iretq-ring0")) {
        /* an interrupt-return frame asking for kernel code: SS, RSP, RFLAGS, CS, RIP */
        __asm__ volatile("mov %%rsp, %%rax\n"
                         "pushq $0\n"
                         "pushq %%rax\n"
                         "pushfq\n"
                         "pushq %0\n"
                         "lea 1f(%%rip), %%rax\n"
                         "pushq %%rax\n"
                         "iretq\n"
                         "1:\n" ::"i"(KERNEL_CODE_SELECTOR) : "rax", "memory");
    }
    else if (!strcmp(c, "non-canonical")) jump(0x0000800000000000UL);
    else if (!strcmp(c, "kernel-half")) jump(0xffffffff81000000UL);
    else if (!strcmp(c, "exception-stub")) jump(EXCEPTION_STUBS + 14 * 16);
    else if (!strcmp(c, "syscall-stub-bad-return")) {
        /* enter the syscall stub by a jump, with a return address that is
         * not canonical: the host must not resume the guest there */
        __asm__ volatile("mov $39, %%eax\n"           /* getpid */
                         "mov %0, %%rcx\n"
                         "jmp *%1\n" ::"r"(0x0000800000000000UL), "r"(SYSCALL_STUB)
                         : "rax", "rcx", "r11", "memory");
    }
    else if (!strcmp(c, "stack-overflow")) {
        volatile char big[1 << 16];
        big[0] = 1;
        char *argv2[] = {argv[0], "stack-overflow", NULL};
        return main(2, argv2) + big[0];
    }
    else if (!strcmp(c, "int") && argc > 2) {           /* int $N, for any N */
        unsigned char code[] = {0xCD, (unsigned char)strtoul(argv[2], NULL, 0), 0xC3};
        run_code(code, sizeof code);
    }
    else if (!strcmp(c, "out-port") && argc > 2)        /* out %al,(%dx) to any port */
        __asm__ volatile("outb %%al, %%dx" ::"a"(0), "d"((uint16_t)strtoul(argv[2], NULL, 0)));
    else if (!strcmp(c, "in-port") && argc > 2) {
        uint8_t v;
        __asm__ volatile("inb %%dx, %%al" : "=a"(v) : "d"((uint16_t)strtoul(argv[2], NULL, 0)));
    }
    else if (!strcmp(c, "outsb-syscall-port"))          /* string I/O to the stub's port */
        __asm__ volatile("rep outsb" ::"S"(c), "c"(4UL), "d"(SYSCALL_PORT) : "memory");
    else if (!strcmp(c, "stub-offset") && argc > 2)     /* into the stub page, anywhere */
        jump(SYSCALL_STUB + strtoul(argv[2], NULL, 0));
    else if (!strcmp(c, "sysenter")) __asm__ volatile("sysenter");
    else if (!strcmp(c, "lgdt")) { uint8_t gdtr[10] = {0}; __asm__ volatile("lgdt %0" ::"m"(gdtr)); }
    else if (!strcmp(c, "ltr")) __asm__ volatile("ltr %w0" ::"r"(0x28));
    else if (!strcmp(c, "swapgs")) __asm__ volatile("swapgs");
    else if (!strcmp(c, "rdpmc")) __asm__ volatile("rdpmc" ::"c"(0) : "rax", "rdx");
    else if (!strcmp(c, "wbinvd")) __asm__ volatile("wbinvd");
    else if (!strcmp(c, "invlpg")) __asm__ volatile("invlpg (%0)" ::"r"(0x400000UL));
    else if (!strcmp(c, "mov-dr7")) __asm__ volatile("mov %0, %%dr7" ::"r"(0UL));
    else if (!strcmp(c, "mov-ss-kernel")) __asm__ volatile("mov %0, %%ss" ::"r"(0x10));
    else if (!strcmp(c, "far-call-kernel")) {
        /* a far call through the GDT to the kernel code selector */
        struct { uint64_t offset; uint16_t selector; } __attribute__((packed)) target =
            {(uint64_t)&main, KERNEL_CODE_SELECTOR};
        __asm__ volatile("rex.W lcall *%0" ::"m"(target));
    }
    else if (!strcmp(c, "far-jump-tss")) {
        struct { uint64_t offset; uint16_t selector; } __attribute__((packed)) target = {0, 0x28};
        __asm__ volatile("rex.W ljmp *%0" ::"m"(target));
    }
    else if (!strcmp(c, "iretq-iopl")) {
        /* iretq at CPL 3 to user code with IOPL 3 asked for: the CPU keeps
         * IOPL, so the `out` after it must still fault */
        __asm__ volatile("mov %%rsp, %%rax\n"
                         "pushq %%rax\n"          /* placeholder, replaced below */
                         "mov %%ss, %%rax\n"
                         "mov %%rax, (%%rsp)\n"
                         "lea 8(%%rsp), %%rax\n"
                         "pushq %%rax\n"
                         "pushfq\n"
                         "orq $0x3000, (%%rsp)\n"
                         "mov %%cs, %%rax\n"
                         "pushq %%rax\n"
                         "lea 1f(%%rip), %%rax\n"
                         "pushq %%rax\n"
                         "iretq\n"
                         "1:\n"
                         "outb %%al, $0x80\n" ::: "rax", "memory");
    }
    else if (!strcmp(c, "popf-iopl"))
        __asm__ volatile("pushfq\norq $0x3000, (%%rsp)\npopfq\noutb %%al, $0x80" ::: "memory");
    else if (!strcmp(c, "trap-flag"))                   /* single-step: #DB after one instruction */
        __asm__ volatile("pushfq\norq $0x100, (%%rsp)\npopfq\nnop\nnop" ::: "memory");
    else if (!strcmp(c, "stub-iopl-r11")) {
        /* the fake system call asks for IOPL 3 through R11; then port I/O */
        printf("getpid %ld\n", getpid_through_stub_jump(0x3202));
        __asm__ volatile("outb %%al, $0x80" ::"a"(0));
    }
    /* the cases below must not fault: the program goes on and exits 0 */
    else if (!strcmp(c, "syscall-garbage-rsp")) {
        long a = getpid_with_rsp(0), b = getpid_with_rsp(0xffff800000000000UL),
             d = getpid_with_rsp(0x0000800000000000UL);
        printf("getpid %s\n", a == getpid() && b == a && d == a ? "same" : "different");
        printf("harmless %s\n", c);
        return 0;
    }
    else if (!strcmp(c, "stub-jump-syscall")) {
        long first = getpid_through_stub_jump(0x202), second = getpid();
        printf("getpid %s\n", first == second ? "same" : "different");
        printf("harmless %s\n", c);
        return 0;
    }
    else if (!strcmp(c, "alignment-check")) {
        /* RFLAGS.AC on, then an unaligned store: #AC, SIGBUS, as natively */
        static char buffer[16];
        __asm__ volatile("pushfq\norq $0x40000, (%%rsp)\npopfq" ::: "memory");
        *(volatile uint32_t *)(buffer + 1) = 1;
    }
    else if (!strcmp(c, "cpuid-rdtsc")) {
        uint32_t a, b, cc, d, lo, hi;
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(cc), "=d"(d) : "a"(0), "c"(0));
        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
        printf("harmless %s\n", c);
        return 0;
    }
    else if (!strcmp(c, "many-exits")) {
        /* many system calls that do nothing: each is an exit to the host */
        for (int i = 0; i < 20000; i++)
            syscall(SYS_getppid);
        printf("harmless %s\n", c);
        return 0;
    }
    else { fprintf(stderr, "unknown case %s\n", c); return 2; }
    printf("survived %s\n", c);
    return 0;
}
