/* misc_calls.c — the small system calls programs make about themselves.
 *
 * Identity, process groups, prctl, personality, scheduling, limits, CPU
 * time, clocks, timers, the alternate signal stack, signal dispositions,
 * masks and pending signals.  Lines starting "same:" must read the same
 * natively and under minikvm.  With the argument "guest" it also prints
 * "guest:" lines: what minikvm's one-process, one-CPU sandbox answers where
 * a real machine's answer depends on the machine (or would need root, and
 * this program is not run natively as root with them).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/personality.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/time.h>
#include <sys/times.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *err_name(int e)
{
    switch (e) {
    case 0: return "ok";
    case EPERM: return "EPERM";
    case ECHILD: return "ECHILD";
    case EINVAL: return "EINVAL";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case ESRCH: return "ESRCH";
    case EFAULT: return "EFAULT";
    case ENOSYS: return "ENOSYS";
    case EACCES: return "EACCES";
    default: return "other";
    }
}

/* The outcome of a call that returns -1 and sets errno on failure.  (Call it
 * in its own statement when other arguments of the same printf read what it
 * writes: C leaves the order in which arguments are evaluated open.) */
#define RESULT(call) ((call) == -1 ? err_name(errno) : "ok")

static void identity(void)
{
    uid_t r, e, s;
    gid_t gr, ge, gs;
    getresuid(&r, &e, &s);
    getresgid(&gr, &ge, &gs);
    printf("same: getresuid is getuid x3: %d, getresgid is getgid x3: %d\n",
           r == getuid() && e == getuid() && s == getuid(),
           gr == getgid() && ge == getgid() && gs == getgid());
    int count = getgroups(0, NULL);
    gid_t groups[256];
    int again = getgroups(256, groups);
    printf("same: getgroups: %d groups, the same twice: %d\n", count, count == again);
    if (count > 1) {
        errno = 0;
        printf("same: getgroups with too small a buffer: %s\n",
               RESULT(getgroups(count - 1, groups)));
    }
    printf("same: setuid to itself: %s\n", RESULT(setuid(getuid())));
    /* getsid(0) is 0, not an error, when the session leader lives outside
     * this pid namespace (as in many CI containers): only ask that it works. */
    printf("same: getpgid(0) is getpgrp: %d, getsid(0) succeeds: %d\n",
           getpgid(0) == getpgrp(), getsid(0) >= 0);
    errno = 0;
    printf("same: wait4 with no children: %s\n", RESULT(wait4(-1, NULL, WNOHANG, NULL)));
    siginfo_t info;
    printf("same: waitid with no children: %s\n", RESULT(waitid(P_ALL, 0, &info, WEXITED)));
}

static void process_control(void)
{
    char name[32] = {0};
    prctl(PR_GET_NAME, name);
    printf("same: initial name: %s\n", name);
    prctl(PR_SET_NAME, "a-very-long-process-name");
    memset(name, 0, sizeof name);
    prctl(PR_GET_NAME, name);
    printf("same: name after PR_SET_NAME: %s\n", name);
    printf("same: PR_GET_DUMPABLE: %d\n", prctl(PR_GET_DUMPABLE));
    errno = 0;
    printf("same: unknown prctl: %s\n", RESULT(prctl(0x7fff, 0, 0, 0, 0)));
    printf("same: personality query: %#x\n", personality(0xffffffff));
    printf("same: personality set returns old: %#x\n", personality(ADDR_NO_RANDOMIZE));
    printf("same: personality now: %#x\n", personality(0xffffffff));
    personality(PER_LINUX);
}

