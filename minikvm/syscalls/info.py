"""Layer 8 — system information: uname, sysinfo, getrandom, the scheduler."""

from __future__ import annotations

import errno
import os
import struct
import time

from minikvm.errors import SyscallError
from minikvm.syscalls.base import PARTIAL, SUPPORTED, Syscall, signed32

UTSNAME_FIELD = 65  # each field of struct utsname is char[65]
GRND_NONBLOCK = 1
GRND_RANDOM = 2
GRND_INSECURE = 4
MAX_RANDOM = 33554431  # getrandom returns at most this many bytes per call


def sys_uname(proc, address: int) -> int:
    """The host's kernel release, so libc's version checks pass; the node
    name is the sandbox's own."""
    host = os.uname()
    fields = ["Linux", "minikvm", host.release, host.version, "x86_64", "(none)"]
    proc.mm.write(address, b"".join(os.fsencode(f)[:UTSNAME_FIELD - 1].ljust(UTSNAME_FIELD, b"\0")
                                    for f in fields))
    return 0


def sys_getrandom(proc, buffer: int, count: int, flags: int) -> int:
    if signed32(flags) & ~(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE):
        raise SyscallError(errno.EINVAL, "unknown flags")
    count = min(count, MAX_RANDOM)
    proc.mm.write(buffer, proc.random(count))
    return count


def sys_sysinfo(proc, address: int) -> int:
    total = proc.mm.user_pool.end - proc.mm.user_pool.start
    free = total - proc.mm.user_pool.used
    uptime = int(time.monotonic())
    proc.mm.write(address, struct.pack("<q3QQQQQQHH4xQQI", uptime, 0, 0, 0, total, free, 0, 0,
                                       0, 0, 1, 0, 0, 0, 1).ljust(112, b"\0"))
    return 0


def sys_sched_getaffinity(proc, pid: int, size: int, mask: int) -> int:
    """One CPU: the guest has one vCPU.  Returns the bytes written, like Linux."""
    if size < 8:
        raise SyscallError(errno.EINVAL, "mask too small")
    proc.mm.write(mask, struct.pack("<Q", 1))
    return 8


def sys_sched_yield(proc) -> int:
    return 0


SYSCALLS = [
    Syscall(63, "uname", sys_uname, ("ptr",)),
    Syscall(318, "getrandom", sys_getrandom, ("ptr", "uint", "hex")),
    Syscall(99, "sysinfo", sys_sysinfo, ("ptr",), PARTIAL, "memory from the guest's limit; no load"),
    Syscall(204, "sched_getaffinity", sys_sched_getaffinity, ("int", "uint", "ptr")),
    Syscall(24, "sched_yield", sys_sched_yield),
]
