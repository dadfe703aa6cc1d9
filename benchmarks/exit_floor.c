/* exit_floor.c — the physical floor under minikvm's system call: the same
 * guest, the same exits, the same host-side return, with no Python at all.
 *
 * It sets the vCPU up the way minikvm/machine/machine.py does (addresses from
 * minikvm/cpu/layout.py, GDT slots from minikvm/cpu/gdt.py, the stub from
 * minikvm/cpu/guestcode.py), then lets a CPL 3 program loop on `syscall`:
 *
 *     user code (CPL 3, 0x400000)        syscall stub (LSTAR = 0x4000)
 *     loop: syscall  ---------------->   out %al,$0xe0   -> KVM_RUN returns
 *           jmp loop  <---------------   sysretq         (or the host returns)
 *
 * After each exit the host does what Machine._run_loop does and nothing
 * else: registers come through kvm_run (KVM_CAP_SYNC_REGS); when CS.DPL is
 * 3 at the exit (PVM: `syscall` stayed in CPL 3 and `sysretq` is not
 * emulated) it sets RIP = RCX, RFLAGS = R11 (masked) and marks the
 * registers dirty; otherwise the stub's `sysretq` runs in the guest.
 *
 * A second mode, "out", runs a bare CPL 0 loop `out %al,$0xe0; jmp` — the
 * cheapest exit there is on this host.
 *
 * A third, "patched", is the one-exit path of minikvm/machine/syscall_sites.py:
 * a CPL 3 loop on `out %al,$0xe1; jmp` (a patched `syscall` site, allowed by
 * the TSS I/O bitmap), the host doing what a `syscall` would have (RCX = the
 * next instruction, R11 = RFLAGS) before returning the guest to RCX.
 *
 * Usage:  exit_floor syscall|out|patched ITERATIONS REPETITIONS
 * Prints one line per repetition: microseconds per exit.
 * Exit status 0, or 1 with a message naming what failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* --- minikvm/cpu/layout.py ---------------------------------------------------- */
#define PAGE_SIZE 0x1000ULL
#define GDT_ADDRESS 0x1000ULL
#define IDT_ADDRESS 0x2000ULL
#define TSS_ADDRESS 0x3000ULL
#define SYSCALL_STUB_ADDRESS 0x4000ULL
#define EXCEPTION_STUBS_ADDRESS 0x5000ULL
#define IST_STACK_BOTTOM 0x6000ULL
#define IST_STACK_TOP 0x8000ULL
#define PAGE_TABLE_POOL_START 0x10000ULL
#define USER_POOL_START 0x800000ULL
#define SYSCALL_PORT 0xE0
#define PATCHED_SYSCALL_PORT 0xE1
#define EXCEPTION_PORT_BASE 0xC0
#define NUM_EXCEPTION_VECTORS 32
#define MEMORY_SIZE (16ULL << 20)

/* The benchmark's own program: one code page and one stack page, mapped where
 * `cc -static` puts a program, backed by the first pages of the user pool. */
#define USER_CODE_VIRT 0x400000ULL
#define USER_STACK_VIRT 0x401000ULL
#define USER_CODE_PHYS USER_POOL_START
#define USER_STACK_PHYS (USER_POOL_START + PAGE_SIZE)

