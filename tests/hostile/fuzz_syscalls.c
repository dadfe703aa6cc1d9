/* fuzz_syscalls.c — random system calls with hostile arguments.
 *
 * Usage: fuzz_syscalls SEED [CALLS] [verbose]
 *
 * A xorshift generator seeded from SEED picks CALLS system calls (default
 * 20000) from the whole x86-64 table, and beyond it (unknown numbers,
 * minikvm's own 500-502, the x32 bit), with arguments drawn from values
 * that break careless handlers: 0, -1, small and huge integers, INT_MIN,
 * pointers into valid memory, into read-only code, into a page that was
 * just unmapped, to the last bytes of a mapping (so a struct straddles its
 * end), into the kernel half and the non-canonical hole.
 *
 * Integers at the edges — 0, -1, INT64_MAX, INT64_MIN, 2^32±1, 2^31±1, a
 * page ±1 — come up in every argument position and in the words of the
 * scratch region that calls read structs from (timespecs, itimervals,
 * socket options).  Calls that may wait are tamed in the random phase, so
 * a first, deterministic phase (`edge_timeouts`) gives every call that
 * takes a time value each pair of edge values, on a descriptor that is
 * ready (or a futex word that does not match), so that none of them waits.
 *
 * The guest answer does not matter; the host's conduct does: no Python
 * traceback, no internal error, no memory blow-up, no file appearing
 * outside the grants, the run ending with this program's own status.
 *
 * The fuzzer must survive its own calls, so a few calls are skipped or
 * tamed (see `tame`): those that end the process (exit, execve), send it a
 * fatal signal, install signal handlers at random addresses, unmap or
 * protect its own code, data and stack, change the TLS base, or wait for
 * ever (pause, poll with no timeout, futex).  Every descriptor it may get
 * is made non-blocking now and then, so a read from an empty pipe returns
 * EAGAIN instead of waiting for a writer that will never come.
 *
 * With "verbose", each call is printed before it is made (to find the one
 * that misbehaves); otherwise only a summary at the end.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#define FUTEX_WAIT 0   /* <linux/futex.h>: not among musl's headers */
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#define PAGE 4096UL
#define REGION_SIZE (64 * PAGE)         /* the scratch memory calls may write */
#define KERNEL_HALF 0xffff800000000000UL
#define NON_CANONICAL 0x0000800000000000UL
#define TOP_OF_USER 0x00007ffffffff000UL
#define OUT_FD 777                      /* where the summary goes: out of reach of small fds */
#define SYSCALL_TABLE_END 470
#define MINIKVM_FIRST 500
#define MINIKVM_LAST 502
#define X32_SYSCALL_BIT 0x40000000UL

static uint64_t state;

