/* signal_handlers.c — signal handlers run, as on Linux.
 *
 * Usage: signal_handlers MODE; every mode prints what it saw and exits 0
 * (the hostile ones die with SIGSEGV).  The output is compared with the
 * same program run natively, so it prints no addresses or pids.
 *   raise       a handler for SIGUSR1, raise() it
 *   siginfo     SA_SIGINFO: si_signo, si_code, si_pid, si_uid for raise,
 *               kill and sigqueue
 *   mask        sa_mask and the signal itself are blocked in the handler,
 *               a signal raised there waits, the mask comes back after
 *   resethand   SA_RESETHAND: the action is the default after one delivery
 *   nodefer     SA_NODEFER: the handler interrupts itself
 *   pending     blocked, raised, pending; runs when unblocked
 *   alarm       alarm(1) and pause(): the handler runs, pause gives EINTR
 *   sigsuspend  SIGALRM blocked, a 50 ms timer, sigsuspend: handler, EINTR,
 *               SIGALRM blocked again
 *   nanosleep   a 50 ms timer interrupts a 5 s nanosleep: EINTR, time left
 *   altstack    SA_ONSTACK runs on the sigaltstack (SS_ONSTACK inside)
 *   registers   caller-saved registers, an XMM register and the rounding
 *               mode survive a handler that changes them all
 *   nested      a SIGUSR1 handler raises SIGUSR2, whose handler runs inside
 *   sigpipe     a SIGPIPE handler runs; write gives EPIPE
 *   segv        siglongjmp out of SIGSEGV handlers: SEGV_MAPERR, SEGV_ACCERR,
 *               si_addr; a handler that fixes the page lets the write retry
 *   fpe         integer division by zero: SIGFPE, FPE_INTDIV
 *   ill         ud2: SIGILL; the handler skips it by changing REG_RIP
 *   trap        int3: SIGTRAP, and the program continues after it
 *   privilege   a handler asks rt_sigreturn for IOPL 3: the program still
 *               runs with IOPL 0, and cli and in fault
 *   fpu-edit    a handler changes XMM3 and MXCSR in the frame: they come back
 *   garbage-fpu a handler fills the frame's FPU state with 0xff -> SIGSEGV
 *   wild-fpu    a handler points the frame's FPU state at 16     -> SIGSEGV
 *   kernel-cs   a handler asks rt_sigreturn for a kernel CS    -> SIGSEGV
 *   overflow-altstack  endless recursion; the SIGSEGV handler runs on the
 *               sigaltstack and siglongjmps out
 *   overflow    the same without an alternate stack: the handler cannot
 *               start on the overflowing stack                  -> SIGSEGV
 *   bad-frame   rt_sigreturn on a frame of garbage            -> SIGSEGV
 *   wild-frame  rt_sigreturn with RSP outside memory          -> SIGSEGV
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <ucontext.h>
#include <unistd.h>

static volatile sig_atomic_t count;
static volatile int seen[8];
static sigjmp_buf escape;

static void on(int sig, void (*handler)(int), int flags)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    action.sa_flags = flags;
    sigemptyset(&action.sa_mask);
    sigaction(sig, &action, NULL);
}

static void on_info(int sig, void (*handler)(int, siginfo_t *, void *), int flags)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = handler;
    action.sa_flags = flags | SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    sigaction(sig, &action, NULL);
}

static int blocked(int sig)
{
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    return sigismember(&now, sig);
}

static void counting(int sig)
{
    (void)sig;
    count++;
}

/* MXCSR's rounding control (bits 13-14): 0 nearest, 2 up, 3 toward zero */
static unsigned rounding(void)
{
    unsigned mxcsr;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    return (mxcsr >> 13) & 3;
}

static void set_rounding(unsigned mode)
{
    unsigned mxcsr;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    mxcsr = (mxcsr & ~(3u << 13)) | mode << 13;
    __asm__ volatile("ldmxcsr %0" :: "m"(mxcsr));
}

static void timer_ms(long ms)
{
    struct itimerval timer = {{0, 0}, {ms / 1000, (ms % 1000) * 1000}};
    setitimer(ITIMER_REAL, &timer, NULL);
}

/* --- siginfo --------------------------------------------------------------- */
static siginfo_t last;

static void recording(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)context;
    last = *info;
}