/* --- minikvm/x86.py ------------------------------------------------------- */
#define CR0_PE (1ULL << 0)
#define CR0_MP (1ULL << 1)
#define CR0_ET (1ULL << 4)
#define CR0_NE (1ULL << 5)
#define CR0_WP (1ULL << 16)
#define CR0_PG (1ULL << 31)
#define CR4_PAE (1ULL << 5)
#define CR4_OSFXSR (1ULL << 9)
#define CR4_OSXMMEXCPT (1ULL << 10)
#define EFER_SCE (1ULL << 0)
#define EFER_LME (1ULL << 8)
#define EFER_LMA (1ULL << 10)
#define EFER_NXE (1ULL << 11)
#define MSR_STAR 0xC0000081U
#define MSR_LSTAR 0xC0000082U
#define MSR_CSTAR 0xC0000083U
#define MSR_SYSCALL_MASK 0xC0000084U
#define RFLAGS_FIXED (1ULL << 1)
#define RFLAGS_TF (1ULL << 8)
#define RFLAGS_IF (1ULL << 9)
#define RFLAGS_DF (1ULL << 10)
#define RFLAGS_NT (1ULL << 14)
#define RFLAGS_AC (1ULL << 18)
/* minikvm/machine/machine.py USER_RFLAGS_MASK: CF PF AF ZF SF TF DF OF AC ID. */
#define USER_RFLAGS_MASK 0x240DD5ULL
#define SYSCALL_MASK (RFLAGS_TF | RFLAGS_DF | RFLAGS_IF | RFLAGS_AC | RFLAGS_NT)
#define PTE_PRESENT (1ULL << 0)
#define PTE_WRITE (1ULL << 1)
#define PTE_USER (1ULL << 2)
#define PTE_NX (1ULL << 63)
#define TABLE_FLAGS (PTE_PRESENT | PTE_WRITE | PTE_USER)

/* --- minikvm/cpu/segments.py and gdt.py: selectors = GDT slot * 8 | RPL -------- */
#define KERNEL_CODE_SELECTOR 0x08
#define KERNEL_DATA_SELECTOR 0x10
#define USER_DATA_SELECTOR 0x1B
#define USER_CODE_SELECTOR 0x23
#define TSS_SELECTOR 0x28
#define GDT_ENTRIES 7
#define TYPE_DATA_RW_ACCESSED 0x3
#define TYPE_CODE_XR_ACCESSED 0xB
#define TYPE_TSS_AVAILABLE 0x9
#define TYPE_TSS_BUSY 0xB

/* --- minikvm/cpu/tss.py --------------------------------------------------------- */
#define TSS_HEADER_SIZE 0x68
#define TSS_RSP0_OFFSET 0x04
#define TSS_IST1_OFFSET 0x24
#define TSS_IOMAP_BASE_OFFSET 0x66
#define IO_BITMAP_SIZE (0x100 / 8)
#define TSS_SIZE (TSS_HEADER_SIZE + IO_BITMAP_SIZE + 1)

/* --- minikvm/cpu/idt.py --------------------------------------------------------- */
#define GATE_SIZE 16
#define GATE_TYPE_INTERRUPT 0xE
#define IST_INDEX 1
#define EXCEPTION_STUB_SIZE 8

#define OUT_IMM8_AL 0xE6

static uint8_t *memory;

static void die(const char *what)
{
    fprintf(stderr, "exit_floor: %s failed: %s\n", what, strerror(errno));
    exit(1);
}

static int kvm_ioctl(int fd, unsigned long request, void *arg, const char *name)
{
    int result = ioctl(fd, request, arg);
    if (result < 0)
        die(name);
    return result;
}

static void put64(uint64_t address, uint64_t value)
{
    memcpy(memory + address, &value, sizeof value);
}

/* An 8-byte code/data descriptor (Intel SDM Vol. 3A Figure 3-8), flat 4 GiB. */
static uint64_t descriptor(unsigned type, unsigned dpl, unsigned l, unsigned db)
{
    uint64_t limit = 0xFFFFF;
    uint64_t high = (uint64_t)type << 8 | 1ULL << 12 /* S */ | (uint64_t)dpl << 13
                    | 1ULL << 15 /* P */ | ((limit >> 16) & 0xF) << 16 | (uint64_t)l << 21
                    | (uint64_t)db << 22 | 1ULL << 23 /* G */;
    return (limit & 0xFFFF) | high << 32;
}

static struct kvm_segment kvm_segment_of(uint16_t selector, unsigned type, unsigned dpl,
                                         unsigned l, unsigned db)
{
    struct kvm_segment s = {.base = 0, .limit = 0xFFFFFFFF, .selector = selector,
                            .type = type, .present = 1, .dpl = dpl, .db = db, .s = 1,
                            .l = l, .g = 1};
    return s;
}