static void scheduling(void)
{
    struct sched_param param = {0};
    printf("same: scheduler: %d, priority range FIFO %d..%d, OTHER %d..%d\n",
           sched_getscheduler(0), sched_get_priority_min(SCHED_FIFO),
           sched_get_priority_max(SCHED_FIFO), sched_get_priority_min(SCHED_OTHER),
           sched_get_priority_max(SCHED_OTHER));
    const char *got = RESULT(sched_getparam(0, &param));
    printf("same: sched_getparam: %s, priority %d\n", got, param.sched_priority);
    errno = 0;
    printf("same: priority range of policy 42: %s\n", RESULT(sched_get_priority_max(42)));
    printf("same: sched_setscheduler(SCHED_BATCH): %s\n",
           RESULT(sched_setscheduler(0, SCHED_BATCH, &param)));
    sched_setscheduler(0, SCHED_OTHER, &param);
    errno = 0;
    printf("same: getpriority: %d\n", getpriority(PRIO_PROCESS, 0));
    got = RESULT(setpriority(PRIO_PROCESS, 0, 5));
    printf("same: setpriority +5: %s, now %d\n", got, getpriority(PRIO_PROCESS, 0));
    printf("same: sched_yield: %s\n", RESULT(sched_yield()));
}

static void limits_and_time(void)
{
    struct rlimit limit;
    printf("same: getrlimit(RLIMIT_STACK): %s\n", RESULT(getrlimit(RLIMIT_STACK, &limit)));
    errno = 0;
    printf("same: getrlimit(99): %s\n", RESULT(getrlimit(99, &limit)));
    struct tms tms;
    clock_t ticks = times(&tms);
    printf("same: times: %s\n", ticks == (clock_t)-1 ? err_name(errno) : "ok");
    struct rusage usage;
    const char *got = RESULT(getrusage(RUSAGE_SELF, &usage));
    printf("same: getrusage self: %s, maxrss positive %d\n", got, usage.ru_maxrss > 0);
    got = RESULT(getrusage(RUSAGE_CHILDREN, &usage));
    printf("same: getrusage children: %s, no time %d\n", got,
           usage.ru_utime.tv_sec == 0 && usage.ru_utime.tv_usec == 0);
    errno = 0;
    printf("same: getrusage(5): %s\n", RESULT(syscall(SYS_getrusage, 5, &usage)));

    struct timespec res, now, bad = {0, 2000000000L};
    got = RESULT(clock_getres(CLOCK_MONOTONIC, &res));
    printf("same: clock_getres(MONOTONIC): %s %ld.%09ld\n", got, (long)res.tv_sec, res.tv_nsec);
    errno = 0;
    printf("same: clock_gettime(clock 99): %s\n", RESULT(syscall(SYS_clock_gettime, 99, &now)));
    errno = 0;
    printf("same: nanosleep with 2e9 ns: %s\n", RESULT(nanosleep(&bad, NULL)));
    clock_gettime(CLOCK_MONOTONIC, &now);
    now.tv_nsec += 10000000;
    if (now.tv_nsec >= 1000000000L) {
        now.tv_sec++;
        now.tv_nsec -= 1000000000L;
    }
    printf("same: clock_nanosleep until 10 ms from now: %d\n",
           clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &now, NULL));
    printf("same: clock_nanosleep on the thread's CPU clock: %d (EINVAL is %d)\n",
           clock_nanosleep(CLOCK_THREAD_CPUTIME_ID, 0, &now, NULL), EINVAL);

    unsigned first = alarm(5);
    printf("same: alarm(5) then alarm(0): %u %u\n", first, alarm(0));
    struct itimerval timer = {{0, 0}, {1, 500000}}, current;
    setitimer(ITIMER_REAL, &timer, NULL);
    getitimer(ITIMER_REAL, &current);
    printf("same: getitimer after 1.5 s: %ld s left, interval %ld\n",
           (long)current.it_value.tv_sec, (long)current.it_interval.tv_sec);
    struct itimerval off = {{0, 0}, {0, 0}}, old;
    setitimer(ITIMER_REAL, &off, &old);
    getitimer(ITIMER_REAL, &current);
    printf("same: cancelled: old had %ld s, now %ld.%06ld\n", (long)old.it_value.tv_sec,
           (long)current.it_value.tv_sec, (long)current.it_value.tv_usec);
    struct timeval tv;
    got = RESULT(gettimeofday(&tv, NULL));
    printf("same: gettimeofday: %s, time() agrees %d\n", got,
           labs((long)time(NULL) - (long)tv.tv_sec) <= 1);
}

