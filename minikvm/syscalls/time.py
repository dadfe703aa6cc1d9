"""Layer 8 — time system calls: clocks and sleeping.

minikvm maps no vDSO, so the C library asks the kernel for the time with a
real system call; these answer from the host's clocks.
"""

from __future__ import annotations

import errno
import time

from minikvm.errors import SyscallError
from minikvm.syscalls.base import PARTIAL, SUPPORTED, Syscall, signed32

CLOCKS = {
    0: time.CLOCK_REALTIME,
    1: time.CLOCK_MONOTONIC,
    2: time.CLOCK_PROCESS_CPUTIME_ID,
    3: time.CLOCK_THREAD_CPUTIME_ID,
    4: getattr(time, "CLOCK_MONOTONIC_RAW", time.CLOCK_MONOTONIC),
    5: getattr(time, "CLOCK_REALTIME_COARSE", time.CLOCK_REALTIME),
    6: getattr(time, "CLOCK_MONOTONIC_COARSE", time.CLOCK_MONOTONIC),
    7: getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC),
}
TIMER_ABSTIME = 1
NSEC_PER_SEC = 1_000_000_000
CLOCK_REALTIME = 0


def _clock(clock_id: int) -> int:
    clock = CLOCKS.get(signed32(clock_id))
    if clock is None:
        raise SyscallError(errno.EINVAL, f"clock {signed32(clock_id)}")
    return clock


def sys_clock_gettime(proc, clock_id: int, address: int) -> int:
    ns = time.clock_gettime_ns(_clock(clock_id))
    proc.mm.write_struct(address, "<qq", ns // NSEC_PER_SEC, ns % NSEC_PER_SEC)
    return 0


def sys_clock_getres(proc, clock_id: int, address: int) -> int:
    resolution = time.clock_getres(_clock(clock_id))
    if address:
        proc.mm.write_struct(address, "<qq", int(resolution), round(resolution * 1e9) % NSEC_PER_SEC)
    return 0


def sys_gettimeofday(proc, address: int, zone: int) -> int:
    ns = time.time_ns()
    if address:
        proc.mm.write_struct(address, "<qq", ns // NSEC_PER_SEC, ns % NSEC_PER_SEC // 1000)
    if zone:
        proc.mm.write_struct(zone, "<ii", 0, 0)
    return 0


def sys_time(proc, address: int) -> int:
    now = int(time.time())
    if address:
        proc.mm.write_struct(address, "<q", now)
    return now


def _read_timespec(proc, address: int) -> int:
    seconds, nanoseconds = proc.mm.read_struct(address, "<qq")
    if seconds < 0 or not 0 <= nanoseconds < NSEC_PER_SEC:
        raise SyscallError(errno.EINVAL, "bad timespec")
    return seconds * NSEC_PER_SEC + nanoseconds


def sys_nanosleep(proc, request: int, remaining: int) -> int:
    time.sleep(_read_timespec(proc, request) / NSEC_PER_SEC)
    return 0


def sys_clock_nanosleep(proc, clock_id: int, flags: int, request: int, remaining: int) -> int:
    clock = _clock(clock_id)
    duration = _read_timespec(proc, request)
    if signed32(flags) & TIMER_ABSTIME:
        duration -= time.clock_gettime_ns(clock)
    if duration > 0:
        time.sleep(duration / NSEC_PER_SEC)
    return 0


SYSCALLS = [
    Syscall(228, "clock_gettime", sys_clock_gettime, ("int", "ptr")),
    Syscall(229, "clock_getres", sys_clock_getres, ("int", "ptr")),
    Syscall(96, "gettimeofday", sys_gettimeofday, ("ptr", "ptr")),
    Syscall(201, "time", sys_time, ("ptr",)),
    Syscall(35, "nanosleep", sys_nanosleep, ("ptr", "ptr")),
    Syscall(230, "clock_nanosleep", sys_clock_nanosleep, ("int", "hex", "ptr", "ptr")),
]