static void write_gdt(void)
{
    put64(GDT_ADDRESS + 1 * 8, descriptor(TYPE_CODE_XR_ACCESSED, 0, 1, 0));
    put64(GDT_ADDRESS + 2 * 8, descriptor(TYPE_DATA_RW_ACCESSED, 0, 0, 1));
    put64(GDT_ADDRESS + 3 * 8, descriptor(TYPE_DATA_RW_ACCESSED, 3, 0, 1));
    put64(GDT_ADDRESS + 4 * 8, descriptor(TYPE_CODE_XR_ACCESSED, 3, 1, 0));
    /* The 16-byte TSS descriptor: limit, base 23:0, type 9, P; base 63:32 = 0. */
    uint64_t limit = TSS_SIZE - 1, base = TSS_ADDRESS;
    uint64_t low = (limit & 0xFFFF) | (base & 0xFFFFFF) << 16
                   | (uint64_t)TYPE_TSS_AVAILABLE << 40 | 1ULL << 47;
    put64(GDT_ADDRESS + 5 * 8, low);
    put64(GDT_ADDRESS + 6 * 8, 0);
}

static void write_tss(void)
{
    uint8_t *tss = memory + TSS_ADDRESS;
    put64(TSS_ADDRESS + TSS_RSP0_OFFSET, IST_STACK_TOP);
    put64(TSS_ADDRESS + TSS_IST1_OFFSET, IST_STACK_TOP);
    uint16_t iomap = TSS_HEADER_SIZE;
    memcpy(tss + TSS_IOMAP_BASE_OFFSET, &iomap, sizeof iomap);
    memset(tss + TSS_HEADER_SIZE, 0xFF, IO_BITMAP_SIZE + 1);   /* 1 = denied */
    tss[TSS_HEADER_SIZE + SYSCALL_PORT / 8] &= ~(1 << (SYSCALL_PORT % 8));
    tss[TSS_HEADER_SIZE + PATCHED_SYSCALL_PORT / 8] &= ~(1 << (PATCHED_SYSCALL_PORT % 8));
}

/* IDT gate v -> exception stub v, which does `out 0xC0+v`: a fault in the
 * benchmark is reported, not looped on. */
static void write_idt_and_stubs(void)
{
    for (unsigned v = 0; v < NUM_EXCEPTION_VECTORS; v++) {
        uint64_t offset = EXCEPTION_STUBS_ADDRESS + v * EXCEPTION_STUB_SIZE;
        uint64_t low = (offset & 0xFFFF) | (uint64_t)KERNEL_CODE_SELECTOR << 16
                       | (uint64_t)IST_INDEX << 32 | (uint64_t)(0x80 | GATE_TYPE_INTERRUPT) << 40
                       | ((offset >> 16) & 0xFFFF) << 48;
        put64(IDT_ADDRESS + v * GATE_SIZE, low);
        put64(IDT_ADDRESS + v * GATE_SIZE + 8, offset >> 32);
        uint8_t stub[EXCEPTION_STUB_SIZE] = {0x90, 0x90, OUT_IMM8_AL,
                                             (uint8_t)(EXCEPTION_PORT_BASE + v),
                                             0xF4 /* hlt */, 0xEB, 0xFD, 0x90};
        memcpy(memory + offset, stub, sizeof stub);
    }
    /* minikvm/cpu/guestcode.py syscall_entry(): out %al,$0xe0; sysretq */
    uint8_t entry[] = {OUT_IMM8_AL, SYSCALL_PORT, 0x48, 0x0F, 0x07};
    memcpy(memory + SYSCALL_STUB_ADDRESS, entry, sizeof entry);
}

/* 4-level tables from the page-table pool: PML4, PDPT, PD, and one PT for
 * the kernel area (0..2 MiB) and one for the program (2..4 MiB region). */
