"""Layer 6 — synchronisation: futex, the one call every thread library waits with.

A futex is a 32-bit word in the program's memory.  A thread that finds a
lock taken asks the kernel to put it to sleep *if the word still holds the
value it saw* (so a wake between its look and its sleep is not lost);
whoever releases the lock wakes a number of sleepers.  Waiting threads are
kept in :mod:`minikvm.process.threads`, keyed by the word's address — the guest has
one address space, so ``FUTEX_PRIVATE_FLAG`` changes nothing.

==========================  ======================================================
``FUTEX_WAIT``              ``*uaddr != val``: EAGAIN (the lock changed under the
``FUTEX_WAIT_BITSET``       caller; it looks again).  Equal: the thread waits and
                            another runs.  It wakes with 0 when woken, ETIMEDOUT at
                            its timeout — relative for FUTEX_WAIT, absolute for
                            FUTEX_WAIT_BITSET, on CLOCK_MONOTONIC or, with
                            ``FUTEX_CLOCK_REALTIME``, CLOCK_REALTIME.  When no
                            thread could ever wake it (every thread waits, none
                            with a timeout) the run ends at once with a report
                            (``SIGKILL: deadlock: …``, exit 137) rather than
                            hanging until ``--timeout``.
``FUTEX_WAKE``              wakes up to ``val`` waiters of ``uaddr``, first come
``FUTEX_WAKE_BITSET``       first served (only those whose wait bitset meets
                            ``val3``); returns how many.
``FUTEX_REQUEUE``           wakes ``val`` waiters and moves up to ``val2`` (the
``FUTEX_CMP_REQUEUE``       timeout argument) of the others to wait on ``uaddr2``;
                            CMP_REQUEUE first checks ``*uaddr == val3`` (EAGAIN).
``FUTEX_WAKE_OP``           changes ``*uaddr2`` with the encoded operation, wakes
                            ``val`` waiters of ``uaddr``, and ``val2`` of
                            ``uaddr2`` if the old value passes the encoded test.
others                      ENOSYS: priority-inheritance futexes
                            (``FUTEX_LOCK_PI`` …); glibc and musl use them only
                            for PTHREAD_PRIO_INHERIT mutexes.
==========================  ======================================================

The word is read and written through the memory manager (``proc.mm``):
EFAULT for a bad pointer, EINVAL when it is not 4-byte aligned.
"""

from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import NSEC_PER_SEC
from minikvm.process import threads
from minikvm.syscalls.base import PARTIAL, Syscall, signed32
from minikvm.syscalls.signals import sleep
from minikvm.syscalls.timeouts import read_timespec_ns

if TYPE_CHECKING:
    from minikvm.process.process import Process

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

# FUTEX_WAKE_OP's encoded operation (linux/futex.h): op<<28 | cmp<<24 | oparg<<12 | cmparg
FUTEX_OP_OPARG_SHIFT = 8        # in op: the argument is a shift count, 1 << oparg
WAKE_OPS = {
    0: lambda old, arg: arg,             # FUTEX_OP_SET
    1: lambda old, arg: old + arg,       # FUTEX_OP_ADD
    2: lambda old, arg: old | arg,       # FUTEX_OP_OR
    3: lambda old, arg: old & ~arg,      # FUTEX_OP_ANDN
    4: lambda old, arg: old ^ arg,       # FUTEX_OP_XOR
}
WAKE_OP_TESTS = {
    0: lambda old, arg: old == arg,      # FUTEX_OP_CMP_EQ
    1: lambda old, arg: old != arg,      # FUTEX_OP_CMP_NE
    2: lambda old, arg: old < arg,       # FUTEX_OP_CMP_LT
    3: lambda old, arg: old <= arg,      # FUTEX_OP_CMP_LE
    4: lambda old, arg: old > arg,       # FUTEX_OP_CMP_GT
    5: lambda old, arg: old >= arg,      # FUTEX_OP_CMP_GE
}


def _word_address(uaddr: int) -> int:
    if uaddr % FUTEX_WORD_SIZE:
        raise SyscallError(errno.EINVAL, f"futex word {uaddr:#x} is not 4-byte aligned")
    return uaddr


def _read_word(proc: Process, uaddr: int) -> int:
    return proc.mm.read_struct(_word_address(uaddr), "<I")[0]


def _deadline(proc: Process, address: int, absolute: bool,
              realtime: bool) -> tuple[float | None, int]:
    """When a wait gives up, on the host's ``time.monotonic()``, from a
    relative timespec (FUTEX_WAIT) or an absolute one on CLOCK_MONOTONIC or
    CLOCK_REALTIME (FUTEX_WAIT_BITSET) — None without a timeout — and how
    long that is in ns on the guest's clock (what a ``--deterministic``
    timeout moves the virtual clock by; an absolute time is then on the
    virtual clock too)."""
    if not address:
        return None, 0
    value = read_timespec_ns(proc, address)
    now = time.monotonic()
    if not absolute:
        return now + value / NSEC_PER_SEC, value
    if proc.determinism is not None:
        virtual = proc.determinism.clock
        left = max(0, value - (virtual.realtime_ns() if realtime else virtual.monotonic_ns()))
        return now + left / NSEC_PER_SEC, left
    if realtime:
        return now + (value / NSEC_PER_SEC - time.time()), 0
    return value / NSEC_PER_SEC, 0


