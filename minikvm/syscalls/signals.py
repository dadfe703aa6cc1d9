"""Layer 8 — signals: dispositions, masks and pending sets are kept; handlers never run.

minikvm runs no guest signal handlers (it would have to build a signal
frame on the guest stack and emulate ``rt_sigreturn``).  Everything else
about signals follows Linux, because C libraries lean on it:

* ``rt_sigaction`` records the whole ``struct sigaction``, so a library
  that saves and restores an action gets back what it stored.
* A signal the program sends itself (``kill``, ``tgkill``, ``raise``) takes
  its *action*: ignored (``SIG_IGN``, or a signal whose default is to be
  ignored) it vanishes; blocked it waits in :attr:`Process.signal_pending`
  until ``rt_sigprocmask`` unblocks it; otherwise it ends the run, reported
  like a shell would (``SIGABRT: … at rip=… <raise+…>``, exit 128+N).
  A signal with a handler ends the run too — the handler cannot run.
* ``abort()`` therefore works for both C libraries: glibc unblocks SIGABRT
  and calls ``tgkill``; musl blocks every signal, calls ``tkill`` (the
  signal waits) and dies when it restores the mask.
* Waiting (``pause``, ``rt_sigsuspend``, ``nanosleep``) is done by
  :func:`sleep`, which delivers a due ``alarm``/``setitimer`` SIGALRM and
  stops early when the run's time limit is reached.

Signal *n* is bit ``n - 1`` of a 64-bit set (``sigset_t`` in the kernel's
x86-64 ABI is 8 bytes).
"""

from __future__ import annotations

import errno
import os
import signal as signal_module
import struct
import time
from typing import Union

from minikvm.errors import SyscallError
from minikvm.process import ProcessKilled
from minikvm.syscalls.base import PARTIAL, Syscall, signed32

SIGSET_SIZE = 8
NSIG = 64
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
SIG_DFL, SIG_IGN = 0, 1
SIGKILL, SIGSEGV, SIGPIPE, SIGALRM, SIGSTOP = 9, 11, 13, 14, 19
#: ``struct sigaction`` as the kernel reads it: handler, flags, restorer, mask.
SIGACTION_FORMAT = "<QQQQ"
#: ``stack_t``: ss_sp, ss_flags (int, then 4 bytes of padding), ss_size.
STACK_T_FORMAT = "<Qi4xQ"
SS_ONSTACK = 1
SS_DISABLE = 2
SS_AUTODISARM = 1 << 31
MINSIGSTKSZ = 2048
#: ``siginfo_t`` is 128 bytes; rt_sigtimedwait fills signo, errno, code, pid, uid.
SIGINFO_SIZE = 128
SI_USER = 0
#: Signals whose default action is to do nothing (signal(7)).
IGNORED_BY_DEFAULT = frozenset({17, 18, 23, 28})     # SIGCHLD SIGCONT SIGURG SIGWINCH
#: Signals whose default action is to stop the process.  There is no job
#: control in a sandbox, so stopping is a no-op: the program continues.
STOP_BY_DEFAULT = frozenset({19, 20, 21, 22})        # SIGSTOP SIGTSTP SIGTTIN SIGTTOU
UNBLOCKABLE = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1))
#: How long one slice of a guest's sleep lasts: the granularity with which a
#: sleeping guest notices the run's time limit.
SLEEP_SLICE_SECONDS = 0.05


class RealtimeSignal(int):
    """A signal number Python's :class:`signal.Signals` has no member for
    (32, 33 and 35–63), with the name Linux tools print for it."""

    @property
    def name(self) -> str:
        if int(self) > int(signal_module.SIGRTMIN):
            return f"SIGRTMIN+{int(self) - int(signal_module.SIGRTMIN)}"
        return f"SIG{int(self)}"


SignalNumber = Union[signal_module.Signals, RealtimeSignal]


