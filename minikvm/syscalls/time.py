"""Layer 6 — time system calls: clocks, sleeping, the alarm, CPU time.

minikvm maps no vDSO, so the C library asks the kernel for the time with a
real system call; these answer from the host's clocks.  The program may
read the clocks but not set them.

Sleeping goes through :func:`minikvm.syscalls.signals.sleep`, which ends
early when the run's time limit is reached and delivers the alarm
(``alarm``, ``setitimer(ITIMER_REAL)``) when it falls due.  The alarm
cannot interrupt a program that is computing rather than waiting — there
is no timer interrupt into the guest — so it fires at the next sleep or
the next system call after its deadline (the dispatcher compares the
deadline after every call while an alarm is set).  A sleep a signal's
handler interrupts returns EINTR with the time left, as on Linux.

CPU times (``times``, ``getrusage``, the CPU-time clocks) are the minikvm
host process's: the guest's own time and the host's work on its behalf.

Under ``--deterministic`` every clock, CPU time included, is the process's
:class:`~minikvm.process.determinism.VirtualClock` instead: time counted in
system calls and sleeps (:func:`now_ns`, :func:`cpu_seconds`).
"""

from __future__ import annotations

import errno
import os
import resource
import time
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import NSEC_PER_SEC, USEC_PER_SEC
from minikvm.process import threads
from minikvm.process.determinism import CLOCK_MONOTONIC, CLOCK_REALTIME
from minikvm.process.stack import CLOCK_TICKS
from minikvm.syscalls.base import PARTIAL, REFUSED, Syscall, signed32
from minikvm.syscalls.signals import deliver_due_alarm, sleep
from minikvm.syscalls.timeouts import read_timespec_ns, split_seconds, timeval_seconds

if TYPE_CHECKING:
    from minikvm.process.process import Process

#: Linux clock ids (linux/time.h) -> the host clock that answers for them.
CLOCKS = {
    0: time.CLOCK_REALTIME,
    1: time.CLOCK_MONOTONIC,
    2: time.CLOCK_PROCESS_CPUTIME_ID,
    3: time.CLOCK_THREAD_CPUTIME_ID,
    4: getattr(time, "CLOCK_MONOTONIC_RAW", time.CLOCK_MONOTONIC),
    5: getattr(time, "CLOCK_REALTIME_COARSE", time.CLOCK_REALTIME),
    6: getattr(time, "CLOCK_MONOTONIC_COARSE", time.CLOCK_MONOTONIC),
    7: getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC),
    8: time.CLOCK_REALTIME,                                        # CLOCK_REALTIME_ALARM
    9: getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC),     # CLOCK_BOOTTIME_ALARM
    11: getattr(time, "CLOCK_TAI", time.CLOCK_REALTIME),          # CLOCK_TAI
}
TIMER_ABSTIME = 1
TIMESPEC_FORMAT = "<qq"          # struct timespec: tv_sec, tv_nsec
TIMEVAL_FORMAT = "<qq"           # struct timeval: tv_sec, tv_usec
ITIMERVAL_FORMAT = "<qqqq"       # struct itimerval: it_interval, it_value (timevals)
TMS_FORMAT = "<qqqq"             # struct tms: utime, stime, cutime, cstime (clock ticks)
#: struct rusage: ru_utime, ru_stime (timevals), then 14 longs from ru_maxrss on.
RUSAGE_FORMAT = "<qqqq14q"
ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF = 0, 1, 2
RUSAGE_SELF, RUSAGE_CHILDREN, RUSAGE_THREAD = 0, -1, 1
KIB = 1024


def _clock(clock_id: int) -> int:
    clock = CLOCKS.get(signed32(clock_id))
    if clock is None:
        raise SyscallError(errno.EINVAL, f"clock {signed32(clock_id)} is not one minikvm knows")
    return clock


#: The clocks the vDSO reads from its line (clock id -> index in
#: :meth:`GuestClock.read <minikvm.machine.guest_clock.GuestClock.read>`).
VDSO_CLOCKS = {1: 0, 0: 1, 7: 2}   # MONOTONIC, REALTIME, BOOTTIME


