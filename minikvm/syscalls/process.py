"""Layer 8 — process system calls: exit, identity, thread setup, limits.

A minikvm guest is one process with one thread.  The calls a C library
makes while starting a thread-capable runtime (set_tid_address,
set_robust_list, rseq) are recorded or politely declined.
"""

from __future__ import annotations

import errno
import os
import signal

from minikvm.errors import SyscallError
from minikvm.process import ProcessExit, ProcessKilled
from minikvm.syscalls.base import PARTIAL, REFUSED, SUPPORTED, Syscall, signed32

ARCH_SET_GS = 0x1001
ARCH_SET_FS = 0x1002
ARCH_GET_FS = 0x1003
ARCH_GET_GS = 0x1004
CANONICAL_LIMIT = 1 << 47

RLIMIT_STACK = 3
RLIMIT_NOFILE = 7
RLIMIT_AS = 9
RLIM_INFINITY = (1 << 64) - 1


def sys_exit_group(proc, status: int) -> int:
    raise ProcessExit(status & 0xFF)


def sys_exit(proc, status: int) -> int:
    """The only thread exits, so the process does."""
    raise ProcessExit(status & 0xFF)


def sys_getpid(proc) -> int:
    return proc.pid


def sys_getppid(proc) -> int:
    return proc.pid - 1


def sys_getuid(proc) -> int:
    return os.getuid()


def sys_getgid(proc) -> int:
    return os.getgid()


def sys_arch_prctl(proc, code: int, address: int) -> int:
    """Set or get FS/GS base: the C library's thread pointer lives in FS."""
    if code == ARCH_SET_FS or code == ARCH_SET_GS:
        if address >= CANONICAL_LIMIT:
            raise SyscallError(errno.EPERM, "non-canonical base")
        if code == ARCH_SET_FS:
            proc.machine.set_fs_base(address)
            proc.fs_base = address
        else:
            proc.machine.set_gs_base(address)
        return 0
    if code in (ARCH_GET_FS, ARCH_GET_GS):
        sregs = proc.machine.vcpu.run_state.s.regs.sregs
        proc.mm.write_u64(address, sregs.fs.base if code == ARCH_GET_FS else sregs.gs.base)
        return 0
    raise SyscallError(errno.EINVAL, f"arch_prctl code {code:#x}")


def sys_set_tid_address(proc, address: int) -> int:
    proc.clear_child_tid = address
    return proc.pid


def sys_set_robust_list(proc, head: int, length: int) -> int:
    proc.robust_list = (head, length)
    return 0


def sys_rseq(proc, *args: int) -> int:
    raise SyscallError(errno.ENOSYS, "restartable sequences are not supported")


def sys_prlimit64(proc, pid: int, resource: int, new: int, old: int) -> int:
    """Report the limits the sandbox enforces; refuse to change them."""
    if signed32(pid) not in (0, proc.pid):
        raise SyscallError(errno.ESRCH, "only the process itself")
    if old:
        if resource == RLIMIT_NOFILE:
            values = (proc.fds.max_fds, proc.fds.max_fds)
        elif resource == RLIMIT_STACK:
            values = (8 << 20, RLIM_INFINITY)
        elif resource == RLIMIT_AS:
            values = (proc.mm.user_pool.end, proc.mm.user_pool.end)
        else:
            values = (RLIM_INFINITY, RLIM_INFINITY)
        proc.mm.write_struct(old, "<QQ", *values)
    if new:
        proc.mm.read(new, 16)  # EFAULT check; the new limit is ignored
    return 0


def sys_getrlimit(proc, resource: int, address: int) -> int:
    return sys_prlimit64(proc, 0, resource, 0, address)


def sys_kill(proc, pid: int, sig: int) -> int:
    """Signals to itself: the default action of a fatal signal ends the run.
    Other pids do not exist for the guest."""
    pid, sig = signed32(pid), signed32(sig)
    if pid not in (0, proc.pid, -1 * proc.pid):
        raise SyscallError(errno.EPERM, "only the process itself may be signalled")
    return _deliver(proc, sig)


def sys_tgkill(proc, tgid: int, tid: int, sig: int) -> int:
    if signed32(tgid) != proc.pid or signed32(tid) != proc.pid:
        raise SyscallError(errno.ESRCH, "no such thread")
    return _deliver(proc, signed32(sig))


