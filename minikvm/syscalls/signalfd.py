"""Layer 6 — signalfd: pending signals read as a file.

``signalfd4(-1, &mask, 8, flags)`` makes an fd from which a ``read`` takes
pending signals of *mask*, one ``struct signalfd_siginfo`` (128 bytes) for
each, instead of running their handlers.  A program blocks those signals
first (``sigprocmask``), so they stay pending, and then waits for them with
``poll``/``epoll`` beside its other fds — event loops (systemd, libuv's
signal watcher, Chromium's zygote) handle SIGCHLD, SIGTERM and SIGINT that
way.  ``signalfd4(fd, &mask, 8, 0)`` changes the mask of an existing one.

Linux reads the pending signals of the *reading* task, not of the task
that created the fd (fs/signalfd.c uses ``current``).  minikvm keeps the
pending set on the :class:`~minikvm.process.process.Process`
(``signal_pending``, bit n-1 for signal n, with each one's
``siginfo_t`` in ``signal_info``); a :class:`SignalFd` holds a *weak*
reference to the process it serves: ``copy.deepcopy`` (the snapshots) keeps
a weak reference as it is, so a snapshot's copy still serves the same
process, and the fd does not keep a closed process alive.

What differs from Linux: a blocking read in a program with one thread can
only be ended by a signal that arrives while it waits — the alarm here —
so it waits for the alarm when SIGALRM is in the mask and fails with EAGAIN
otherwise (it would wait for ever), as a read of an empty pipe does here.
With other threads, it waits for them as the other blocking reads do.

Reference: signalfd(2); include/uapi/linux/signalfd.h for the record;
``signalfd_copyinfo()`` in fs/signalfd.c for which fields each kind of
signal fills.
"""

from __future__ import annotations

import errno
import struct
import weakref
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import O_CLOEXEC, O_NONBLOCK, O_RDWR, SIGSET_SIZE
from minikvm.process.fdtable import POLLIN, POLLRDNORM, OpenFile
from minikvm.syscalls.base import Syscall, signed32
from minikvm.syscalls.signals import SIGALRM, UNBLOCKABLE, bit, refresh_work, sent_info

if TYPE_CHECKING:
    from minikvm.process.process import Process

# include/uapi/linux/signalfd.h
SFD_CLOEXEC = O_CLOEXEC
SFD_NONBLOCK = O_NONBLOCK
SFD_FLAGS = SFD_CLOEXEC | SFD_NONBLOCK

#: ``struct signalfd_siginfo`` (include/uapi/linux/signalfd.h): ssi_signo,
#: ssi_errno, ssi_code, ssi_pid, ssi_uid, ssi_fd, ssi_tid, ssi_band,
#: ssi_overrun, ssi_trapno, ssi_status, ssi_int, ssi_ptr, ssi_utime,
#: ssi_stime, ssi_addr, ssi_addr_lsb, __pad2, ssi_syscall, ssi_call_addr,
#: ssi_arch, then padding to 128 bytes.
SIGNALFD_SIGINFO = struct.Struct("<IiiIIiIIIIiiQQQQHHiQI28x")
assert SIGNALFD_SIGINFO.size == 128

# si_code values that choose the layout of the siginfo_t union
# (include/uapi/asm-generic/siginfo.h; kernel/signal.c siginfo_layout())
SI_USER = 0
SI_QUEUE = -1
SI_TIMER = -2
SI_SIGIO = -5
#: signals whose siginfo carries a fault address (SIL_FAULT)
FAULT_SIGNALS = (4, 5, 7, 8, 11)          # SIGILL SIGTRAP SIGBUS SIGFPE SIGSEGV
SIGCHLD = 17
SIGPOLL = 29
SIGSYS = 31


def signalfd_record(info: bytes) -> bytes:
    """The ``struct signalfd_siginfo`` for one ``siginfo_t`` (128 bytes), its
    fields filled as ``signalfd_copyinfo()`` fills them for the signal's
    layout; what the layout does not name stays 0."""
    signo, err, code = struct.unpack_from("<iii", info, 0)
    fields = dict(pid=0, uid=0, fd=0, tid=0, band=0, overrun=0, status=0, int_=0, ptr=0,
                  utime=0, stime=0, addr=0, syscall=0, call_addr=0, arch=0)
    if code == SI_TIMER:
        fields["tid"], fields["overrun"], fields["ptr"] = struct.unpack_from("<iiQ", info, 16)
        fields["int_"] = struct.unpack_from("<i", info, 24)[0]
    elif code == SI_SIGIO or code > 0 and signo == SIGPOLL:
        fields["band"], fields["fd"] = struct.unpack_from("<qi", info, 16)
        fields["band"] &= 0xFFFF_FFFF
    elif code > 0 and signo in FAULT_SIGNALS:
        fields["addr"] = struct.unpack_from("<Q", info, 16)[0]
    elif code > 0 and signo == SIGCHLD:
        (fields["pid"], fields["uid"], fields["status"], fields["utime"],
         fields["stime"]) = struct.unpack_from("<iIi4xqq", info, 16)
    elif code > 0 and signo == SIGSYS:
        fields["call_addr"], fields["syscall"], fields["arch"] = struct.unpack_from("<QiI",
                                                                                    info, 16)
    else:                                   # SIL_KILL and SIL_RT: the sender
        fields["pid"], fields["uid"] = struct.unpack_from("<iI", info, 16)
        if code < 0:                        # sigqueue's value
            fields["ptr"] = struct.unpack_from("<Q", info, 24)[0]
            fields["int_"] = struct.unpack_from("<i", info, 24)[0]
    return SIGNALFD_SIGINFO.pack(
        signo, err, code, fields["pid"] & 0xFFFF_FFFF, fields["uid"], fields["fd"],
        fields["tid"] & 0xFFFF_FFFF, fields["band"], fields["overrun"] & 0xFFFF_FFFF, 0,
        fields["status"], fields["int_"], fields["ptr"], fields["utime"] & (1 << 64) - 1,
        fields["stime"] & (1 << 64) - 1, fields["addr"], 0, 0, fields["syscall"],
        fields["call_addr"], fields["arch"])


