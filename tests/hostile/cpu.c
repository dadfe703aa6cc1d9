/* cpu.c — a guest that attacks the virtual CPU and the guest kernel area.
 *
 * Usage: cpu CASE      (one case per run: each ends the guest)
 *
 * The guest runs at CPL 3.  Everything that would give it more — writing
 * the page tables, GDT, IDT or TSS, changing LSTAR (where `syscall` jumps),
 * touching MSRs, I/O ports, halting the CPU, jumping into the exception
 * stubs or to a non-canonical address — must fault, and the sandbox must
 * report that fault in one line, like a kernel killing a process.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

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
    else { fprintf(stderr, "unknown case %s\n", c); return 2; }
    printf("survived %s\n", c);
    return 0;
}
