"""Layer 6 — the signal system calls on actions and masks: set them, read them, wait under them.

What a program tells the kernel about its signals, and how it waits for
one — ``rt_sigaction``, ``rt_sigprocmask``, ``rt_sigpending``,
``rt_sigsuspend``, ``pause``, ``rt_sigtimedwait`` and queueing a signal
to itself (``rt_sigqueueinfo``).  They only read and change the state
:mod:`minikvm.syscalls.signals` keeps on the process (actions, mask,
pending set) and hand it back to that module to act on: a signal an
unblocking call makes ready is delivered on the way out, its handler run
by :mod:`minikvm.syscalls.signal_handlers`.

As on Linux, ``rt_sigaction`` records the whole ``struct sigaction``, so a
library that saves and restores an action gets back what it stored; and
``rt_sigsuspend`` restores its caller's mask only when the handler
returns.  Only a signal the program sent itself, or its alarm, can arrive
while it waits: there is no other process in the sandbox to send one.
"""

from __future__ import annotations

import errno
import struct
import time
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import NSEC_PER_SEC, SIGSET_SIZE
from minikvm.syscalls.base import PARTIAL, Syscall, signed32
from minikvm.syscalls.signals import (IGNORED_BY_DEFAULT, SIG_DFL, SIG_IGN, SIGINFO_SIZE,
                                      SIGKILL, SIGSTOP, SLEEP_SLICE_SECONDS, UNBLOCKABLE,
                                      action_of, bit, deliver, deliver_pending, ready,
                                      refresh_work, sent_info, signal_number, sleep)
from minikvm.syscalls.timeouts import read_timeout

if TYPE_CHECKING:
    from minikvm.process.process import Process

SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
#: ``struct sigaction`` as the kernel reads it: handler, flags, restorer, mask.
SIGACTION_FORMAT = "<QQQQ"


# -- the system calls -------------------------------------------------------------
def sys_rt_sigaction(proc: Process, sig: int, action: int, old: int, size: int) -> int:
    """rt_sigaction(2): set or read a signal's disposition.

    Handlers run, with ``SA_SIGINFO``, ``SA_ONSTACK``, ``SA_NODEFER`` and
    ``SA_RESETHAND``; ``SA_RESTART`` restarts nothing (interrupted calls return
    EINTR).  EINVAL for SIGKILL/SIGSTOP or a sigset size other than 8."""
    sig = signed32(sig)
    signal_number(sig)
    if sig in (SIGKILL, SIGSTOP) and action:
        raise SyscallError(errno.EINVAL, f"the action of signal {sig} cannot be changed")
    if size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {size}, expected {SIGSET_SIZE}")
    new = proc.mm.read_struct(action, SIGACTION_FORMAT) if action else None
    if old:
        proc.mm.write_struct(old, SIGACTION_FORMAT, *action_of(proc, sig))
    if new is not None:
        proc.signal_actions[sig] = new
        if new[0] == SIG_IGN or new[0] == SIG_DFL and sig in IGNORED_BY_DEFAULT:
            proc.signal_pending &= ~bit(sig)  # POSIX: setting "ignore" discards it
            proc.signal_info.pop(sig, None)
    return 0


def sys_rt_sigprocmask(proc: Process, how: int, new: int, old: int, size: int) -> int:
    """rt_sigprocmask(2): block, unblock or set the calling thread's signal mask.

    Unblocking a pending signal delivers it on the way out of the call."""
    if size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {size}, expected {SIGSET_SIZE}")
    mask = proc.mm.read_struct(new, "<Q")[0] if new else None
    if old:
        proc.mm.write_struct(old, "<Q", proc.signal_mask)
    if mask is None:
        return 0
    how = signed32(how)
    if how == SIG_BLOCK:
        proc.signal_mask |= mask
    elif how == SIG_UNBLOCK:
        proc.signal_mask &= ~mask
    elif how == SIG_SETMASK:
        proc.signal_mask = mask
    else:
        raise SyscallError(errno.EINVAL, f"how {how} is not SIG_BLOCK, SIG_UNBLOCK or SIG_SETMASK")
    proc.signal_mask &= ~UNBLOCKABLE
    deliver_pending(proc)
    return 0


def sys_rt_sigpending(proc: Process, address: int, size: int) -> int:
    """rt_sigpending(2): the signals pending while blocked."""
    if size > SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {size}")
    proc.mm.write(address, (proc.signal_pending & proc.signal_mask).to_bytes(8, "little")[:size])
    return 0


def _wait_with_mask(proc: Process, mask: int) -> int:
    """Wait under *mask* until a signal's handler must run (EINTR; the
    handler's frame then saves the caller's mask, which comes back when the
    handler returns) or a signal ends the program (rt_sigsuspend, pause)."""
    saved = proc.signal_mask
    proc.signal_mask = mask & ~UNBLOCKABLE
    try:
        deliver_pending(proc)
        sleep(proc, None)
    except SyscallError as error:
        if error.errno == errno.EINTR and ready(proc):
            proc.signal_saved_mask = saved
            refresh_work(proc)
        else:
            proc.signal_mask = saved
        raise
    except BaseException:
        proc.signal_mask = saved
        raise
    proc.signal_mask = saved
    raise SyscallError(errno.EINTR, "the run's time limit interrupted the wait")