static void sigaltstacks(void)
{
    static char area[65536];
    stack_t stack = {.ss_sp = area, .ss_size = sizeof area, .ss_flags = 0}, old;
    sigaltstack(NULL, &old);
    printf("same: initial alternate stack disabled: %d\n", (old.ss_flags & SS_DISABLE) != 0);
    printf("same: sigaltstack set: %s\n", RESULT(sigaltstack(&stack, NULL)));
    sigaltstack(NULL, &old);
    printf("same: read back: same pointer %d, size %zu, flags %d\n", old.ss_sp == area,
           old.ss_size, old.ss_flags);
    stack_t tiny = {.ss_sp = area, .ss_size = 16, .ss_flags = 0};
    errno = 0;
    printf("same: a 16-byte stack: %s\n", RESULT(sigaltstack(&tiny, NULL)));
    stack_t off = {.ss_flags = SS_DISABLE};
    sigaltstack(&off, NULL);
    sigaltstack(NULL, &old);
    printf("same: disabled again: %d\n", (old.ss_flags & SS_DISABLE) != 0);
}

static void on_signal(int sig) { (void)sig; }

static void signal_state(void)
{
    struct sigaction action = {0}, back;
    action.sa_handler = on_signal;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    sigaddset(&action.sa_mask, SIGUSR2);
    sigaction(SIGUSR1, &action, NULL);
    sigaction(SIGUSR1, NULL, &back);
    printf("same: sigaction round trip: handler %d, SA_RESTART %d, mask has SIGUSR2 %d\n",
           back.sa_handler == on_signal, (back.sa_flags & SA_RESTART) != 0,
           sigismember(&back.sa_mask, SIGUSR2));
    errno = 0;
    printf("same: sigaction on SIGKILL: %s\n", RESULT(sigaction(SIGKILL, &action, NULL)));
    signal(SIGUSR1, SIG_DFL);

    sigset_t block, pending;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGKILL);                 /* silently not blocked */
    sigprocmask(SIG_BLOCK, &block, NULL);
    raise(SIGUSR1);
    sigpending(&pending);
    printf("same: blocked SIGUSR1 is pending: %d\n", sigismember(&pending, SIGUSR1));
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    printf("same: SIGKILL cannot be blocked: %d\n", !sigismember(&now, SIGKILL));
    signal(SIGUSR1, SIG_IGN);
    sigpending(&pending);
    printf("same: ignoring it discards it: %d\n", !sigismember(&pending, SIGUSR1));
    sigprocmask(SIG_UNBLOCK, &block, NULL);
    signal(SIGUSR1, SIG_DFL);
    printf("same: still alive after unblocking\n");

    raise(SIGCHLD);
    raise(SIGWINCH);
    printf("same: SIGCHLD and SIGWINCH are ignored by default\n");
    printf("same: kill(getpid(), 0): %s\n", RESULT(kill(getpid(), 0)));

    sigset_t wait_for;
    sigemptyset(&wait_for);
    sigaddset(&wait_for, SIGUSR2);
    sigprocmask(SIG_BLOCK, &wait_for, NULL);
    raise(SIGUSR2);
    struct timespec zero = {0, 0}, short_wait = {0, 10000000};
    siginfo_t info;
    int got = sigtimedwait(&wait_for, &info, &zero);
    printf("same: sigtimedwait takes the pending SIGUSR2: %d, si_signo %d\n", got == SIGUSR2,
           info.si_signo == SIGUSR2);
    errno = 0;
    printf("same: sigtimedwait with nothing pending: %s\n",
           RESULT(sigtimedwait(&wait_for, &info, &short_wait)));
    sigprocmask(SIG_UNBLOCK, &wait_for, NULL);
}