def signal_number(sig: int) -> SignalNumber:
    """*sig* as a named signal; EINVAL outside 1..64."""
    if not 1 <= sig <= NSIG:
        raise SyscallError(errno.EINVAL, f"signal {sig} is not in 1..{NSIG}")
    try:
        return signal_module.Signals(sig)
    except ValueError:
        return RealtimeSignal(sig)


def bit(sig: int) -> int:
    """Signal *sig*'s bit in a sigset."""
    return 1 << (sig - 1)


# -- delivery ------------------------------------------------------------------
def deliver(proc, sig: int, sender: str = "sent by the program itself") -> int:
    """Apply signal *sig* to the process (0 for a signal that was ignored,
    left pending, or is 0 itself — kill's "does it exist?" probe)."""
    if sig == 0:
        return 0
    signum = signal_number(sig)
    handler = proc.signal_actions.get(sig, (SIG_DFL,))[0]
    unstoppable = sig in (SIGKILL, SIGSTOP)
    if not unstoppable and (handler == SIG_IGN
                            or handler == SIG_DFL and sig in IGNORED_BY_DEFAULT):
        return 0
    if proc.signal_mask & bit(sig) and not unstoppable:
        proc.signal_pending |= bit(sig)
        return 0
    if sig in STOP_BY_DEFAULT and (handler == SIG_DFL or unstoppable):
        return 0
    _die(proc, signum, sender, handler)
    return 0  # not reached


def _die(proc, signum: SignalNumber, sender: str, handler: int) -> None:
    """End the run as if *signum* had killed the process."""
    regs = proc.machine.vcpu.run_state.s.regs.regs
    # At a system-call exit RCX holds where the program's ``syscall`` returns
    # to (RIP is inside minikvm's stub), so RCX says where the program was.
    where = f"rip={regs.rcx:#x}"
    symbol = proc.image.symbols.symbolize(regs.rcx)
    if symbol:
        where += f" <{symbol}>"
    reason = sender
    if handler not in (SIG_DFL, SIG_IGN):
        reason += f"; its handler at {handler:#x} cannot run (minikvm runs no signal handlers)"
    raise ProcessKilled(signum, f"{reason} at {where}")  # type: ignore[arg-type]


def deliver_pending(proc) -> None:
    """Act on the lowest pending signal the mask no longer blocks."""
    ready = proc.signal_pending & ~proc.signal_mask
    while ready:
        sig = (ready & -ready).bit_length()
        proc.signal_pending &= ~bit(sig)
        ready &= ~bit(sig)
        deliver(proc, sig, "sent by the program itself, delivered when rt_sigprocmask unblocked it")


def broken_pipe(proc) -> None:
    """What Linux does before a write to a pipe or socket nobody reads
    fails with EPIPE: it sends the writer SIGPIPE, which ends the program
    (status 141, as in ``yes | head -1``) unless it ignores or blocks the
    signal — then the write just fails.  For the file and socket calls to
    call before raising EPIPE (``send`` with MSG_NOSIGNAL does not)."""
    deliver(proc, SIGPIPE, "wrote to a pipe with no reader")


