"""Layer 6 — system information: uname, sysinfo, getrandom, the scheduler.

The guest is a one-CPU machine whose RAM is its memory limit: sysinfo,
the affinity mask, getcpu and the scheduler calls all describe that
machine, not the host.  The scheduler's knobs are accepted where an
unprivileged Linux process could turn them and change nothing — the guest
has its vCPU to itself.
"""

from __future__ import annotations

import errno
import os
import struct
import time
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.process import threads
from minikvm.process.determinism import KERNEL_VERSION
from minikvm.process.fdtable import fill_views
from minikvm.syscalls.base import PARTIAL, Syscall, signed32
from minikvm.syscalls.signals import sleep

if TYPE_CHECKING:
    from minikvm.process.process import Process

#: The sandbox's host name: uname's nodename, /proc/sys/kernel/hostname.
NODE_NAME = "minikvm"
UTSNAME_FIELD = 65  # each field of struct utsname is char[65]
GRND_NONBLOCK = 1
GRND_RANDOM = 2
GRND_INSECURE = 4
MAX_RANDOM = 33554431  # getrandom returns at most this many bytes per call

#: struct sysinfo (linux/sysinfo.h), 112 bytes on x86-64:
#: uptime, loads[3], totalram, freeram, sharedram, bufferram, totalswap,
#: freeswap, procs (u16), 6 bytes of padding, totalhigh, freehigh, mem_unit.
SYSINFO_FORMAT = "<q3Q6QH6xQQI4x"

#: The one CPU the guest has, as an affinity mask; masks are arrays of longs.
ONLY_CPU = 1
CPU_MASK_UNIT = 8
# Scheduling policies (linux/sched.h)
SCHED_OTHER, SCHED_FIFO, SCHED_RR, SCHED_BATCH, SCHED_IDLE = 0, 1, 2, 3, 5
REAL_TIME_POLICIES = (SCHED_FIFO, SCHED_RR)
NORMAL_POLICIES = (SCHED_OTHER, SCHED_BATCH, SCHED_IDLE)
REAL_TIME_PRIORITY_MIN, REAL_TIME_PRIORITY_MAX = 1, 99
#: SCHED_OTHER's round-robin quantum that sched_rr_get_interval reports (ns).
TIMESLICE_NS = 100_000_000


def sys_uname(proc: Process, address: int) -> int:
    """The host's kernel release, so libc's version checks pass; the node
    name is the sandbox's own."""
    host = os.uname()
    version = host.version if proc.determinism is None else KERNEL_VERSION
    fields = ["Linux", NODE_NAME, host.release, version, "x86_64", "(none)"]
    proc.mm.write(address, b"".join(os.fsencode(f)[:UTSNAME_FIELD - 1].ljust(UTSNAME_FIELD, b"\0")
                                    for f in fields))
    return 0


def sys_getrandom(proc: Process, buffer: int, count: int, flags: int) -> int:
    """getrandom(2): random bytes from the host's getrandom.

    The buffer is checked before any byte is made (EFAULT), and one call
    gives at most ``MAX_RANDOM`` bytes, as Linux caps it."""
    if signed32(flags) & ~(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE):
        raise SyscallError(errno.EINVAL, f"unknown getrandom flags {flags:#x}")
    if signed32(flags) & GRND_RANDOM and signed32(flags) & GRND_INSECURE:
        raise SyscallError(errno.EINVAL, "GRND_RANDOM and GRND_INSECURE together")
    count = min(count, MAX_RANDOM)
    # The buffer is checked before any byte is made: a bad pointer with a
    # huge count is EFAULT at once, not 32 MiB of host randomness first.
    return fill_views(proc.mm.views(buffer, count, write=True), proc.random)


def sys_sysinfo(proc: Process, address: int) -> int:
    """The guest's memory limit as its RAM, one process, no swap, no load;
    the uptime is the sandbox's (since its process was made), never the host's."""
    pool = proc.mm.user_pool
    total = pool.end - pool.start
    free = total - pool.used
    uptime = int(proc.determinism.clock.uptime_seconds() if proc.determinism is not None
                 else time.monotonic() - proc.start_time)   # the sandbox's, as /proc/uptime
    loads = (0, 0, 0)
    proc.mm.write_struct(address, SYSINFO_FORMAT, uptime, *loads, total, free, 0, 0, 0, 0,
                         1, 0, 0, 1)
    return 0


# -- the one CPU -----------------------------------------------------------------
def _only_self(proc: Process, pid: int) -> None:
    pid = signed32(pid)
    if pid not in (0, proc.pid) and pid not in proc.threads.threads:   # or one thread
        raise SyscallError(errno.ESRCH, f"no process {pid} in this sandbox")


def sys_sched_getaffinity(proc: Process, pid: int, size: int, mask: int) -> int:
    """One CPU: the guest has one vCPU.  Returns the bytes written, like Linux.
    /proc/cpuinfo, /proc/stat and /proc/<pid>/status list the CPUs of the
    same mask (:func:`minikvm.syscalls.proc_machine.guest_cpus`)."""
    _only_self(proc, pid)
    if size < CPU_MASK_UNIT or size % CPU_MASK_UNIT:
        raise SyscallError(errno.EINVAL, f"mask size {size} is not a positive multiple of 8")
    proc.mm.write(mask, struct.pack("<Q", ONLY_CPU))
    return CPU_MASK_UNIT