static void print_info(const char *what)
{
    printf("%s: signo %d, code %d, pid is mine %d, uid is mine %d\n", what, last.si_signo,
           last.si_code, last.si_pid == getpid(), last.si_uid == getuid());
}

/* --- mask -------------------------------------------------------------------- */
static void masked_usr1(int sig)
{
    (void)sig;
    printf("in usr1: usr1 blocked %d, usr2 blocked %d, term blocked %d\n",
           blocked(SIGUSR1), blocked(SIGUSR2), blocked(SIGTERM));
    raise(SIGUSR2);
    sigset_t pending;
    sigpending(&pending);
    printf("in usr1: usr2 pending %d\n", sigismember(&pending, SIGUSR2));
}

static void plain_usr2(int sig)
{
    (void)sig;
    printf("in usr2\n");
}

/* --- nodefer ------------------------------------------------------------------ */
static void reentering(int sig)
{
    int depth = ++count;
    printf("enter %d\n", depth);
    if (depth < 3)
        raise(sig);
    printf("leave %d\n", depth);
}

/* --- altstack ----------------------------------------------------------------- */
static char alternate[1 << 16];

static void on_alternate(int sig)
{
    (void)sig;
    char here;
    stack_t now;
    sigaltstack(NULL, &now);
    printf("handler on the alternate stack %d, SS_ONSTACK %d\n",
           &here > alternate && &here < alternate + sizeof alternate,
           (now.ss_flags & SS_ONSTACK) != 0);
}

/* --- registers ------------------------------------------------------------------ */
static void clobbering(int sig)
{
    (void)sig;
    volatile double x = 1.0;
    for (int i = 0; i < 10; i++)
        x = x * 3.0 + 0.5;
    seen[0] = rounding() == 0;
    set_rounding(2);
    __asm__ volatile("xorpd %%xmm7, %%xmm7\n\t"
                     "mov $-1, %%r8\n\tmov $-1, %%r9\n\tmov $-1, %%r10\n\t"
                     "mov $-1, %%rsi\n\tmov $-1, %%rdi\n\tmov $-1, %%rdx"
                     ::: "xmm7", "r8", "r9", "r10", "rsi", "rdi", "rdx");
    count++;
}

static void registers(void)
{
    on(SIGUSR1, clobbering, 0);
    set_rounding(3);
    double in = 3.25, out;
    uint64_t r8 = 0x1111, r9 = 0x2222, r10 = 0x3333;
    long pid = getpid(), result;
    /* kill(getpid(), SIGUSR1) with live values in registers the handler
     * clobbers: only RAX (the result), RCX and R11 may change */
    __asm__ volatile("movsd %[in], %%xmm7\n\t"
                     "mov %[r8], %%r8\n\tmov %[r9], %%r9\n\tmov %[r10], %%r10\n\t"
                     "syscall\n\t"
                     "movsd %%xmm7, %[out]\n\t"
                     "mov %%r8, %[r8]\n\tmov %%r9, %[r9]\n\tmov %%r10, %[r10]"
                     : [out] "=m"(out), [r8] "+m"(r8), [r9] "+m"(r9), [r10] "+m"(r10),
                       "=a"(result)
                     : [in] "m"(in), "a"((long)SYS_kill), "D"(pid), "S"((long)SIGUSR1)
                     : "rcx", "r11", "r8", "r9", "r10", "xmm7", "memory");
    int kept = rounding() == 3;
    set_rounding(0);
    printf("handler ran %d, kill returned %ld\n", count, result);
    printf("xmm7 %.2f, r8 %#lx, r9 %#lx, r10 %#lx\n", out, (unsigned long)r8,
           (unsigned long)r9, (unsigned long)r10);
    printf("handler started rounding to nearest %d, mine survived %d\n", seen[0], kept);
}

/* --- nested ----------------------------------------------------------------------- */
static void outer(int sig)
{
    (void)sig;
    printf("outer begins\n");
    raise(SIGUSR2);
    printf("outer ends\n");
}

static void inner(int sig)
{
    (void)sig;
    printf("inner\n");
}

/* --- segv, fpe, ill, trap --------------------------------------------------------- */
static void escaping(int sig, siginfo_t *info, void *context)
{
    (void)context;
    last = *info;
    siglongjmp(escape, sig);
}

static char *fixable;

static void fixing(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)context;
    seen[1] = info->si_addr == fixable + 8 && info->si_code == SEGV_ACCERR;
    mprotect(fixable, 4096, PROT_READ | PROT_WRITE);
}