def _vdso_time_ns(proc: Process, clock_id: int) -> int:
    """What the vDSO would answer now for *clock_id*, or 0 when it does not
    read that clock itself (the system calls then need no agreeing with it)."""
    clock = proc.machine.guest_clock
    index = VDSO_CLOCKS.get(clock_id)
    if clock is None or index is None:
        return 0
    values = clock.read()
    return values[index] if values is not None else 0


def now_ns(proc: Process, clock_id: int) -> int:
    """What clock *clock_id* reads now for *proc*: the host's clock — no
    earlier than the vDSO's own reading of the same clock, so that mixing
    the two never goes back; the CPU-time clocks measure the minikvm host
    process (guest and emulation together) — or, under ``--deterministic``,
    the virtual clock.  EINVAL for a clock id minikvm does not know."""
    clock = _clock(clock_id)
    if proc.determinism is not None:
        virtual = proc.determinism.clock.read_ns(signed32(clock_id))
        if virtual is not None:
            return virtual
    return max(time.clock_gettime_ns(clock), _vdso_time_ns(proc, signed32(clock_id)))


def cpu_seconds(proc: Process) -> tuple[float, float]:
    """(user, system) CPU seconds of the process: the host process's, or
    under ``--deterministic`` the virtual clock's (all of it user time)."""
    if proc.determinism is not None:
        return proc.determinism.clock.cpu_ns / NSEC_PER_SEC, 0.0
    host = os.times()
    return host.user, host.system