static uint64_t next(void)
{
    /* xorshift64 (Marsaglia, 2003) */
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static uint64_t below(uint64_t n) { return next() % n; }

/* Memory the calls may aim at. */
static unsigned char *region;        /* RW, followed by an unmapped page */
static unsigned char *heap;          /* malloc'd */
static unsigned char *gone;          /* a page that was munmapped */
static unsigned char *readonly;      /* a read-only mapping */
static unsigned char *stack_area;    /* unused stack well below the running frames */

static int region_touched;  /* a call may have unmapped or protected the region */

static uint64_t pointer(void)
{
    switch (below(14)) {
    case 0: return (uint64_t)(region + below(REGION_SIZE));
    case 1: return (uint64_t)(region + REGION_SIZE - 1 - below(64));   /* straddles the end */
    case 2: return (uint64_t)(region + below(REGION_SIZE / 64) * 64);
    case 3: return (uint64_t)(heap + below(PAGE * 16));
    case 4: return (uint64_t)(stack_area + below(PAGE * 8));
    case 5: return (uint64_t)&pointer;                                 /* code: read-only */
    case 6: return (uint64_t)(readonly + below(PAGE));
    case 7: return (uint64_t)(gone + below(PAGE));
    case 8: return KERNEL_HALF + below(PAGE) * 8;
    case 9: return 0xffffffffff600000UL;                               /* vsyscall page */
    case 10: return NON_CANONICAL - below(16);                         /* the last user bytes */
    case 11: return NON_CANONICAL + below(PAGE);
    case 12: return below(0x10000);                                    /* the kernel area */
    default: return TOP_OF_USER + below(PAGE);                         /* just above the stack */
    }
}

/* Integers where careless arithmetic breaks: signs, widths, pages. */
static const uint64_t EDGES[] = {
    0, (uint64_t)-1, 0x7fffffffffffffffUL, 0x8000000000000000UL,
    0xffffffffUL, 0x100000000UL, 0x100000001UL,             /* 2^32 - 1, 2^32, 2^32 + 1 */
    0x7fffffffUL, 0x80000000UL, 0x80000001UL,                /* 2^31 - 1, 2^31, 2^31 + 1 */
    0xffffffff80000000UL,                                    /* INT_MIN sign-extended */
    PAGE - 1, PAGE, PAGE + 1, 999999999, 1000000000, 999999, 1000000,
};
#define N_EDGES (sizeof EDGES / sizeof *EDGES)

static uint64_t edge(void) { return EDGES[below(N_EDGES)]; }

static int fds[32];   /* descriptors of every kind, opened at the start */
static int nfds;

static uint64_t value(void)
{
    switch (below(24)) {
    case 21: case 22: case 23: return edge();
    case 18: case 19: return nfds ? (uint64_t)fds[below(nfds)] : 3;
    case 20: return below(2) ? 8 + below(200) : 4096 + below(65536);   /* a plausible length */
    case 0: return 0;
    case 1: return (uint64_t)-1;
    case 2: return below(8);
    case 3: return below(64);
    case 4: return below(4096);
    case 5: return 0x7fffffffUL;
    case 6: return 0x80000000UL;                 /* INT_MIN as a 32-bit register */
    case 7: return 0xffffffff80000000UL;         /* INT_MIN sign-extended */
    case 8: return 0x7fffffffffffffffUL;
    case 9: return 0x8000000000000000UL;
    case 10: return 1UL << (20 + below(44));     /* a huge length */
    case 11: return (uint64_t)-100;              /* AT_FDCWD */
    case 12: return 0xffffffffUL;
    case 13: return next();
    case 14: return 1UL << below(64);            /* a single flag bit */
    default: return pointer();
    }
}

static void fill_region(void)
{
    /* Words a handler may follow: pointers and lengths, and short strings
     * that make plausible file names. */
    for (size_t i = 0; i < REGION_SIZE / 8; i++) {
        uint64_t choice = below(8), word = choice < 2 ? value() : choice < 4 ? edge() : next();
        memcpy(region + 8 * i, &word, 8);
    }
    static const char *names[] = {"f", "d/x", "..", "/etc/passwd", "/proc/self/mem",
                                  "/dev/kvm", "../../../../tmp/escape", "/tmp/minikvm-fuzz",
                                  "", ".", "/"};
    for (int i = 0; i < 64; i++) {
        const char *name = names[below(sizeof names / sizeof *names)];
        size_t at = below(REGION_SIZE - 64);
        memcpy(region + at, name, strlen(name) + 1);
    }
}

/* Make the call safe for the fuzzer itself; 0 to skip it. */
static int tame(uint64_t number, uint64_t *a)
{
    switch (number) {
    case SYS_exit: case SYS_exit_group: case SYS_rt_sigreturn: case SYS_execve:
    case SYS_execveat: case SYS_pause: case SYS_rt_sigsuspend: case SYS_rt_sigaction:
    case SYS_kill: case SYS_tkill: case SYS_tgkill: case SYS_rt_sigqueueinfo:
    case SYS_rt_tgsigqueueinfo: case SYS_alarm: case SYS_setitimer: case SYS_timer_create:
    case SYS_timer_settime: case SYS_futex: case SYS_clone: case SYS_clone3: case SYS_fork:
    case SYS_vfork: case SYS_arch_prctl: case SYS_sigaltstack: case SYS_rt_sigtimedwait:
    case SYS_set_robust_list: case SYS_rseq: case SYS_shmdt: case SYS_seccomp:
#ifdef SYS_pidfd_send_signal
    case SYS_pidfd_send_signal:
#endif
#ifdef SYS_futex_waitv
    case SYS_futex_waitv:
#endif
        return 0;
    case SYS_poll: case SYS_ppoll: case SYS_select: case SYS_pselect6:
    case SYS_epoll_wait: case SYS_epoll_pwait:
#ifdef SYS_epoll_pwait2
    case SYS_epoll_pwait2:
#endif
    case SYS_nanosleep: case SYS_clock_nanosleep: case SYS_wait4: case SYS_waitid:
    case SYS_accept: case SYS_accept4: case SYS_recvfrom: case SYS_recvmsg:
    case SYS_recvmmsg: case SYS_msgrcv: case SYS_semop: case SYS_semtimedop:
        /* may wait: only with a NULL or zero timeout, or not at all */
        if (number == SYS_poll) { a[2] = 0; return 1; }
        if (number == SYS_epoll_wait || number == SYS_epoll_pwait) { a[3] = 0; return 1; }
        if (number == SYS_select || number == SYS_pselect6) {
            static uint64_t zero[2];
            zero[0] = zero[1] = 0;
            a[4] = (uint64_t)zero;
            return 1;
        }
        if (number == SYS_ppoll) {
            static uint64_t zero[2];
            zero[0] = zero[1] = 0;
            a[2] = (uint64_t)zero;
            return 1;
        }
        if (number == SYS_wait4 || number == SYS_waitid) return 1;   /* no children: ECHILD */
        return 0;
    case SYS_munmap: case SYS_mprotect: case SYS_madvise: case SYS_mremap: case SYS_brk:
    case SYS_shmat: case SYS_pkey_mprotect: case SYS_mlock: case SYS_munlock: case SYS_mlock2:
    case SYS_remap_file_pages:
        /* only the scratch region, or an address that cannot be ours */
        if (number == SYS_brk) { if (a[0] && a[0] < (uint64_t)1 << 47) return 0; return 1; }
        region_touched = 1;
        switch (below(4)) {
        case 0: a[0] = (uint64_t)region + below(REGION_SIZE / PAGE) * PAGE;
                a[1] = below(REGION_SIZE - (a[0] - (uint64_t)region) + 1); break;
        case 1: a[0] = KERNEL_HALF + below(16) * PAGE; break;
        case 2: a[0] = NON_CANONICAL + below(16) * PAGE; break;
        default: a[0] = (uint64_t)gone; a[1] = PAGE; break;
        }
        if (number == SYS_mremap) {
            a[2] = below(2) ? a[1] : below(4 * PAGE);
            a[3] &= ~(uint64_t)MREMAP_FIXED;       /* never over our own memory */
        }
        if (number == SYS_madvise && a[2] == MADV_DONTNEED) a[2] = MADV_NORMAL;
        return 1;
    case SYS_mmap:
        /* a fixed mapping only over the scratch region or far away */
        if (a[3] & (MAP_FIXED | MAP_FIXED_NOREPLACE)) {
            region_touched = 1;
            if (below(2)) a[0] = (uint64_t)region + below(REGION_SIZE / PAGE) * PAGE;
            else a[0] = NON_CANONICAL + below(16) * PAGE;
            if (a[1] > REGION_SIZE) a[1] = below(REGION_SIZE);
        }
        return 1;
    case SYS_close: case SYS_dup2: case SYS_dup3: case SYS_close_range:
        /* keep the summary's descriptor */
        if (a[0] == OUT_FD || a[1] == OUT_FD) return 0;
        if (number == SYS_close_range) a[1] = a[1] >= OUT_FD ? OUT_FD - 1 : a[1];
        return 1;
    case SYS_prctl:
        /* PR_SET_SECCOMP would end the process at its next call; PR_SET_MM moves its memory */
        return a[0] != 22 && a[0] != 35;
    case SYS_setrlimit: case SYS_prlimit64:
        return 0;   /* a tiny RLIMIT_NOFILE or RLIMIT_AS would only stop the fuzzer */
    case SYS_personality:
        return 0;
    case SYS_read: case SYS_readv: case SYS_pread64: case SYS_preadv: case SYS_preadv2:
        /* reading from the terminal would wait: stdin is redirected, but be sure */
        return a[0] != 0;
    }
    return 1;
}

static void keep(long fd)
{
    if (fd >= 0 && nfds < (int)(sizeof fds / sizeof *fds))
        fds[nfds++] = (int)fd;
}

/* One descriptor of each kind minikvm knows: files, directories, devices,
 * pipes, sockets, event and timer descriptors.  Some fail without grants. */
static void open_descriptors(void)
{
    int pair[2];
    keep(syscall(SYS_open, ".", O_RDONLY | O_DIRECTORY));
    keep(syscall(SYS_open, "fuzzfile", O_RDWR | O_CREAT, 0644));
    keep(syscall(SYS_open, "/dev/zero", O_RDWR));
    keep(syscall(SYS_open, "/dev/null", O_RDWR));
    keep(syscall(SYS_open, "/dev/urandom", O_RDONLY));
    keep(syscall(SYS_open, "/proc/self/maps", O_RDONLY));
    keep(syscall(SYS_open, ".", O_PATH));
    if (syscall(SYS_pipe2, pair, O_NONBLOCK) == 0) { keep(pair[0]); keep(pair[1]); }
    if (syscall(SYS_socketpair, 1 /* AF_UNIX */, 1 /* SOCK_STREAM */, 0, pair) == 0) {
        keep(pair[0]);
        keep(pair[1]);
    }
    keep(syscall(SYS_socket, 2 /* AF_INET */, 1 /* SOCK_STREAM */, 0));
    keep(syscall(SYS_socket, 2 /* AF_INET */, 2 /* SOCK_DGRAM */, 0));
    keep(syscall(SYS_socket, 10 /* AF_INET6 */, 1 /* SOCK_STREAM */, 0));
    keep(syscall(SYS_socket, 1 /* AF_UNIX */, 2 /* SOCK_DGRAM */, 0));
    keep(syscall(SYS_eventfd2, 0, O_NONBLOCK));
    keep(syscall(SYS_epoll_create1, 0));
    keep(syscall(SYS_timerfd_create, 1 /* CLOCK_MONOTONIC */, O_NONBLOCK));
    uint64_t mask = 1UL << 9;   /* SIGUSR1 */
    keep(syscall(SYS_signalfd4, -1, &mask, 8, O_NONBLOCK));
    keep(syscall(SYS_memfd_create, "fuzz", 0));
    keep(syscall(SYS_inotify_init1, O_NONBLOCK));
}

static void nonblocking(long fd)
{
    long flags = syscall(SYS_fcntl, fd, F_GETFL);
    if (flags >= 0 && !(flags & O_NONBLOCK))
        syscall(SYS_fcntl, fd, F_SETFL, flags | O_NONBLOCK);
}

/* The region as it was: read-write, the page after it unmapped. */
static void restore_region(void)
{
    syscall(SYS_mmap, region, REGION_SIZE, PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    syscall(SYS_munmap, region + REGION_SIZE, PAGE);
    region_touched = 0;
}

static void say(const char *text)
{
    syscall(SYS_write, OUT_FD, text, strlen(text));
}

/* Every call that takes a time value, with each pair of edge values as its
 * (seconds, fraction), made so that it returns at once whatever it accepts:
 * waits are on a ready pipe or a futex word that does not match, sleeps
 * only with values that are invalid or already past, timers disarmed
 * right after.  Returns the number of calls made. */
static long edge_timeouts(void)
{
    static const int64_t seconds[] = {0, -1, 0x7fffffffffffffffL, (int64_t)0x8000000000000000UL,
                                      0xffffffffL, 0x100000001L, 0x7fffffffL, 0x80000001L,
                                      4095, 4097};
    static const int64_t fractions[] = {0, -1, 999999, 1000000, 999999999, 1000000000,
                                        0x7fffffffffffffffL, (int64_t)0x8000000000000000UL};
    long made = 0;
    int ready[2];
    if (syscall(SYS_pipe2, ready, O_NONBLOCK) != 0 || write(ready[1], "x", 1) != 1)
        return 0;
    int tcp = (int)syscall(SYS_socket, 2 /* AF_INET */, 1 /* SOCK_STREAM */, 0);
    int timer = (int)syscall(SYS_timerfd_create, 1 /* CLOCK_MONOTONIC */, O_NONBLOCK);
    int epoll = (int)syscall(SYS_epoll_create1, 0);
    struct { uint32_t events; uint64_t data; } __attribute__((packed)) event = {1 /* EPOLLIN */, 0};
    syscall(SYS_epoll_ctl, epoll, 1 /* EPOLL_CTL_ADD */, ready[0], &event);
    signal(SIGALRM, SIG_IGN);           /* an itimer that fires before it is disarmed */
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    sigprocmask(SIG_BLOCK, &usr2, NULL);
    int word = 0;
    for (size_t i = 0; i < sizeof seconds / sizeof *seconds; i++) {
        for (size_t j = 0; j < sizeof fractions / sizeof *fractions; j++) {
            int64_t s = seconds[i], f = fractions[j];
            int64_t t[4];
            struct pollfd poll_ready = {ready[0], POLLIN, 0};
            fd_set set;
            t[0] = s; t[1] = f;
            syscall(SYS_ppoll, &poll_ready, 1, t, NULL, 8); made++;
            t[0] = s; t[1] = f; FD_ZERO(&set); FD_SET(ready[0], &set);
            syscall(SYS_select, ready[0] + 1, &set, NULL, NULL, t); made++;
            t[0] = s; t[1] = f; FD_ZERO(&set); FD_SET(ready[0], &set);
            syscall(SYS_pselect6, ready[0] + 1, &set, NULL, NULL, t, NULL); made++;
            t[0] = s; t[1] = f;
            syscall(SYS_epoll_pwait, epoll, &event, 1, (int)s, NULL, 8); made++;
            syscall(SYS_futex, &word, FUTEX_WAIT, word + 1, t, NULL, 0); made++;
            t[0] = s; t[1] = f; t[2] = s; t[3] = f;
            syscall(SYS_setitimer, ITIMER_REAL, t, t); made++;
            syscall(SYS_getitimer, ITIMER_REAL, t); made++;
            int64_t off[4] = {0, 0, 0, 0};
            syscall(SYS_setitimer, ITIMER_REAL, off, NULL); made++;
            t[0] = s; t[1] = f;
            syscall(SYS_setsockopt, tcp, SOL_SOCKET, SO_RCVTIMEO, t, 16); made++;
            syscall(SYS_setsockopt, tcp, SOL_SOCKET, SO_SNDTIMEO, t, 16); made++;
            socklen_t length = 16;
            syscall(SYS_getsockopt, tcp, SOL_SOCKET, SO_RCVTIMEO, t, &length); made++;
            t[0] = s; t[1] = f; t[2] = s; t[3] = f;
            syscall(SYS_timerfd_settime, timer, 0, t, t); made++;
            syscall(SYS_timerfd_gettime, timer, t); made++;
            syscall(SYS_timerfd_settime, timer, 0, off, NULL); made++;
            t[0] = s; t[1] = f; t[2] = s; t[3] = f;
            syscall(SYS_utimensat, -100 /* AT_FDCWD */, "fuzzfile", t, 0); made++;
            t[0] = s; t[1] = f;
            syscall(SYS_kill, getpid(), SIGUSR2);
            syscall(SYS_rt_sigtimedwait, &usr2, NULL, t, 8); made++;
            if (s < 0 || f < 0 || f >= 1000000000 || (s == 0 && f == 0)) {
                t[0] = s; t[1] = f;             /* invalid, or nothing to sleep */
                syscall(SYS_nanosleep, t, NULL); made++;
            }
            if (s <= 0 || f < 0 || f >= 1000000000) {
                t[0] = s; t[1] = f;             /* invalid, or a time already past */
                syscall(SYS_clock_nanosleep, 1 /* CLOCK_MONOTONIC */, 1 /* TIMER_ABSTIME */, t,
                        NULL); made++;
            }
        }
    }
    signal(SIGUSR2, SIG_IGN);           /* discards a SIGUSR2 still pending */
    sigprocmask(SIG_UNBLOCK, &usr2, NULL);
    signal(SIGUSR2, SIG_DFL);
    signal(SIGALRM, SIG_DFL);
    close(ready[0]); close(ready[1]); close(tcp); close(timer); close(epoll);
    return made;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SEED [CALLS] [verbose]\n", argv[0]);
        return 2;
    }
    state = strtoull(argv[1], NULL, 0) * 0x9E3779B97F4A7C15ULL + 1;
    long calls = argc > 2 ? strtol(argv[2], NULL, 0) : 20000;
    int verbose = argc > 3 && !strcmp(argv[3], "verbose");
    if (dup2(1, OUT_FD) != OUT_FD)
        return 3;
    /* stdin, stdout and stderr become /dev/null: a random write of 2 GiB to
     * fd 2 is the guest's right, but not something the test should store. */
    int null = open("/dev/null", O_RDWR);
    if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
        return 3;
    if (null > 2)
        close(null);
    signal(SIGPIPE, SIG_IGN);   /* writing to a pipe it closed the other end of */

    region = mmap(NULL, REGION_SIZE + PAGE, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    readonly = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED || readonly == MAP_FAILED)
        return 4;
    munmap(region + REGION_SIZE, PAGE);
    gone = readonly + PAGE;
    munmap(gone, PAGE);
    memset(readonly, 'r', PAGE);
    mprotect(readonly, PAGE, PROT_READ);
    heap = malloc(PAGE * 16 + 64);
    /* far below every frame still in use (stacks grow down) */
    stack_area = (unsigned char *)__builtin_frame_address(0) - 256 * 1024;
    fill_region();
    open_descriptors();

    long made = calls ? edge_timeouts() : 0, failed = 0, skipped = 0;
    for (long i = 0; i < calls; i++) {
        uint64_t number;
        switch (below(40)) {
        case 0: number = MINIKVM_FIRST + below(MINIKVM_LAST - MINIKVM_FIRST + 2); break;
        case 1: number = below(2) ? X32_SYSCALL_BIT | below(SYSCALL_TABLE_END) : value(); break;
        default: number = below(SYSCALL_TABLE_END);
        }
        uint64_t a[6];
        for (int j = 0; j < 6; j++)
            a[j] = value();
        if (!tame(number, a)) {
            skipped++;
            continue;
        }
        if (verbose) {
            char line[200];
            snprintf(line, sizeof line, "%ld: %lu(%#lx, %#lx, %#lx, %#lx, %#lx, %#lx)\n", i,
                     (unsigned long)number, (unsigned long)a[0], (unsigned long)a[1],
                     (unsigned long)a[2], (unsigned long)a[3], (unsigned long)a[4],
                     (unsigned long)a[5]);
            say(line);
        }
        long result = syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
        made++;
        if (region_touched)
            restore_region();
        failed += result < 0;
        if (result >= 3 && result < 64)
            nonblocking(result);
        if (i % 512 == 0)
            for (int fd = 3; fd < 64; fd++)
                nonblocking(fd);
        if (i % 1024 == 0)
            fill_region();
    }
    char summary[160];
    snprintf(summary, sizeof summary, "fuzz: seed %s, %ld calls made, %ld failed, %ld skipped\n",
             argv[1], made, failed, skipped);
    say(summary);
    return 0;
}