def sys_tkill(proc, tid: int, sig: int) -> int:
    return sys_tgkill(proc, proc.pid, tid, sig)


IGNORED_BY_DEFAULT = {signal.SIGCHLD, signal.SIGURG, signal.SIGWINCH, signal.SIGCONT}
SIG_IGN = 1


def _deliver(proc, sig: int) -> int:
    """Apply a signal's action: minikvm runs no guest handlers, so a signal
    the program did not ignore ends it (abort() blocks nothing here)."""
    if sig == 0:
        return 0
    try:
        signum = signal.Signals(sig)
    except ValueError:
        raise SyscallError(errno.EINVAL, f"signal {sig}") from None
    if signum in IGNORED_BY_DEFAULT or (proc.signal_actions.get(sig) == SIG_IGN
                                         and signum not in (signal.SIGKILL, signal.SIGSTOP)):
        return 0
    regs = proc.machine.vcpu.run_state.s.regs.regs
    symbol = proc.image.symbols.symbolize(regs.rip)
    where = f"rip={regs.rip:#x}" + (f" <{symbol}>" if symbol else "")
    raise ProcessKilled(signum, f"killed by {signum.name} (sent by the program itself) at {where}")


def sys_refused(proc, *args: int) -> int:
    raise SyscallError(errno.EPERM, "refused by the sandbox")


SYSCALLS = [
    Syscall(60, "exit", sys_exit, ("int",)),
    Syscall(231, "exit_group", sys_exit_group, ("int",)),
    Syscall(39, "getpid", sys_getpid),
    Syscall(186, "gettid", sys_getpid),
    Syscall(110, "getppid", sys_getppid),
    Syscall(102, "getuid", sys_getuid),
    Syscall(107, "geteuid", sys_getuid),
    Syscall(104, "getgid", sys_getgid),
    Syscall(108, "getegid", sys_getgid),
    Syscall(158, "arch_prctl", sys_arch_prctl, ("hex", "ptr")),
    Syscall(218, "set_tid_address", sys_set_tid_address, ("ptr",)),
    Syscall(273, "set_robust_list", sys_set_robust_list, ("ptr", "uint")),
    Syscall(334, "rseq", sys_rseq, ("ptr", "uint", "int", "hex"), REFUSED,
            "the C library falls back to not using it", errno.ENOSYS),
    Syscall(302, "prlimit64", sys_prlimit64, ("int", "int", "ptr", "ptr"), PARTIAL,
            "reports the enforced limits; new limits are ignored"),
    Syscall(97, "getrlimit", sys_getrlimit, ("int", "ptr")),
    Syscall(62, "kill", sys_kill, ("int", "int"), PARTIAL,
            "only the process itself; a signal not ignored ends it"),
    Syscall(200, "tkill", sys_tkill, ("int", "int")),
    Syscall(234, "tgkill", sys_tgkill, ("int", "int", "int"), PARTIAL,
            "only the process itself; a signal not ignored ends it"),
    Syscall(59, "execve", sys_refused, ("path", "ptr", "ptr"), REFUSED,
            "a sandboxed program cannot start other programs", errno.EPERM),
    Syscall(322, "execveat", sys_refused, ("dirfd", "path", "ptr", "ptr", "hex"), REFUSED,
            "a sandboxed program cannot start other programs", errno.EPERM),
    Syscall(57, "fork", sys_refused, (), REFUSED, "one process per sandbox", errno.EPERM),
    Syscall(58, "vfork", sys_refused, (), REFUSED, "one process per sandbox", errno.EPERM),
    Syscall(56, "clone", sys_refused, ("hex", "ptr", "ptr", "ptr", "hex"), REFUSED,
            "one process, one thread per sandbox", errno.EPERM),
    Syscall(435, "clone3", sys_refused, ("ptr", "uint"), REFUSED,
            "one process, one thread per sandbox", errno.EPERM),
    Syscall(101, "ptrace", sys_refused, ("int", "int", "ptr", "ptr"), REFUSED,
            "no debugging of other processes", errno.EPERM),
    Syscall(165, "mount", sys_refused, ("path", "path", "path", "hex", "ptr"), REFUSED,
            "file systems are the host's", errno.EPERM),
    Syscall(166, "umount2", sys_refused, ("path", "hex"), REFUSED,
            "file systems are the host's", errno.EPERM),
]