static void info(void)
{
    struct utsname name;
    uname(&name);
    printf("same: uname: %s %s\n", name.sysname, name.machine);
    struct sysinfo system;
    const char *got = RESULT(sysinfo(&system));
    printf("same: sysinfo: %s, mem_unit %u, some RAM %d, processes %d\n", got, system.mem_unit,
           system.totalram > 0, system.procs > 0);
    unsigned char random[16];
    printf("same: getrandom: %ld\n", (long)syscall(SYS_getrandom, random, sizeof random, 0));
}

static void guest_only(void)
{
    printf("guest: pid %d, parent %d, group %d, session %d\n", getpid(), getppid(), getpgrp(),
           getsid(0));
    printf("guest: setsid: %s\n", RESULT(setsid()));
    printf("guest: setpgid(0, 0): %s\n", RESULT(setpgid(0, 0)));
    printf("guest: setuid to another user: %s\n", RESULT(setuid(getuid() + 1)));
    gid_t another = getgid() + 4242;      /* a group the user is not in: a change */
    printf("guest: setgroups: %s\n", RESULT(setgroups(1, &another)));
    gid_t had[64];
    int count = getgroups(64, had);
    printf("guest: setgroups to the groups it has: %s\n",
           count < 0 ? "getgroups failed" : RESULT(setgroups(count, had)));
    struct sched_param param = {.sched_priority = 10};
    /* (musl's sched_setscheduler() never asks the kernel: it says ENOSYS itself) */
    printf("guest: sched_setscheduler(SCHED_FIFO): %s\n",
           RESULT(syscall(SYS_sched_setscheduler, 0, SCHED_FIFO, &param)));
    printf("guest: setpriority -5: %s\n", RESULT(setpriority(PRIO_PROCESS, 0, -5)));
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    sched_getaffinity(0, sizeof cpus, &cpus);
    printf("guest: CPUs: %d\n", CPU_COUNT(&cpus));
    CPU_ZERO(&cpus);
    CPU_SET(1, &cpus);
    printf("guest: affinity to CPU 1 only: %s\n", RESULT(sched_setaffinity(0, sizeof cpus, &cpus)));
    CPU_SET(0, &cpus);
    printf("guest: affinity to CPUs 0 and 1: %s\n", RESULT(sched_setaffinity(0, sizeof cpus, &cpus)));
    unsigned cpu = 99, node = 99;
    syscall(SYS_getcpu, &cpu, &node, NULL);
    printf("guest: getcpu: cpu %u node %u\n", cpu, node);
    printf("guest: membarrier query: %#lx\n", (long)syscall(SYS_membarrier, 0, 0, 0));
    printf("guest: membarrier global: %ld\n", (long)syscall(SYS_membarrier, 1, 0, 0));
    struct timespec epoch = {0, 0};
    printf("guest: clock_settime: %s\n", RESULT(clock_settime(CLOCK_REALTIME, &epoch)));
    struct sysinfo system;
    sysinfo(&system);
    printf("guest: sysinfo: %lu MiB of RAM, %d process\n", system.totalram >> 20, system.procs);
    struct utsname name;
    uname(&name);
    printf("guest: nodename %s\n", name.nodename);
    errno = 0;
    printf("guest: kill(another pid, 0): %s\n", RESULT(kill(getpid() + 1, 0)));
    printf("guest: mlockall: %s\n", RESULT(mlockall(MCL_CURRENT | MCL_FUTURE)));
    struct itimerval timer = {{0, 0}, {1, 0}};
    printf("guest: setitimer(ITIMER_PROF): %s\n", RESULT(setitimer(ITIMER_PROF, &timer, NULL)));
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    identity();
    process_control();
    scheduling();
    limits_and_time();
    sigaltstacks();
    signal_state();
    info();
    if (argc > 1 && strcmp(argv[1], "guest") == 0)
        guest_only();
    return 0;
}