def sys_clock_gettime(proc: Process, clock_id: int, address: int) -> int:
    """clock_gettime(2): :func:`now_ns`."""
    ns = now_ns(proc, clock_id)
    proc.mm.write_struct(address, TIMESPEC_FORMAT, ns // NSEC_PER_SEC, ns % NSEC_PER_SEC)
    return 0


def sys_clock_getres(proc: Process, clock_id: int, address: int) -> int:
    """clock_getres(2): the resolution of a host clock."""
    resolution_ns = round(time.clock_getres(_clock(clock_id)) * NSEC_PER_SEC)
    if address:
        proc.mm.write_struct(address, TIMESPEC_FORMAT, resolution_ns // NSEC_PER_SEC,
                             resolution_ns % NSEC_PER_SEC)
    return 0


def sys_clock_settime(proc: Process, clock_id: int, address: int) -> int:
    """clock_settime(2): refused with EPERM: the host's clock is not the
    sandbox's to set."""
    _clock(clock_id)
    raise SyscallError(errno.EPERM, "the sandbox cannot set the host's clock")


def sys_settimeofday(proc: Process, address: int, zone: int) -> int:
    """settimeofday(2): refused with EPERM, as :func:`sys_clock_settime`."""
    raise SyscallError(errno.EPERM, "the sandbox cannot set the host's clock")


def sys_gettimeofday(proc: Process, address: int, zone: int) -> int:
    """gettimeofday(2): the host's wall clock (no earlier than the vDSO's);
    the time zone is UTC, no DST."""
    ns = now_ns(proc, CLOCK_REALTIME)
    if address:
        proc.mm.write_struct(address, TIMEVAL_FORMAT, ns // NSEC_PER_SEC,
                             ns % NSEC_PER_SEC // 1000)
    if zone:
        proc.mm.write_struct(zone, "<ii", 0, 0)  # struct timezone: UTC, no DST
    return 0


def sys_time(proc: Process, address: int) -> int:
    """time(2): the host's wall clock (the virtual one under
    ``--deterministic``), in seconds."""
    now = now_ns(proc, CLOCK_REALTIME) // NSEC_PER_SEC
    if address:
        proc.mm.write_struct(address, "<q", now)
    return now


# -- sleeping ---------------------------------------------------------------------
def _sleep(proc: Process, seconds: float) -> None:
    """Sleep the calling thread; with other threads, they run meanwhile.
    Under ``--deterministic`` a whole sleep moves the virtual clock on by
    its length (with threads, when its deadline passes)."""
    virtual_ns = round(seconds * NSEC_PER_SEC)
    if len(proc.threads) == 1:
        sleep(proc, seconds)
        if proc.determinism is not None:
            proc.determinism.clock.advance(virtual_ns)
    else:
        threads.sleep_until(proc, time.monotonic() + seconds, lambda s: sleep(proc, s),
                            virtual_ns=virtual_ns)


def sys_nanosleep(proc: Process, request: int, remaining: int) -> int:
    """nanosleep(2): sleep (other guest threads run meanwhile); a handler that
    interrupts it gets EINTR and the time left."""
    _interruptible_sleep(proc, read_timespec_ns(proc, request), remaining)
    return 0


def _interruptible_sleep(proc: Process, duration: int, remaining: int) -> None:
    """Sleep *duration* ns; when a signal's handler interrupts it (EINTR),
    write the time left to *remaining* (if not 0), as Linux does."""
    start = time.monotonic_ns()
    try:
        _sleep(proc, duration / NSEC_PER_SEC)
    except SyscallError as error:
        if error.errno == errno.EINTR and remaining:
            left = max(duration - (time.monotonic_ns() - start), 0)
            proc.mm.write_struct(remaining, TIMESPEC_FORMAT, *divmod(left, NSEC_PER_SEC))
        raise


def sys_clock_nanosleep(proc: Process, clock_id: int, flags: int, request: int,
                        remaining: int) -> int:
    """clock_nanosleep(2): :func:`sys_nanosleep` on a clock, relative or until an
    absolute time (``TIMER_ABSTIME``)."""
    clock = _clock(clock_id)
    if clock == time.CLOCK_THREAD_CPUTIME_ID:
        raise SyscallError(errno.EINVAL, "cannot sleep on the thread's own CPU clock")
    duration = read_timespec_ns(proc, request)
    if signed32(flags) & TIMER_ABSTIME:
        duration -= now_ns(proc, clock_id)
    if duration <= 0:
        return 0
    if clock == time.CLOCK_PROCESS_CPUTIME_ID:
        # The only thread is the one sleeping: its CPU clock stands still,
        # so, as on Linux, only a signal (or the time limit) ends the sleep.
        sleep(proc, None)
    else:
        _interruptible_sleep(proc, duration, 0 if signed32(flags) & TIMER_ABSTIME else remaining)
    return 0


# -- the alarm: alarm, setitimer, getitimer ---------------------------------------------
def _remaining(proc: Process) -> float:
    """Seconds until the alarm, 0 when none is set."""
    if proc.alarm_deadline is None:
        return 0.0
    return max(proc.alarm_deadline - time.monotonic(), 0.0)


def _set_alarm(proc: Process, value: float, interval: float) -> None:
    proc.alarm_deadline = time.monotonic() + value if value > 0 else None
    proc.alarm_interval = interval if value > 0 else 0.0
    proc.signal_work = True   # system-call returns now compare against the deadline


def sys_alarm(proc: Process, seconds: int) -> int:
    """Returns the seconds left of the previous alarm (rounded like Linux:
    to the nearest second, and at least 1 if one was pending)."""
    deliver_due_alarm(proc)
    left = _remaining(proc)
    previous = max(round(left), 1) if proc.alarm_deadline is not None else 0
    _set_alarm(proc, float(seconds & 0xFFFF_FFFF), 0.0)
    return previous


def _check_itimer(which: int) -> None:
    which = signed32(which)
    if which in (ITIMER_VIRTUAL, ITIMER_PROF):
        raise SyscallError(errno.EINVAL, "only ITIMER_REAL is supported (the guest's CPU "
                                         "time is not metered)")
    if which != ITIMER_REAL:
        raise SyscallError(errno.EINVAL, f"timer {which}")


def _write_itimerval(proc: Process, address: int, interval: float, value: float) -> None:
    proc.mm.write_struct(address, ITIMERVAL_FORMAT, *split_seconds(interval, USEC_PER_SEC),
                         *split_seconds(value, USEC_PER_SEC))


def sys_getitimer(proc: Process, which: int, address: int) -> int:
    """getitimer(2): the real-time interval timer; ``ITIMER_VIRTUAL`` and
    ``ITIMER_PROF`` are EINVAL (the guest's CPU time is not metered)."""
    _check_itimer(which)
    deliver_due_alarm(proc)
    _write_itimerval(proc, address, proc.alarm_interval, _remaining(proc))
    return 0


def sys_setitimer(proc: Process, which: int, new: int, old: int) -> int:
    """setitimer(2): the real-time interval timer, delivered as ``alarm``'s
    SIGALRM; values are checked and saturated as Linux does."""
    _check_itimer(which)
    deliver_due_alarm(proc)
    request = proc.mm.read_struct(new, ITIMERVAL_FORMAT) if new else (0, 0, 0, 0)
    interval = timeval_seconds(request[0], request[1], "it_interval")
    value = timeval_seconds(request[2], request[3], "it_value")
    if old:
        _write_itimerval(proc, old, proc.alarm_interval, _remaining(proc))
    _set_alarm(proc, value, interval)
    return 0


# -- CPU time ----------------------------------------------------------------------------
def sys_times(proc: Process, address: int) -> int:
    """CPU time in clock ticks (:func:`cpu_seconds`); the result is ticks
    since an arbitrary point (the monotonic clock's start)."""
    user, system = cpu_seconds(proc)
    if address:
        proc.mm.write_struct(address, TMS_FORMAT, int(user * CLOCK_TICKS),
                             int(system * CLOCK_TICKS), 0, 0)
    return now_ns(proc, CLOCK_MONOTONIC) * CLOCK_TICKS // NSEC_PER_SEC


def _timeval(seconds: float) -> list[int]:
    micro = int(seconds * USEC_PER_SEC)
    return [micro // USEC_PER_SEC, micro % USEC_PER_SEC]


def sys_getrusage(proc: Process, who: int, address: int) -> int:
    """The host process's CPU times and faults; the peak resident size is
    the guest's own (its peak of allocated guest memory)."""
    who = signed32(who)
    if who not in (RUSAGE_SELF, RUSAGE_CHILDREN, RUSAGE_THREAD):
        raise SyscallError(errno.EINVAL, f"who {who}")
    fields = [0] * 18
    if who != RUSAGE_CHILDREN and proc.determinism is not None:
        fields[0:2] = _timeval(cpu_seconds(proc)[0])         # no faults nor switches
        fields[4] = proc.mm.user_pool.peak // KIB
    elif who != RUSAGE_CHILDREN:
        host = resource.getrusage(resource.RUSAGE_SELF)
        fields[0:4] = _timeval(host.ru_utime) + _timeval(host.ru_stime)
        fields[4] = proc.mm.user_pool.peak // KIB                       # ru_maxrss
        fields[8], fields[9] = host.ru_minflt, host.ru_majflt
        fields[16], fields[17] = host.ru_nvcsw, host.ru_nivcsw
    proc.mm.write_struct(address, RUSAGE_FORMAT, *fields)
    return 0


HOST_CPU_TIME = "CPU time of the minikvm host process (guest plus its emulation)"

SYSCALLS = [
    Syscall(228, "clock_gettime", sys_clock_gettime, ("int", "ptr"), PARTIAL,
            "CPU-time clocks report the minikvm host process"),
    Syscall(229, "clock_getres", sys_clock_getres, ("int", "ptr")),
    Syscall(227, "clock_settime", sys_clock_settime, ("int", "ptr"), REFUSED,
            "the host's clock is not the sandbox's to set", errno.EPERM),
    Syscall(164, "settimeofday", sys_settimeofday, ("ptr", "ptr"), REFUSED,
            "the host's clock is not the sandbox's to set", errno.EPERM),
    Syscall(96, "gettimeofday", sys_gettimeofday, ("ptr", "ptr")),
    Syscall(201, "time", sys_time, ("ptr",)),
    Syscall(35, "nanosleep", sys_nanosleep, ("ptr", "ptr")),
    Syscall(230, "clock_nanosleep", sys_clock_nanosleep, ("int", "hex", "ptr", "ptr")),
    Syscall(37, "alarm", sys_alarm, ("uint",), PARTIAL,
            "SIGALRM is delivered at system calls and while the program sleeps or waits, "
            "not while it computes without system calls"),
    Syscall(36, "getitimer", sys_getitimer, ("int", "ptr"), PARTIAL,
            "ITIMER_REAL only; ITIMER_VIRTUAL and ITIMER_PROF give EINVAL"),
    Syscall(38, "setitimer", sys_setitimer, ("int", "ptr", "ptr"), PARTIAL,
            "ITIMER_REAL only, delivered like alarm's; ITIMER_VIRTUAL and ITIMER_PROF give EINVAL"),
    Syscall(100, "times", sys_times, ("ptr",), PARTIAL, HOST_CPU_TIME),
    Syscall(98, "getrusage", sys_getrusage, ("int", "ptr"), PARTIAL,
            HOST_CPU_TIME + "; ru_maxrss is the guest's peak memory; no children"),
]