static int probe(volatile char *address, int write)
{
    if (sigsetjmp(escape, 1))
        return 0;
    if (write)
        *address = 1;
    else
        (void)*address;
    return 1;
}

static void segv(void)
{
    on_info(SIGSEGV, escaping, 0);
    long page = sysconf(_SC_PAGESIZE);
    char *none = mmap(NULL, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *readonly = mmap(NULL, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int ok = probe((char *)16, 0);
    printf("read 16: ok %d, signo %d, code %d, addr is 16 %d\n", ok, last.si_signo,
           last.si_code, last.si_addr == (void *)16);
    ok = probe(none + 5, 0);
    printf("read PROT_NONE: ok %d, code %d, addr right %d\n", ok, last.si_code,
           last.si_addr == none + 5);
    ok = probe(readonly + 7, 1);
    printf("write PROT_READ: ok %d, code %d, addr right %d\n", ok, last.si_code,
           last.si_addr == readonly + 7);
    ok = probe(readonly + 7, 0);
    printf("read PROT_READ: ok %d\n", ok);
    printf("SIGSEGV blocked after siglongjmp %d\n", blocked(SIGSEGV));

    fixable = mmap(NULL, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    on_info(SIGSEGV, fixing, 0);
    fixable[8] = 42;
    printf("the write retried after the handler fixed the page: %d, handler saw %d\n",
           fixable[8], seen[1]);
}

static void fpe(void)
{
    on_info(SIGFPE, escaping, 0);
    volatile int zero = 0, result = 7;
    if (sigsetjmp(escape, 1) == 0)
        result = 7 / zero;
    printf("divide by zero: result %d, signo %d, code %d\n", result, last.si_signo, last.si_code);
}

static void skip_ud2(int sig, siginfo_t *info, void *context)
{
    ucontext_t *uc = context;
    seen[2] = sig == SIGILL && info->si_code == ILL_ILLOPN
              && info->si_addr == (void *)uc->uc_mcontext.gregs[REG_RIP];
    uc->uc_mcontext.gregs[REG_RIP] += 2;
}

static void ill(void)
{
    on_info(SIGILL, skip_ud2, 0);
    __asm__ volatile("ud2");
    printf("after ud2: handler saw SIGILL at it %d\n", seen[2]);
}

static void trapped(int sig, siginfo_t *info, void *context)
{
    (void)context;
    seen[3] = sig == SIGTRAP && info->si_code == SI_KERNEL;
    count++;
}

static void trap(void)
{
    on_info(SIGTRAP, trapped, 0);
    __asm__ volatile("int3");
    printf("after int3: handler ran %d, saw SIGTRAP from the kernel %d\n", count, seen[3]);
}

/* --- stack overflow -------------------------------------------------------------------- */
static int recurse(int depth)
{
    volatile char pad[256];
    pad[0] = (char)depth;
    if (depth < 0x7fffffff)
        return recurse(depth + 1) + pad[0];
    return pad[0];
}

static void overflow(int alternate_stack)
{
    if (alternate_stack) {
        stack_t stack = {.ss_sp = alternate, .ss_size = sizeof alternate, .ss_flags = 0};
        sigaltstack(&stack, NULL);
    }
    on_info(SIGSEGV, escaping, alternate_stack ? SA_ONSTACK : 0);
    if (sigsetjmp(escape, 1) == 0)
        recurse(0);
    printf("survived a stack overflow: signal %d\n", last.si_signo);
}

/* --- hostile frames --------------------------------------------------------------------- */
static void escalating(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)info;
    ucontext_t *uc = context;
    uc->uc_mcontext.gregs[REG_EFL] |= 0x3000 | 0x200 | 0x4000;  /* IOPL 3, IF, NT */
}

static void kernel_segment(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)info;
    ucontext_t *uc = context;
    /* REG_CSGSFS: cs in the low 16 bits; 0x8 is a kernel code segment in
     * Linux's GDT as in minikvm's: returning to it must fail */
    uc->uc_mcontext.gregs[REG_CSGSFS] = (uc->uc_mcontext.gregs[REG_CSGSFS] & ~0xFFFFLL) | 0x0008;
}

static void cli_faulted(int sig, siginfo_t *info, void *context)
{
    (void)info;
    (void)context;
    siglongjmp(escape, sig);
}

static void garbage_fpu(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)info;
    ucontext_t *uc = context;
    /* reserved MXCSR bits: FXRSTOR would fault, so Linux refuses the frame */
    memset(uc->uc_mcontext.fpregs, 0xff, 512);
}