static void write_page_tables(void)
{
    uint64_t pml4 = PAGE_TABLE_POOL_START, pdpt = pml4 + PAGE_SIZE, pd = pdpt + PAGE_SIZE;
    uint64_t pt_kernel = pd + PAGE_SIZE, pt_user = pt_kernel + PAGE_SIZE;
    uint64_t kdata = PTE_PRESENT | PTE_WRITE | PTE_NX;
    put64(pml4, pdpt | TABLE_FLAGS);
    put64(pdpt, pd | TABLE_FLAGS);
    put64(pd + 0 * 8, pt_kernel | TABLE_FLAGS);
    put64(pd + 2 * 8, pt_user | TABLE_FLAGS);   /* 0x400000 is PD slot 2 */
    put64(pt_kernel + (GDT_ADDRESS >> 12) * 8, GDT_ADDRESS | kdata);
    put64(pt_kernel + (IDT_ADDRESS >> 12) * 8, IDT_ADDRESS | kdata);
    put64(pt_kernel + (TSS_ADDRESS >> 12) * 8, TSS_ADDRESS | kdata);
    put64(pt_kernel + (SYSCALL_STUB_ADDRESS >> 12) * 8,
          SYSCALL_STUB_ADDRESS | PTE_PRESENT | PTE_USER);   /* CPL 3 runs it on PVM */
    put64(pt_kernel + (EXCEPTION_STUBS_ADDRESS >> 12) * 8, EXCEPTION_STUBS_ADDRESS | PTE_PRESENT);
    for (uint64_t page = IST_STACK_BOTTOM; page < IST_STACK_TOP; page += PAGE_SIZE)
        put64(pt_kernel + (page >> 12) * 8, page | kdata);
    put64(pt_user + ((USER_CODE_VIRT >> 12) & 511) * 8, USER_CODE_PHYS | PTE_PRESENT | PTE_USER);
    put64(pt_user + ((USER_STACK_VIRT >> 12) & 511) * 8,
          USER_STACK_PHYS | PTE_PRESENT | PTE_WRITE | PTE_USER | PTE_NX);
}