def deliver_due_alarm(proc, now: float | None = None) -> None:
    """Send SIGALRM if the alarm (``alarm``, ``setitimer(ITIMER_REAL)``) is due."""
    deadline = proc.alarm_deadline
    if deadline is None:
        return
    now = time.monotonic() if now is None else now
    if now < deadline:
        return
    if proc.alarm_interval > 0:
        missed = int((now - deadline) // proc.alarm_interval) + 1
        proc.alarm_deadline = deadline + missed * proc.alarm_interval
    else:
        proc.alarm_deadline = None
    deliver(proc, SIGALRM, "the alarm timer expired")


def sleep(proc, seconds: float | None) -> None:
    """Sleep *seconds* (None: until a signal ends the program).

    A due alarm is delivered on the way (which usually ends the run), and
    the sleep stops early when the run's time limit is reached — the
    machine then stops before the guest resumes.  Python retries a sleep
    its own SIGALRM handler interrupts, so the sleep is cut into slices to
    notice the limit.
    """
    deadline = None if seconds is None else time.monotonic() + seconds
    run_state = proc.machine.vcpu.run_state
    while True:
        now = time.monotonic()
        deliver_due_alarm(proc, now)
        if run_state.immediate_exit or deadline is not None and now >= deadline:
            return
        wake = [t for t in (deadline, proc.alarm_deadline) if t is not None]
        time.sleep(max(0.0, min([now + SLEEP_SLICE_SECONDS, *wake]) - now))


# -- the system calls -------------------------------------------------------------
def sys_rt_sigaction(proc, sig: int, action: int, old: int, size: int) -> int:
    sig = signed32(sig)
    signal_number(sig)
    if sig in (SIGKILL, SIGSTOP) and action:
        raise SyscallError(errno.EINVAL, f"the action of signal {sig} cannot be changed")
    if size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {size}, expected {SIGSET_SIZE}")
    new = proc.mm.read_struct(action, SIGACTION_FORMAT) if action else None
    if old:
        proc.mm.write_struct(old, SIGACTION_FORMAT, *proc.signal_actions.get(sig, (0, 0, 0, 0)))
    if new is not None:
        proc.signal_actions[sig] = new
        if new[0] == SIG_IGN or new[0] == SIG_DFL and sig in IGNORED_BY_DEFAULT:
            proc.signal_pending &= ~bit(sig)  # POSIX: setting "ignore" discards it
    return 0


def sys_rt_sigprocmask(proc, how: int, new: int, old: int, size: int) -> int:
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


def sys_rt_sigpending(proc, address: int, size: int) -> int:
    if size > SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {size}")
    proc.mm.write(address, (proc.signal_pending & proc.signal_mask).to_bytes(8, "little")[:size])
    return 0


def _wait_with_mask(proc, mask: int) -> int:
    """Wait under *mask* until a signal ends the program (rt_sigsuspend, pause)."""
    saved = proc.signal_mask
    proc.signal_mask = mask & ~UNBLOCKABLE
    try:
        deliver_pending(proc)
        sleep(proc, None)
    finally:
        proc.signal_mask = saved
    raise SyscallError(errno.EINTR, "the run's time limit interrupted the wait")


def sys_rt_sigsuspend(proc, address: int, size: int) -> int:
    if size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {size}, expected {SIGSET_SIZE}")
    return _wait_with_mask(proc, proc.mm.read_struct(address, "<Q")[0])


def sys_pause(proc) -> int:
    return _wait_with_mask(proc, proc.signal_mask)


def sys_rt_sigtimedwait(proc, address: int, info: int, timeout: int, size: int) -> int:
    """Take a pending signal of the set, waiting up to *timeout*: only the
    alarm can make one arrive while waiting."""
    if size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {size}, expected {SIGSET_SIZE}")
    wanted = proc.mm.read_struct(address, "<Q")[0] & ~UNBLOCKABLE
    seconds = None
    if timeout:
        tv_sec, tv_nsec = proc.mm.read_struct(timeout, "<qq")
        if tv_sec < 0 or not 0 <= tv_nsec < 1_000_000_000:
            raise SyscallError(errno.EINVAL, "bad timespec")
        seconds = tv_sec + tv_nsec / 1e9
    deadline = None if seconds is None else time.monotonic() + seconds
    while True:
        taken = proc.signal_pending & wanted
        if taken:
            sig = (taken & -taken).bit_length()
            proc.signal_pending &= ~bit(sig)
            if info:
                proc.mm.write(info, _siginfo(proc, sig))
            return sig
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise SyscallError(errno.EAGAIN, "no signal arrived in time")
        if proc.machine.vcpu.run_state.immediate_exit:
            raise SyscallError(errno.EINTR, "the run's time limit interrupted the wait")
        # sleep() wakes for the alarm and delivers it: blocked, it becomes pending
        sleep(proc, SLEEP_SLICE_SECONDS if deadline is None
              else min(SLEEP_SLICE_SECONDS, deadline - now))


def _siginfo(proc, sig: int) -> bytes:
    """A ``siginfo_t`` for a signal the process sent itself: signo, errno,
    code, then the sender's pid and uid."""
    head = struct.pack("<iii4xiI", sig, 0, SI_USER, proc.pid, os.getuid())
    return head.ljust(SIGINFO_SIZE, b"\0")


def sys_rt_sigqueueinfo(proc, pid: int, sig: int, info: int) -> int:
    if signed32(pid) != proc.pid:
        raise SyscallError(errno.ESRCH, f"no process {signed32(pid)} in this sandbox")
    proc.mm.read(info, SIGINFO_SIZE)
    return deliver(proc, signed32(sig))


def sys_rt_tgsigqueueinfo(proc, tgid: int, tid: int, sig: int, info: int) -> int:
    if signed32(tgid) != proc.pid or signed32(tid) != proc.pid:
        raise SyscallError(errno.ESRCH, "no such thread in this sandbox")
    proc.mm.read(info, SIGINFO_SIZE)
    return deliver(proc, signed32(sig))


def sys_rt_sigreturn(proc) -> int:
    """Only a signal handler returns through rt_sigreturn, and none ever
    runs here: like Linux with a bad signal frame, the process dies."""
    _die(proc, signal_module.SIGSEGV, "rt_sigreturn called with no signal frame", SIG_DFL)
    return 0  # not reached


def sys_sigaltstack(proc, new: int, old: int) -> int:
    """Record the alternate stack (handlers never run, so nothing uses it)."""
    request = proc.mm.read_struct(new, STACK_T_FORMAT) if new else None
    if old:
        sp, size = proc.alternate_stack
        proc.mm.write_struct(old, STACK_T_FORMAT, sp, 0 if size else SS_DISABLE, size)
    if request is not None:
        sp, flags, size = request
        flags &= 0xFFFF_FFFF
        if flags & ~(SS_DISABLE | SS_ONSTACK | SS_AUTODISARM):
            raise SyscallError(errno.EINVAL, f"ss_flags {flags:#x}")
        if flags & SS_DISABLE:
            proc.alternate_stack = (0, 0)
        elif size < MINSIGSTKSZ:
            raise SyscallError(errno.ENOMEM, f"ss_size {size} is below MINSIGSTKSZ ({MINSIGSTKSZ})")
        else:
            proc.alternate_stack = (sp, size)
    return 0


SYSCALLS = [
    Syscall(13, "rt_sigaction", sys_rt_sigaction, ("int", "ptr", "ptr", "uint"), PARTIAL,
            "recorded and reported back; handlers never run (a handled signal ends the run)"),
    Syscall(14, "rt_sigprocmask", sys_rt_sigprocmask, ("int", "ptr", "ptr", "uint")),
    Syscall(127, "rt_sigpending", sys_rt_sigpending, ("ptr", "uint")),
    Syscall(128, "rt_sigtimedwait", sys_rt_sigtimedwait, ("ptr", "ptr", "ptr", "uint"), PARTIAL,
            "only signals the program sent itself, or its alarm, can arrive"),
    Syscall(129, "rt_sigqueueinfo", sys_rt_sigqueueinfo, ("int", "int", "ptr"), PARTIAL,
            "only to the process itself"),
    Syscall(297, "rt_tgsigqueueinfo", sys_rt_tgsigqueueinfo, ("int", "int", "int", "ptr"),
            PARTIAL, "only to the process itself"),
    Syscall(130, "rt_sigsuspend", sys_rt_sigsuspend, ("ptr", "uint"), PARTIAL,
            "returns only through a signal that ends the run (the alarm) or the time limit"),
    Syscall(34, "pause", sys_pause, (), PARTIAL,
            "returns only through a signal that ends the run (the alarm) or the time limit"),
    Syscall(15, "rt_sigreturn", sys_rt_sigreturn, (), PARTIAL,
            "no handler ever runs, so there is no frame to return from: SIGSEGV"),
    Syscall(131, "sigaltstack", sys_sigaltstack, ("ptr", "ptr"), PARTIAL,
            "recorded; handlers never run on it"),
]