static void wild_fpu(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)info;
    ucontext_t *uc = context;
    uc->uc_mcontext.fpregs = (void *)16;
}

static void fpu_registers(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)info;
    ucontext_t *uc = context;
    /* a legitimate change: the handler rewrites XMM3 and the rounding mode */
    memset(&uc->uc_mcontext.fpregs->_xmm[3], 0x11, 16);
    uc->uc_mcontext.fpregs->mxcsr = (uc->uc_mcontext.fpregs->mxcsr & ~(3u << 13)) | 2u << 13;
}

static void fpu_edit(void)
{
    on_info(SIGUSR1, fpu_registers, 0);
    unsigned char out[16];
    long pid = getpid(), result;
    __asm__ volatile("pxor %%xmm3, %%xmm3\n\t"
                     "syscall\n\t"
                     "movdqu %%xmm3, %[out]"
                     : [out] "=m"(out), "=a"(result)
                     : "a"((long)SYS_kill), "D"(pid), "S"((long)SIGUSR1)
                     : "rcx", "r11", "xmm3", "memory");
    unsigned mode = rounding();
    set_rounding(0);
    printf("xmm3 byte %#x, rounding mode %u\n", out[5], mode);
}

static void privilege(void)
{
    on_info(SIGUSR1, escalating, 0);
    raise(SIGUSR1);
    unsigned long flags, cs;
    __asm__ volatile("pushf\n\tpop %0\n\tmov %%cs, %1" : "=r"(flags), "=r"(cs));
    printf("after the handler: IOPL %lu, NT %lu, CPL %lu\n", (flags >> 12) & 3,
           (flags >> 14) & 1, cs & 3);
    on_info(SIGSEGV, cli_faulted, 0);
    int sig = sigsetjmp(escape, 1);
    if (sig == 0)
        __asm__ volatile("cli");
    printf("cli: signal %d\n", sig);
    sig = sigsetjmp(escape, 1);
    if (sig == 0)
        __asm__ volatile("inb $0x60, %%al" ::: "al");
    printf("in: signal %d\n", sig);
}

static void bad_frame(void)
{
    static uint64_t garbage[256];
    for (unsigned i = 0; i < 256; i++)
        garbage[i] = 0x9e3779b97f4a7c15ULL * (i + 1);
    __asm__ volatile("mov %0, %%rsp\n\tmov $15, %%eax\n\tsyscall"
                     :: "r"(garbage + 128) : "rax", "memory");
}