def _wait(proc: Process, uaddr: int, value: int, bitset: int,
          deadline: tuple[float | None, int]) -> int:
    if _read_word(proc, uaddr) != value & 0xFFFF_FFFF:
        raise SyscallError(errno.EAGAIN, "the futex word changed")
    return threads.wait_on_futex(proc, uaddr, bitset, deadline[0],
                                 lambda seconds: sleep(proc, seconds), virtual_ns=deadline[1])


def _count(value: int) -> int:
    """A wake count: Linux wakes at least one, whatever the caller asks."""
    return max(signed32(value), 1)


def _wake_op(proc: Process, uaddr: int, count: int, uaddr2: int, count2: int, val3: int) -> int:
    """FUTEX_WAKE_OP: ``old = *uaddr2; *uaddr2 = old OP oparg``; wake *count*
    waiters of *uaddr*, and *count2* of *uaddr2* if ``old CMP cmparg``."""
    op, test = (val3 >> 28) & 0xF, (val3 >> 24) & 0xF
    oparg, cmparg = (val3 >> 12) & 0xFFF, val3 & 0xFFF
    if oparg & 0x800:                    # 12-bit signed arguments
        oparg -= 0x1000
    if cmparg & 0x800:
        cmparg -= 0x1000
    if op & FUTEX_OP_OPARG_SHIFT:
        op &= ~FUTEX_OP_OPARG_SHIFT
        if not 0 <= oparg <= 31:
            raise SyscallError(errno.EINVAL, f"FUTEX_WAKE_OP shift {oparg}")
        oparg = 1 << oparg
    if op not in WAKE_OPS or test not in WAKE_OP_TESTS:
        raise SyscallError(errno.ENOSYS, f"FUTEX_WAKE_OP operation {op}, test {test}")
    _word_address(uaddr)
    address = _word_address(uaddr2)
    old = _read_word(proc, address)
    proc.mm.write_struct(address, "<I", WAKE_OPS[op](old, oparg) & 0xFFFF_FFFF)
    woken = threads.wake(proc, uaddr, count)
    if WAKE_OP_TESTS[test](signed32(old), cmparg):
        woken += threads.wake(proc, address, count2)
    return woken


def sys_futex(proc: Process, uaddr: int, op: int, val: int, timeout: int, uaddr2: int,
              val3: int) -> int:
    """futex(2): wait on and wake guest memory words, across the guest's threads.

    WAIT, WAKE, their BITSET forms, REQUEUE, CMP_REQUEUE and WAKE_OP; the
    waits are the host scheduler's (:mod:`minikvm.process.threads`).  The
    priority-inheritance operations are ENOSYS."""
    command = signed32(op) & FUTEX_CMD_MASK
    realtime = bool(signed32(op) & FUTEX_CLOCK_REALTIME)
    if command == FUTEX_WAIT:
        return _wait(proc, uaddr, val, threads.MATCH_ANY,
                     _deadline(proc, timeout, False, realtime))
    if command == FUTEX_WAIT_BITSET:
        if val3 & 0xFFFF_FFFF == 0:
            raise SyscallError(errno.EINVAL, "empty bitset")
        return _wait(proc, uaddr, val, val3 & 0xFFFF_FFFF,
                     _deadline(proc, timeout, True, realtime))
    if command in (FUTEX_WAKE, FUTEX_WAKE_BITSET):
        bitset = threads.MATCH_ANY if command == FUTEX_WAKE else val3 & 0xFFFF_FFFF
        if bitset == 0:
            raise SyscallError(errno.EINVAL, "empty bitset")
        return threads.wake(proc, _word_address(uaddr), _count(val), bitset)
    if command in (FUTEX_REQUEUE, FUTEX_CMP_REQUEUE):
        # The timeout argument carries the second count (val2) for these.
        wakes, moves = signed32(val), signed32(timeout)
        if wakes < 0 or moves < 0:
            raise SyscallError(errno.EINVAL, f"negative counts {wakes}, {moves}")
        _word_address(uaddr)
        _word_address(uaddr2)
        if command == FUTEX_CMP_REQUEUE and _read_word(proc, uaddr) != val3 & 0xFFFF_FFFF:
            raise SyscallError(errno.EAGAIN, "the futex word changed")
        return threads.requeue(proc, uaddr, wakes, uaddr2, moves)
    if command == FUTEX_WAKE_OP:
        return _wake_op(proc, uaddr, _count(val), uaddr2, _count(timeout), val3)
    raise SyscallError(errno.ENOSYS, f"futex operation {command} is not supported")


SYSCALLS = [
    Syscall(202, "futex", sys_futex, ("ptr", "int", "int", "ptr", "ptr", "hex"), PARTIAL,
            "WAIT, WAKE, their BITSET forms, REQUEUE, CMP_REQUEUE, WAKE_OP across the "
            "guest's threads; no priority-inheritance (PI) operations"),
]