class SignalFd(OpenFile):
    """A signalfd: the signals it takes (*mask*, never SIGKILL or SIGSTOP)
    and a weak reference to the process whose pending signals it reads."""
    kind = "signalfd"

    def __init__(self, proc: Process, mask: int, status_flags: int) -> None:
        self.owner = weakref.ref(proc)
        self.mask = mask & ~UNBLOCKABLE
        self.status_flags = O_RDWR | status_flags
        self.path = "anon_inode:[signalfd]"
        self.activity = 0

    def _process(self) -> Process:
        proc = self.owner()
        if proc is None:                    # only a closed process drops it
            raise SyscallError(errno.EBADF, "the signalfd's process has ended")
        return proc

    def readable_signals(self) -> int:
        """The pending signals of the mask."""
        return self._process().signal_pending & self.mask

    def readv(self, views: list[memoryview]) -> int:
        room = sum(len(view) for view in views)
        if room < SIGNALFD_SIGINFO.size:
            raise SyscallError(errno.EINVAL, f"a signalfd read needs {SIGNALFD_SIGINFO.size} "
                               f"bytes, the buffer has {room}")
        proc = self._process()
        records = []
        while len(records) < room // SIGNALFD_SIGINFO.size:
            taken = proc.signal_pending & self.mask
            if not taken:
                break
            sig = (taken & -taken).bit_length()     # the lowest first, as dequeue_signal
            proc.signal_pending &= ~bit(sig)
            info = proc.signal_info.pop(sig, None) or sent_info(proc, sig)
            records.append(signalfd_record(info))
        if not records:
            raise SyscallError(errno.EAGAIN, "no signal of the signalfd's mask is pending")
        refresh_work(proc)
        self.activity += 1
        data = b"".join(records)
        done = 0
        for view in views:
            piece = data[done:done + len(view)]
            view[:len(piece)] = piece
            done += len(piece)
            if done == len(data):
                break
        return len(data)

    def writev(self, chunks: list[memoryview]) -> int:
        raise SyscallError(errno.EINVAL, "a signalfd cannot be written")

    def poll(self, events: int) -> int:
        """signalfd_poll(): readable while a signal of the mask is pending."""
        return POLLIN | POLLRDNORM if self.readable_signals() else 0

    def wakes_at(self) -> float | None:
        """The alarm's deadline when SIGALRM is in the mask: the one signal
        that can arrive while a lone thread waits."""
        proc = self.owner()
        if proc is None or not self.mask & bit(SIGALRM) or self.readable_signals():
            return None
        return proc.alarm_deadline


def sys_signalfd4(proc: Process, fd: int, mask_address: int, size: int, flags: int) -> int:
    """signalfd4(2): a new signalfd (*fd* = -1) or a new mask for one.

    Checked in Linux's order: flags (EINVAL), the mask's size (EINVAL: it
    must be the kernel's 8 bytes), the mask (EFAULT), then the fd (EBADF;
    EINVAL when it is not a signalfd)."""
    fd, flags = signed32(fd), signed32(flags)
    if flags & ~SFD_FLAGS:
        raise SyscallError(errno.EINVAL, f"signalfd4 flags {flags:#x}: only SFD_NONBLOCK "
                           "and SFD_CLOEXEC")
    if size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL, f"sigset size {size}, expected {SIGSET_SIZE}")
    mask = proc.mm.read_struct(mask_address, "<Q")[0]
    if fd == -1:
        return proc.fds.install(SignalFd(proc, mask, flags & SFD_NONBLOCK),
                                cloexec=bool(flags & SFD_CLOEXEC))
    file = proc.fds.get(fd)
    if not isinstance(file, SignalFd):
        raise SyscallError(errno.EINVAL, f"fd {fd} is not a signalfd")
    file.mask = mask & ~UNBLOCKABLE
    file.owner = weakref.ref(proc)
    file.activity += 1
    return fd


def sys_signalfd(proc: Process, fd: int, mask_address: int, size: int) -> int:
    """signalfd(2), the call without flags."""
    return sys_signalfd4(proc, fd, mask_address, size, 0)


SYSCALLS = [
    Syscall(289, "signalfd4", sys_signalfd4, ("fd", "ptr", "uint", "hex")),
    Syscall(282, "signalfd", sys_signalfd, ("fd", "ptr", "uint")),
]