static void wild_frame(void)
{
    __asm__ volatile("mov $0x7fffdead0000, %%rsp\n\tmov $15, %%eax\n\tsyscall" ::: "rax");
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *mode = argc > 1 ? argv[1] : "";
    sigset_t set;
    sigemptyset(&set);
    if (strcmp(mode, "raise") == 0) {
        on(SIGUSR1, counting, 0);
        int result = raise(SIGUSR1);
        printf("raise returned %d, handler ran %d time(s)\n", result, count);
    } else if (strcmp(mode, "siginfo") == 0) {
        on_info(SIGUSR1, recording, 0);
        on_info(SIGUSR2, recording, 0);
        raise(SIGUSR1);
        print_info("raise");
        kill(getpid(), SIGUSR2);
        print_info("kill");
        union sigval value = {.sival_int = 1234};
        sigqueue(getpid(), SIGUSR1, value);
        print_info("sigqueue");
        printf("sigqueue value %d\n", last.si_value.sival_int);
    } else if (strcmp(mode, "mask") == 0) {
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_handler = masked_usr1;
        sigemptyset(&action.sa_mask);
        sigaddset(&action.sa_mask, SIGUSR2);
        sigaction(SIGUSR1, &action, NULL);
        on(SIGUSR2, plain_usr2, 0);
        raise(SIGUSR1);
        printf("after: usr1 blocked %d, usr2 blocked %d\n", blocked(SIGUSR1), blocked(SIGUSR2));
    } else if (strcmp(mode, "resethand") == 0) {
        on(SIGUSR1, counting, SA_RESETHAND);
        raise(SIGUSR1);
        struct sigaction now;
        sigaction(SIGUSR1, NULL, &now);
        printf("handler ran %d, action is now SIG_DFL %d\n", count, now.sa_handler == SIG_DFL);
    } else if (strcmp(mode, "nodefer") == 0) {
        on(SIGUSR1, reentering, SA_NODEFER);
        raise(SIGUSR1);
        printf("depth reached %d\n", count);
    } else if (strcmp(mode, "pending") == 0) {
        on(SIGUSR1, plain_usr2, 0);
        sigaddset(&set, SIGUSR1);
        sigprocmask(SIG_BLOCK, &set, NULL);
        raise(SIGUSR1);
        sigset_t pending;
        sigpending(&pending);
        printf("blocked and pending %d\n", sigismember(&pending, SIGUSR1));
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        printf("after unblocking\n");
    } else if (strcmp(mode, "alarm") == 0) {
        on(SIGALRM, counting, 0);
        alarm(1);
        int result = pause();
        printf("pause returned %d (EINTR %d), handler ran %d\n", result, errno == EINTR, count);
    } else if (strcmp(mode, "sigsuspend") == 0) {
        on(SIGALRM, counting, 0);
        sigaddset(&set, SIGALRM);
        sigprocmask(SIG_BLOCK, &set, NULL);
        timer_ms(50);
        sigset_t none;
        sigemptyset(&none);
        int result = sigsuspend(&none);
        printf("sigsuspend returned %d (EINTR %d), handler ran %d, SIGALRM blocked %d\n",
               result, errno == EINTR, count, blocked(SIGALRM));
    } else if (strcmp(mode, "nanosleep") == 0) {
        on(SIGALRM, counting, 0);
        timer_ms(50);
        struct timespec want = {5, 0}, left = {0, 0};
        int result = nanosleep(&want, &left);
        printf("nanosleep returned %d (EINTR %d), handler ran %d, time left 4-5 s %d\n",
               result, errno == EINTR, count, left.tv_sec == 4);
    } else if (strcmp(mode, "altstack") == 0) {
        stack_t stack = {.ss_sp = alternate, .ss_size = sizeof alternate, .ss_flags = 0};
        sigaltstack(&stack, NULL);
        on(SIGUSR1, on_alternate, SA_ONSTACK);
        raise(SIGUSR1);
        stack_t now;
        sigaltstack(NULL, &now);
        printf("after: SS_ONSTACK %d, size kept %d\n", (now.ss_flags & SS_ONSTACK) != 0,
               now.ss_size == sizeof alternate);
    } else if (strcmp(mode, "registers") == 0) {
        registers();
    } else if (strcmp(mode, "nested") == 0) {
        on(SIGUSR1, outer, 0);
        on(SIGUSR2, inner, 0);
        raise(SIGUSR1);
        printf("back in main\n");
    } else if (strcmp(mode, "sigpipe") == 0) {
        on(SIGPIPE, counting, 0);
        int ends[2];
        pipe(ends);
        close(ends[0]);
        long result = write(ends[1], "x", 1);
        printf("write returned %ld (EPIPE %d), handler ran %d\n", result, errno == EPIPE, count);
    } else if (strcmp(mode, "segv") == 0) {
        segv();
    } else if (strcmp(mode, "fpe") == 0) {
        fpe();
    } else if (strcmp(mode, "ill") == 0) {
        ill();
    } else if (strcmp(mode, "trap") == 0) {
        trap();
    } else if (strcmp(mode, "privilege") == 0) {
        privilege();
    } else if (strcmp(mode, "overflow-altstack") == 0) {
        overflow(1);
    } else if (strcmp(mode, "overflow") == 0) {
        overflow(0);
    } else if (strcmp(mode, "fpu-edit") == 0) {
        fpu_edit();
    } else if (strcmp(mode, "garbage-fpu") == 0) {
        on_info(SIGUSR1, garbage_fpu, 0);
        raise(SIGUSR1);
        printf("returned with a garbage FPU state\n");
    } else if (strcmp(mode, "wild-fpu") == 0) {
        on_info(SIGUSR1, wild_fpu, 0);
        raise(SIGUSR1);
        printf("returned with no FPU state\n");
    } else if (strcmp(mode, "kernel-cs") == 0) {
        on_info(SIGUSR1, kernel_segment, 0);
        raise(SIGUSR1);
        printf("returned to a kernel code segment\n");
    } else if (strcmp(mode, "bad-frame") == 0) {
        bad_frame();
    } else if (strcmp(mode, "wild-frame") == 0) {
        wild_frame();
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}