def sys_rt_sigsuspend(proc: Process, address: int, size: int) -> int:
    """rt_sigsuspend(2): wait for a signal with a temporary mask.

    Only a signal the program sends itself, or its alarm, can arrive."""
    if size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {size}, expected {SIGSET_SIZE}")
    return _wait_with_mask(proc, proc.mm.read_struct(address, "<Q")[0])


def sys_pause(proc: Process) -> int:
    """pause(2): wait for a signal (one the program sends itself, or its alarm)."""
    return _wait_with_mask(proc, proc.signal_mask)


def sys_rt_sigtimedwait(proc: Process, address: int, info: int, timeout: int, size: int) -> int:
    """Take a pending signal of the set, waiting up to *timeout*: only the
    alarm can make one arrive while waiting."""
    if size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {size}, expected {SIGSET_SIZE}")
    wanted = proc.mm.read_struct(address, "<Q")[0] & ~UNBLOCKABLE
    seconds = None
    if timeout:
        seconds = read_timeout(proc, timeout)
    deadline = None if seconds is None else time.monotonic() + seconds
    while True:
        taken = proc.signal_pending & wanted
        if taken:
            sig = (taken & -taken).bit_length()
            proc.signal_pending &= ~bit(sig)
            details = proc.signal_info.pop(sig, None) or sent_info(proc, sig)
            if info:
                proc.mm.write(info, details)
            refresh_work(proc)
            return sig
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            if proc.determinism is not None:     # the timeout passed on its clock too
                proc.determinism.clock.advance(round(seconds * NSEC_PER_SEC))
            raise SyscallError(errno.EAGAIN, "no signal arrived in time")
        if proc.machine.stopping:
            raise SyscallError(errno.EINTR, "the run's time limit interrupted the wait")
        # sleep() wakes for the alarm and delivers it: blocked, it becomes
        # pending; a handled signal that is not blocked interrupts (EINTR)
        sleep(proc, SLEEP_SLICE_SECONDS if deadline is None
              else min(SLEEP_SLICE_SECONDS, deadline - now))


def _queued_info(proc: Process, sig: int, info: int) -> bytes:
    """The ``siginfo_t`` a program queues to itself, with its signal number."""
    data = bytearray(proc.mm.read(info, SIGINFO_SIZE))
    struct.pack_into("<i", data, 0, sig)
    return bytes(data)


def sys_rt_sigqueueinfo(proc: Process, pid: int, sig: int, info: int) -> int:
    """rt_sigqueueinfo(2): queue a signal with data, to the process itself only
    (ESRCH for any other pid)."""
    if signed32(pid) != proc.pid:
        raise SyscallError(errno.ESRCH, f"no process {signed32(pid)} in this sandbox")
    sig = signed32(sig)
    return deliver(proc, sig, info=_queued_info(proc, sig, info))


def sys_rt_tgsigqueueinfo(proc: Process, tgid: int, tid: int, sig: int, info: int) -> int:
    """rt_tgsigqueueinfo(2): as :func:`sys_rt_sigqueueinfo`, to a thread of the
    process itself."""
    if signed32(tgid) != proc.pid or signed32(tid) != proc.pid:
        raise SyscallError(errno.ESRCH, "no such thread in this sandbox")
    sig = signed32(sig)
    return deliver(proc, sig, info=_queued_info(proc, sig, info))


SYSCALLS = [
    Syscall(13, "rt_sigaction", sys_rt_sigaction, ("int", "ptr", "ptr", "uint"), PARTIAL,
            "handlers run (SA_SIGINFO, SA_ONSTACK, SA_NODEFER, SA_RESETHAND); SA_RESTART "
            "restarts nothing: the calls signals interrupt here return EINTR"),
    Syscall(14, "rt_sigprocmask", sys_rt_sigprocmask, ("int", "ptr", "ptr", "uint")),
    Syscall(127, "rt_sigpending", sys_rt_sigpending, ("ptr", "uint")),
    Syscall(128, "rt_sigtimedwait", sys_rt_sigtimedwait, ("ptr", "ptr", "ptr", "uint"), PARTIAL,
            "only signals the program sent itself, or its alarm, can arrive"),
    Syscall(129, "rt_sigqueueinfo", sys_rt_sigqueueinfo, ("int", "int", "ptr"), PARTIAL,
            "only to the process itself"),
    Syscall(297, "rt_tgsigqueueinfo", sys_rt_tgsigqueueinfo, ("int", "int", "int", "ptr"),
            PARTIAL, "only to the process itself"),
    Syscall(130, "rt_sigsuspend", sys_rt_sigsuspend, ("ptr", "uint"), PARTIAL,
            "only signals the program sent itself, or its alarm, can arrive"),
    Syscall(34, "pause", sys_pause, (), PARTIAL,
            "only signals the program sent itself, or its alarm, can arrive"),
]