static void set_msrs(int vcpu)
{
    struct {
        struct kvm_msrs header;
        struct kvm_msr_entry entries[4];
    } msrs = {.header.nmsrs = 4};
    uint32_t index[4] = {MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SYSCALL_MASK};
    uint64_t value[4] = {(uint64_t)KERNEL_DATA_SELECTOR << 48 | (uint64_t)KERNEL_CODE_SELECTOR << 32,
                         SYSCALL_STUB_ADDRESS, SYSCALL_STUB_ADDRESS, SYSCALL_MASK};
    for (int i = 0; i < 4; i++) {
        msrs.entries[i].index = index[i];
        msrs.entries[i].data = value[i];
    }
    if (ioctl(vcpu, KVM_SET_MSRS, &msrs) != 4)
        die("KVM_SET_MSRS");
}

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[1], "syscall") && strcmp(argv[1], "out")
                      && strcmp(argv[1], "patched"))) {
        fprintf(stderr, "usage: exit_floor syscall|out|patched ITERATIONS REPETITIONS\n");
        return 2;
    }
    int patched = !strcmp(argv[1], "patched");
    int user_mode = patched || !strcmp(argv[1], "syscall");
    long iterations = atol(argv[2]), repetitions = atol(argv[3]);

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die("open /dev/kvm");
    int vm = kvm_ioctl(kvm, KVM_CREATE_VM, 0, "KVM_CREATE_VM");
    memory = mmap(NULL, MEMORY_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED)
        die("mmap guest memory");
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = MEMORY_SIZE,
        .userspace_addr = (uint64_t)memory};
    kvm_ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION");

    write_gdt();
    write_tss();
    write_idt_and_stubs();
    write_page_tables();
    /* The program: CPL 3 `syscall; jmp loop`, or CPL 0 `out; jmp loop`. */
    uint8_t syscall_loop[] = {0x0F, 0x05, 0xEB, 0xFC};
    uint8_t out_loop[] = {OUT_IMM8_AL, SYSCALL_PORT, 0xEB, 0xFC};
    uint8_t patched_loop[] = {OUT_IMM8_AL, PATCHED_SYSCALL_PORT, 0xEB, 0xFC};
    memcpy(memory + USER_CODE_PHYS,
           patched ? patched_loop : user_mode ? syscall_loop : out_loop, sizeof syscall_loop);

    int vcpu = kvm_ioctl(vm, KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU");
    int run_size = kvm_ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE");
    struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        die("mmap kvm_run");

    struct {
        struct kvm_cpuid2 header;
        struct kvm_cpuid_entry2 entries[256];
    } cpuid = {.header.nent = 256};
    kvm_ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cpuid, "KVM_GET_SUPPORTED_CPUID");
    kvm_ioctl(vcpu, KVM_SET_CPUID2, &cpuid, "KVM_SET_CPUID2");

    struct kvm_sregs sregs;
    kvm_ioctl(vcpu, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.cr3 = PAGE_TABLE_POOL_START;
    sregs.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
    sregs.gdt.base = GDT_ADDRESS;
    sregs.gdt.limit = GDT_ENTRIES * 8 - 1;
    sregs.idt.base = IDT_ADDRESS;
    sregs.idt.limit = 256 * GATE_SIZE - 1;
    if (user_mode) {
        sregs.cs = kvm_segment_of(USER_CODE_SELECTOR, TYPE_CODE_XR_ACCESSED, 3, 1, 0);
        sregs.ds = kvm_segment_of(USER_DATA_SELECTOR, TYPE_DATA_RW_ACCESSED, 3, 0, 1);
    } else {
        sregs.cs = kvm_segment_of(KERNEL_CODE_SELECTOR, TYPE_CODE_XR_ACCESSED, 0, 1, 0);
        sregs.ds = kvm_segment_of(KERNEL_DATA_SELECTOR, TYPE_DATA_RW_ACCESSED, 0, 0, 1);
    }
    sregs.es = sregs.ss = sregs.fs = sregs.gs = sregs.ds;
    struct kvm_segment tr = {.base = TSS_ADDRESS, .limit = TSS_SIZE - 1,
                             .selector = TSS_SELECTOR, .type = TYPE_TSS_BUSY, .present = 1};
    sregs.tr = tr;
    kvm_ioctl(vcpu, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
    set_msrs(vcpu);

    struct kvm_regs regs = {.rip = USER_CODE_VIRT, .rsp = USER_STACK_VIRT + PAGE_SIZE,
                            .rflags = RFLAGS_FIXED};
    kvm_ioctl(vcpu, KVM_SET_REGS, &regs, "KVM_SET_REGS");
    if (!(ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS) & KVM_SYNC_X86_REGS)) {
        fprintf(stderr, "exit_floor: this KVM has no KVM_CAP_SYNC_REGS\n");
        return 1;
    }
    run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
    struct kvm_regs *synced = &run->s.regs.regs;

    long total = iterations * (repetitions + 1);   /* one warm-up repetition */
    double start = 0;
    for (long i = 0; i < total; i++) {
        if (i % iterations == 0) {
            double now = now_us();
            if (i > iterations)
                printf("%.3f\n", (now - start) / iterations);
            start = now;
        }
        if (ioctl(vcpu, KVM_RUN, 0) < 0)
            die("KVM_RUN");
        unsigned expected_port = patched ? PATCHED_SYSCALL_PORT : SYSCALL_PORT;
        if (run->exit_reason != KVM_EXIT_IO || run->io.port != expected_port) {
            fprintf(stderr, "exit_floor: unexpected exit %u (port %#x) at rip %#llx\n",
                    run->exit_reason, run->io.port, (unsigned long long)synced->rip);
            return 1;
        }
        if (patched) {       /* what the replaced `syscall` would have done */
            synced->rcx = synced->rip;
            synced->r11 = synced->rflags;
        }
        if (user_mode && run->s.regs.sregs.cs.dpl == 3) {
            synced->rip = synced->rcx;
            synced->rflags = (synced->r11 & USER_RFLAGS_MASK) | RFLAGS_FIXED;
            run->kvm_dirty_regs = KVM_SYNC_X86_REGS;
        }
    }
    printf("%.3f\n", (now_us() - start) / iterations);
    return 0;
}