def sys_sched_setaffinity(proc: Process, pid: int, size: int, mask: int) -> int:
    """Accepted when the mask includes CPU 0, the only one there is."""
    _only_self(proc, pid)
    wanted = proc.mm.read(mask, min(size, CPU_MASK_UNIT)) if size else b""
    if not wanted or not wanted[0] & ONLY_CPU:
        raise SyscallError(errno.EINVAL, "the mask does not include CPU 0, the only CPU")
    return 0


def sys_getcpu(proc: Process, cpu: int, node: int, cache: int) -> int:
    """getcpu(2): always CPU 0 and node 0 (the guest has one vCPU)."""
    if cpu:
        proc.mm.write_struct(cpu, "<I", 0)
    if node:
        proc.mm.write_struct(node, "<I", 0)
    return 0


def sys_sched_yield(proc: Process) -> int:
    """The next runnable thread runs first (see :mod:`minikvm.process.threads`)."""
    return threads.yield_cpu(proc, lambda seconds: sleep(proc, seconds))


def sys_sched_getscheduler(proc: Process, pid: int) -> int:
    """sched_getscheduler(2): always ``SCHED_OTHER``; ESRCH for another process."""
    _only_self(proc, pid)
    return SCHED_OTHER


def sys_sched_setscheduler(proc: Process, pid: int, policy: int, param: int) -> int:
    """Normal policies with priority 0 are accepted; real-time needs privilege."""
    _only_self(proc, pid)
    policy = signed32(policy)
    (priority,) = proc.mm.read_struct(param, "<i")
    if policy in REAL_TIME_POLICIES:
        raise SyscallError(errno.EPERM, "real-time scheduling needs privilege")
    if policy not in NORMAL_POLICIES or priority != 0:
        raise SyscallError(errno.EINVAL, f"policy {policy} with priority {priority}")
    return 0


def sys_sched_getparam(proc: Process, pid: int, param: int) -> int:
    """sched_getparam(2): priority 0 (``SCHED_OTHER``); ESRCH for another process."""
    _only_self(proc, pid)
    proc.mm.write_struct(param, "<i", 0)
    return 0


def sys_sched_setparam(proc: Process, pid: int, param: int) -> int:
    """sched_setparam(2): only priority 0 (``SCHED_OTHER``) is accepted (EINVAL)."""
    _only_self(proc, pid)
    (priority,) = proc.mm.read_struct(param, "<i")
    if priority != 0:
        raise SyscallError(errno.EINVAL, f"priority {priority} under SCHED_OTHER")
    return 0


def sys_sched_get_priority_max(proc: Process, policy: int) -> int:
    """sched_get_priority_max(2): the highest priority of a policy, as Linux's."""
    return _priority_range(policy)[1]


def sys_sched_get_priority_min(proc: Process, policy: int) -> int:
    """sched_get_priority_min(2): the lowest priority of a policy, as Linux's."""
    return _priority_range(policy)[0]


def _priority_range(policy: int) -> tuple[int, int]:
    policy = signed32(policy)
    if policy in REAL_TIME_POLICIES:
        return REAL_TIME_PRIORITY_MIN, REAL_TIME_PRIORITY_MAX
    if policy in NORMAL_POLICIES:
        return 0, 0
    raise SyscallError(errno.EINVAL, f"scheduling policy {policy}")


def sys_sched_rr_get_interval(proc: Process, pid: int, address: int) -> int:
    """sched_rr_get_interval(2): a fixed time slice of 100 ms."""
    _only_self(proc, pid)
    proc.mm.write_struct(address, "<qq", 0, TIMESLICE_NS)
    return 0


ONE_CPU = "the guest has one CPU and its vCPU to itself"

SYSCALLS = [
    Syscall(63, "uname", sys_uname, ("ptr",), PARTIAL,
            "the host's release and version; node name \"minikvm\""),
    Syscall(318, "getrandom", sys_getrandom, ("ptr", "uint", "hex")),
    Syscall(99, "sysinfo", sys_sysinfo, ("ptr",), PARTIAL,
            "memory from the guest's limit; one process; no load, no swap"),
    Syscall(204, "sched_getaffinity", sys_sched_getaffinity, ("int", "uint", "ptr"), PARTIAL,
            ONE_CPU),
    Syscall(203, "sched_setaffinity", sys_sched_setaffinity, ("int", "uint", "ptr"), PARTIAL,
            "accepted when the mask includes CPU 0, the only CPU"),
    Syscall(309, "getcpu", sys_getcpu, ("ptr", "ptr", "ptr"), PARTIAL, "always CPU 0, node 0"),
    Syscall(24, "sched_yield", sys_sched_yield),
    Syscall(145, "sched_getscheduler", sys_sched_getscheduler, ("int",)),
    Syscall(144, "sched_setscheduler", sys_sched_setscheduler, ("int", "int", "ptr"), PARTIAL,
            "normal policies accepted and ignored; real-time ones EPERM"),
    Syscall(143, "sched_getparam", sys_sched_getparam, ("int", "ptr")),
    Syscall(142, "sched_setparam", sys_sched_setparam, ("int", "ptr"), PARTIAL,
            "priority 0 only (SCHED_OTHER)"),
    Syscall(146, "sched_get_priority_max", sys_sched_get_priority_max, ("int",)),
    Syscall(147, "sched_get_priority_min", sys_sched_get_priority_min, ("int",)),
    Syscall(148, "sched_rr_get_interval", sys_sched_rr_get_interval, ("int", "ptr"), PARTIAL,
            "a fixed 100 ms"),
]
