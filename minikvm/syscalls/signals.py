"""Layer 8 — signals: dispositions are recorded, never delivered to handlers.

minikvm runs no guest signal handlers (it would have to build a signal
frame and emulate ``rt_sigreturn``).  So ``rt_sigaction`` records what the
program asked for — ``abort()``, which unblocks SIGABRT and re-raises, and
a program that ignores SIGPIPE both behave as on Linux — and a fatal
signal the program sends itself ends the run with the right report
(see :func:`minikvm.syscalls.process._deliver`).
"""

from __future__ import annotations

import errno

from minikvm.errors import SyscallError
from minikvm.syscalls.base import PARTIAL, Syscall, signed32

SIGSET_SIZE = 8
NSIG = 64
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
SIGKILL, SIGSTOP = 9, 19
SIGACTION_FORMAT = "<QQQQ"  # handler, flags, restorer, mask (kernel's struct sigaction)


def sys_rt_sigaction(proc, sig: int, action: int, old: int, size: int) -> int:
    sig = signed32(sig)
    if not 1 <= sig <= NSIG or sig in (SIGKILL, SIGSTOP) and action:
        raise SyscallError(errno.EINVAL, f"signal {sig}")
    if size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, "sigset size")
    if old:
        previous = proc.signal_actions.get(sig, 0)
        proc.mm.write_struct(old, SIGACTION_FORMAT, previous, 0, 0, 0)
    if action:
        handler = proc.mm.read_struct(action, SIGACTION_FORMAT)[0]
        proc.signal_actions[sig] = handler
    return 0


def sys_rt_sigprocmask(proc, how: int, new: int, old: int, size: int) -> int:
    if size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, "sigset size")
    if old:
        proc.mm.write_struct(old, "<Q", proc.signal_mask)
    if new:
        (mask,) = proc.mm.read_struct(new, "<Q")
        how = signed32(how)
        if how == SIG_BLOCK:
            proc.signal_mask |= mask
        elif how == SIG_UNBLOCK:
            proc.signal_mask &= ~mask
        elif how == SIG_SETMASK:
            proc.signal_mask = mask
        else:
            raise SyscallError(errno.EINVAL, f"how {how}")
    return 0


def sys_sigaltstack(proc, new: int, old: int) -> int:
    if old:
        proc.mm.write_struct(old, "<QiiQ", 0, 2, 0, 0)  # ss_flags = SS_DISABLE
    if new:
        proc.mm.read(new, 24)
    return 0


SYSCALLS = [
    Syscall(13, "rt_sigaction", sys_rt_sigaction, ("int", "ptr", "ptr", "uint"), PARTIAL,
            "recorded; handlers never run"),
    Syscall(14, "rt_sigprocmask", sys_rt_sigprocmask, ("int", "ptr", "ptr", "uint"), PARTIAL,
            "recorded; nothing is ever pending"),
    Syscall(131, "sigaltstack", sys_sigaltstack, ("ptr", "ptr"), PARTIAL,
            "accepted; handlers never run"),
]
