"""Layer 8 — synchronisation: futex, for a single-threaded guest.

A futex is a 32-bit word in the program's memory that threads wait on and
wake each other through.  A minikvm guest has one thread, so nobody is
ever waiting and nobody can ever wake a waiter; C libraries still call
``futex`` on the single-threaded paths of locks, ``pthread_once``, stdio
and exit.  What each operation does here, and why:

==================  ============================================================
``FUTEX_WAIT``      ``*uaddr != val``: EAGAIN, as Linux (the lock changed
``FUTEX_WAIT_``     under the caller; it looks again).  Equal: only another
``BITSET``          thread or a signal handler could change it, and there is
                    neither.  With a timeout, the wait is a sleep that ends in
                    ETIMEDOUT (an alarm is still delivered, the time limit
                    still stops it).  Without one it would hang forever — a
                    deadlock, so the run ends at once with a report saying
                    so (``SIGKILL: deadlock: …``, exit 137), rather than
                    spinning or hanging until ``--timeout``.
``FUTEX_WAKE``      0: there is nobody to wake.
``FUTEX_REQUEUE``   0 (nobody to move); ``FUTEX_CMP_REQUEUE`` first checks
                    ``*uaddr == val3`` (EAGAIN otherwise).
``FUTEX_WAKE_OP``   the operation on ``*uaddr2`` is done (the library relies
                    on it), then 0 woken.
others              ENOSYS (PI futexes, ``FUTEX_WAIT_REQUEUE_PI`` …): the
                    libraries' single-threaded paths do not use them.
==================  ============================================================

The word is read and written through the memory manager (``proc.mm``):
EFAULT for a bad pointer, EINVAL when it is not 4-byte aligned.
"""

from __future__ import annotations

import errno
import signal
import time

from minikvm.errors import SyscallError
from minikvm.process import ProcessKilled
from minikvm.syscalls.base import PARTIAL, Syscall, signed32
from minikvm.syscalls.signals import sleep

FUTEX_WAIT = 0
FUTEX_WAKE = 1
FUTEX_REQUEUE = 3
FUTEX_CMP_REQUEUE = 4
FUTEX_WAKE_OP = 5
FUTEX_WAIT_BITSET = 9
FUTEX_WAKE_BITSET = 10
FUTEX_PRIVATE_FLAG = 128
FUTEX_CLOCK_REALTIME = 256
FUTEX_CMD_MASK = ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
FUTEX_WORD_SIZE = 4
NSEC_PER_SEC = 1_000_000_000

# FUTEX_WAKE_OP's encoded operation (linux/futex.h): op<<28 | cmp<<24 | oparg<<12 | cmparg
FUTEX_OP_OPARG_SHIFT = 8        # in op: the argument is a shift count, 1 << oparg
WAKE_OPS = {
    0: lambda old, arg: arg,             # FUTEX_OP_SET
    1: lambda old, arg: old + arg,       # FUTEX_OP_ADD
    2: lambda old, arg: old | arg,       # FUTEX_OP_OR
    3: lambda old, arg: old & ~arg,      # FUTEX_OP_ANDN
    4: lambda old, arg: old ^ arg,       # FUTEX_OP_XOR
}


def _word_address(uaddr: int) -> int:
    if uaddr % FUTEX_WORD_SIZE:
        raise SyscallError(errno.EINVAL, f"futex word {uaddr:#x} is not 4-byte aligned")
    return uaddr


def _read_word(proc, uaddr: int) -> int:
    return proc.mm.read_struct(_word_address(uaddr), "<I")[0]


def _timeout_seconds(proc, address: int, absolute: bool, realtime: bool) -> float | None:
    """How long a wait may last: a relative timespec (FUTEX_WAIT) or an
    absolute one on CLOCK_MONOTONIC / CLOCK_REALTIME (FUTEX_WAIT_BITSET)."""
    if not address:
        return None
    seconds, nanoseconds = proc.mm.read_struct(address, "<qq")
    if seconds < 0 or not 0 <= nanoseconds < NSEC_PER_SEC:
        raise SyscallError(errno.EINVAL, f"bad timespec {{{seconds}, {nanoseconds}}}")
    value = seconds + nanoseconds / NSEC_PER_SEC
    if not absolute:
        return value
    now = time.time() if realtime else time.monotonic()
    return max(0.0, value - now)


def _wait(proc, uaddr: int, value: int, timeout: float | None) -> int:
    if _read_word(proc, uaddr) != value & 0xFFFF_FFFF:
        raise SyscallError(errno.EAGAIN, "the futex word changed")
    if timeout is None:
        raise ProcessKilled(signal.SIGKILL, f"deadlock: FUTEX_WAIT on {uaddr:#x} with no "
                            "timeout, and no other thread to wake it (minikvm runs one thread)")
    sleep(proc, timeout)       # delivers a due alarm; stops early at the time limit
    if proc.machine.vcpu.run_state.immediate_exit:
        raise SyscallError(errno.EINTR, "interrupted: the run is being stopped")
    raise SyscallError(errno.ETIMEDOUT, "nobody woke the futex (one thread)")


def _wake_op(proc, uaddr2: int, val3: int) -> int:
    """Apply FUTEX_WAKE_OP's operation to ``*uaddr2``; nobody is woken."""
    op, oparg = (val3 >> 28) & 0xF, (val3 >> 12) & 0xFFF
    if oparg & 0x800:                    # a 12-bit signed argument
        oparg -= 0x1000
    if op & FUTEX_OP_OPARG_SHIFT:
        op &= ~FUTEX_OP_OPARG_SHIFT
        if not 0 <= oparg <= 31:
            raise SyscallError(errno.EINVAL, f"FUTEX_WAKE_OP shift {oparg}")
        oparg = 1 << oparg
    if op not in WAKE_OPS:
        raise SyscallError(errno.ENOSYS, f"FUTEX_WAKE_OP operation {op}")
    address = _word_address(uaddr2)
    old = _read_word(proc, address)
    proc.mm.write_struct(address, "<I", WAKE_OPS[op](old, oparg) & 0xFFFF_FFFF)
    return 0


def sys_futex(proc, uaddr: int, op: int, val: int, timeout: int, uaddr2: int, val3: int) -> int:
    command = signed32(op) & FUTEX_CMD_MASK
    realtime = bool(signed32(op) & FUTEX_CLOCK_REALTIME)
    if command == FUTEX_WAIT:
        return _wait(proc, uaddr, val, _timeout_seconds(proc, timeout, False, realtime))
    if command == FUTEX_WAIT_BITSET:
        if val3 & 0xFFFF_FFFF == 0:
            raise SyscallError(errno.EINVAL, "empty bitset")
        return _wait(proc, uaddr, val, _timeout_seconds(proc, timeout, True, realtime))
    if command in (FUTEX_WAKE, FUTEX_WAKE_BITSET, FUTEX_REQUEUE):
        _word_address(uaddr)
        return 0
    if command == FUTEX_CMP_REQUEUE:
        if _read_word(proc, uaddr) != val3 & 0xFFFF_FFFF:
            raise SyscallError(errno.EAGAIN, "the futex word changed")
        return 0
    if command == FUTEX_WAKE_OP:
        _word_address(uaddr)
        return _wake_op(proc, uaddr2, val3)
    raise SyscallError(errno.ENOSYS, f"futex operation {command} is not supported")


SYSCALLS = [
    Syscall(202, "futex", sys_futex, ("ptr", "int", "int", "ptr", "ptr", "hex"), PARTIAL,
            "one thread: waits time out or end the run as a deadlock; wakes wake nobody"),
]
