"""Layer 6 — descriptors: dup, fcntl, ioctl, pipes, eventfds, and copies between fds.

The calls that work on the guest's fd table rather than on a path: copy
an entry (``dup``, ``fcntl(F_DUPFD)``), change its flags (``fcntl``),
close many (``close_range``), ask a terminal or a pipe (``ioctl``), make
new in-guest files with no name (``pipe``, ``eventfd``), and move bytes
between two fds without the guest's memory (``sendfile``,
``copy_file_range``).  ``flock`` and ``fadvise64`` are accepted and do
nothing: one process has nobody to lock against; so are ``fcntl``'s record
locks (``F_SETLK``, ``F_OFD_SETLK`` …), after checking their ``struct
flock``.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import (F_ADD_SEALS, F_DUPFD, F_DUPFD_CLOEXEC, F_GET_SEALS, F_GETFD,
                               F_GETFL, F_GETLK, F_GETPIPE_SZ, F_OFD_GETLK, F_OFD_SETLK,
                               F_OFD_SETLKW, F_SETFD, F_SETFL, F_SETLK, F_SETLKW, FD_CLOEXEC,
                               FIONREAD, O_APPEND, O_CLOEXEC, O_NONBLOCK)
from minikvm.process.fdtable import (PIPE_CAPACITY, SEEK_CUR, SEEK_SET, EventFd, MemFd,
                                     OpenFile, Pipe, PipeEnd, SyntheticFile)
from minikvm.syscalls import pty, terminal
from minikvm.syscalls.base import PARTIAL, Syscall, signed32, signed64
from minikvm.syscalls.files import MAX_IO, UINT_MASK, check_file_size
from minikvm.syscalls.memfd import memfd_fcntl

if TYPE_CHECKING:
    from minikvm.process.process import Process

F_RDLCK, F_WRLCK, F_UNLCK = 0, 1, 2
#: ``struct flock`` on x86-64: l_type, l_whence (short); l_start, l_len (off_t); l_pid
FLOCK_FORMAT = "<hh4xqqi4x"
SEEK_END = 2
CLOSE_RANGE_UNSHARE = 2
CLOSE_RANGE_CLOEXEC = 4
LOCK_SH, LOCK_EX, LOCK_NB, LOCK_UN = 1, 2, 4, 8
POSIX_FADV_NOREUSE = 5          # the highest fadvise advice
#: how much sendfile moves per call when Python has to copy (pipes, devices):
#: a short count is a valid answer, and the guest asks again
COPY_CHUNK = 1 << 20

#: eventfd2 flags (linux/eventfd.h)
EFD_SEMAPHORE = 1
EFD_CLOEXEC = O_CLOEXEC
EFD_NONBLOCK = O_NONBLOCK


# -- copying between files -------------------------------------------------------------------
def _read_offset(proc: Process, address: int) -> int | None:
    """An ``loff_t *`` argument: None for NULL, EINVAL when negative.
    It is written back after the copy, so it must be writable too (EFAULT
    now, before a byte of any file changes)."""
    if not address:
        return None
    proc.mm.views(address, 8, write=True)
    (offset,) = proc.mm.read_struct(address, "<q")
    if offset < 0:
        raise SyscallError(errno.EINVAL, f"negative offset {offset}")
    return offset


def _copy_through_python(proc: Process, source: OpenFile, target: OpenFile, offset: int | None,
                         count: int) -> int:
    """sendfile where one end is not a host fd: one bounded chunk."""
    if isinstance(target, PipeEnd):     # check before reading, so nothing is lost
        room = target.pipe.room()
        if target.pipe.readers == 0:
            raise SyscallError(errno.EPIPE, "no reader")
        if room <= 0:
            raise SyscallError(errno.EAGAIN, "pipe full")
        count = min(count, room)
    chunk = bytearray(min(count, COPY_CHUNK))
    if offset is not None and isinstance(source, SyntheticFile):
        got = source.pread([memoryview(chunk)], offset)       # a /proc file
    elif offset is not None:
        if source.host_fd is None:
            raise SyscallError(errno.ESPIPE, "an offset on a file that cannot seek")
        got = os.preadv(source.host_fd, [chunk], offset)
    else:
        got = source.readv([memoryview(chunk)])
    if got == 0:
        return 0
    written = target.writev([memoryview(chunk)[:got]])
    if written < got and offset is None and source.host_fd is not None:
        os.lseek(source.host_fd, written - got, os.SEEK_CUR)  # give back what was not sent
    return written


def sys_sendfile(proc: Process, out_fd: int, in_fd: int, offset_address: int, count: int) -> int:
    """Copy from one guest fd to another; the host's sendfile when both are
    host files, otherwise a bounded copy in Python (a short count, as Linux
    may return too)."""
    target = proc.fds.get(signed32(out_fd))
    source = proc.fds.get(signed32(in_fd))
    if not source.readable() or not target.writable():
        raise SyscallError(errno.EBADF, "in_fd not readable or out_fd not writable")
    if target.status_flags & O_APPEND:
        raise SyscallError(errno.EINVAL, "out_fd is open with O_APPEND")
    offset = _read_offset(proc, offset_address)
    count = min(count, MAX_IO)
    check_file_size(proc, target, count, syscall="sendfile")
    if source.host_fd is not None and target.host_fd is not None:
        sent = os.sendfile(target.host_fd, source.host_fd, offset, count)
    else:
        sent = _copy_through_python(proc, source, target, offset, count) if count else 0
    if offset is not None:
        proc.mm.write_struct(offset_address, "<q", offset + sent)
    return sent


def sys_copy_file_range(proc: Process, in_fd: int, in_offset: int, out_fd: int, out_offset: int,
                        count: int, flags: int) -> int:
    """Between two granted files only (Linux: regular files only)."""
    if flags & UINT_MASK:
        raise SyscallError(errno.EINVAL, f"copy_file_range flags {flags:#x}")
    source = proc.fds.get(signed32(in_fd))
    target = proc.fds.get(signed32(out_fd))
    if not source.readable() or not target.writable() or target.status_flags & O_APPEND:
        raise SyscallError(errno.EBADF, "in_fd not readable, or out_fd not writable "
                           "(or O_APPEND)")
    if source.host_fd is None or target.host_fd is None:
        raise SyscallError(errno.EINVAL, "not regular files")
    source_offset = _read_offset(proc, in_offset)
    target_offset = _read_offset(proc, out_offset)
    count = min(count, MAX_IO)
    check_file_size(proc, target, count, target_offset, syscall="copy_file_range")
    copied = os.copy_file_range(source.host_fd, target.host_fd, count,
                                source_offset, target_offset)
    if source_offset is not None:
        proc.mm.write_struct(in_offset, "<q", source_offset + copied)
    if target_offset is not None:
        proc.mm.write_struct(out_offset, "<q", target_offset + copied)
    return copied


# -- descriptors ----------------------------------------------------------------------
def sys_dup(proc: Process, fd: int) -> int:
    """dup(2): the lowest free fd for the same open file."""
    return proc.fds.install(proc.fds.get(signed32(fd)))


def sys_dup3(proc: Process, old: int, new: int, flags: int) -> int:
    """dup3(2): *new* becomes the open file of *old* (``O_CLOEXEC`` only flag).

    EINVAL when they are the same fd."""
    old, new = signed32(old), signed32(new)
    if old == new:
        raise SyscallError(errno.EINVAL, "same fd")
    proc.fds.install_at(new, proc.fds.get(old), cloexec=bool(signed32(flags) & O_CLOEXEC))
    return new


def sys_dup2(proc: Process, old: int, new: int) -> int:
    """dup2(2): :func:`sys_dup3` without flags; the same fd twice returns it."""
    if signed32(old) == signed32(new):
        proc.fds.get(signed32(old))
        return signed32(new)
    return sys_dup3(proc, old, new, 0)


def sys_close_range(proc: Process, first: int, last: int, flags: int) -> int:
    """close_range(2): close (or mark close-on-exec) a range of fds."""
    first, last, flags = first & UINT_MASK, last & UINT_MASK, flags & UINT_MASK
    if flags & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC) or first > last:
        raise SyscallError(errno.EINVAL, f"close_range({first}, {last}, {flags:#x})")
    proc.fds.close_range(first, last, cloexec=bool(flags & CLOSE_RANGE_CLOEXEC))
    return 0


def sys_fadvise64(proc: Process, fd: int, offset: int, length: int, advice: int) -> int:
    """Advice about future reads: checked, then ignored (it is only a hint)."""
    file = proc.fds.get(signed32(fd))
    if isinstance(file, PipeEnd):
        raise SyscallError(errno.ESPIPE, "a pipe")
    if signed64(length) < 0 or not 0 <= signed32(advice) <= POSIX_FADV_NOREUSE:
        raise SyscallError(errno.EINVAL, f"length {signed64(length)}, advice {signed32(advice)}")
    return 0


def sys_flock(proc: Process, fd: int, operation: int) -> int:
    """Always granted: one process has nobody to lock against (and a lock
    the host kept could block the host on another program's lock)."""
    proc.fds.get(signed32(fd))
    if signed32(operation) & ~LOCK_NB not in (LOCK_SH, LOCK_EX, LOCK_UN):
        raise SyscallError(errno.EINVAL, f"flock operation {signed32(operation)}")
    return 0


def sys_fcntl(proc: Process, fd: int, command: int, argument: int) -> int:
    """fcntl(2): duplicate fds, fd and status flags, ``F_GETPIPE_SZ``, record locks.

    Record locks are always granted (one process holds them all) and
    ``F_GETLK`` finds none; other commands are EINVAL."""
    fd, command = signed32(fd), signed32(command)
    file = proc.fds.get(fd)
    entry = proc.fds.entries[fd]
    if command in (F_DUPFD, F_DUPFD_CLOEXEC):
        return proc.fds.install(file, lowest=signed32(argument),
                                cloexec=command == F_DUPFD_CLOEXEC)
    if command == F_GETFD:
        return FD_CLOEXEC if entry.cloexec else 0
    if command == F_SETFD:
        entry.cloexec = bool(argument & FD_CLOEXEC)
        return 0
    if command == F_GETFL:
        return file.status_flags
    if command == F_SETFL:
        changeable = O_APPEND | O_NONBLOCK
        file.status_flags = (file.status_flags & ~changeable) | (argument & changeable)
        return 0
    if command in (F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW):
        return _record_lock(proc, file, command, argument)
    if command in (F_ADD_SEALS, F_GET_SEALS):
        if not isinstance(file, MemFd):
            raise SyscallError(errno.EINVAL, f"fd {fd} is not a memfd: only memfds take seals")
        return memfd_fcntl(file, command, argument)
    if command == F_GETPIPE_SZ:
        # bash asks, to choose between a pipe and a temporary file for a here-document
        if not isinstance(file, PipeEnd):
            raise SyscallError(errno.EBADF, f"fd {fd} is not a pipe")
        return PIPE_CAPACITY
    raise SyscallError(errno.EINVAL, f"fcntl command {command}")


def _record_lock(proc: Process, file: OpenFile, command: int, address: int) -> int:
    """POSIX and open-file-description record locks, as ``flock``: always
    granted, since one process has nobody to lock against (and a lock the
    host kept could block the host on another program's lock).  SQLite
    takes them on every database it opens.

    The ``struct flock`` is still checked as Linux checks it (fs/locks.c):
    a known lock type, a read lock only on a file open for reading, a
    write lock only on one open for writing, ``l_pid`` zero for the OFD
    calls.  ``F_GETLK`` answers "no conflicting lock" (``F_UNLCK``).
    """
    lock_type, whence, start, length, pid = proc.mm.read_struct(address, FLOCK_FORMAT)
    if lock_type not in (F_RDLCK, F_WRLCK, F_UNLCK):
        raise SyscallError(errno.EINVAL, f"lock type {lock_type}")
    if whence not in (SEEK_SET, SEEK_CUR, SEEK_END):
        raise SyscallError(errno.EINVAL, f"l_whence {whence}")
    if command in (F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW) and pid != 0:
        raise SyscallError(errno.EINVAL, f"l_pid {pid} must be 0 for an OFD lock")
    if command in (F_GETLK, F_OFD_GETLK):
        if lock_type == F_UNLCK:
            raise SyscallError(errno.EINVAL, "F_GETLK asks about a read or a write lock")
        proc.mm.write_struct(address, FLOCK_FORMAT, F_UNLCK, whence, start, length, pid)
        return 0
    if lock_type == F_RDLCK and not file.readable():
        raise SyscallError(errno.EBADF, "a read lock needs a file open for reading")
    if lock_type == F_WRLCK and not file.writable():
        raise SyscallError(errno.EBADF, "a write lock needs a file open for writing")
    return 0


def sys_ioctl(proc: Process, fd: int, request: int, argument: int) -> int:
    """ioctl(2): the terminal requests on a terminal
    (:mod:`minikvm.syscalls.terminal`: TCGETS, TCSETS*, TIOCGWINSZ …; TIOCSTI
    refused), the requests every fd has (FIONBIO, FIOCLEX, FIONREAD), and
    FIONREAD on in-guest pipes; ENOTTY otherwise.  No other ioctl reaches
    the host.  The request is an ``unsigned int``, as the kernel reads it."""
    fd = signed32(fd)
    file = proc.fds.get(fd)
    request &= 0xFFFF_FFFF
    if pty.handles(file, request):
        return pty.pty_ioctl(proc, file, request, argument)   # type: ignore[arg-type]
    if terminal.handles(request):
        return terminal.terminal_ioctl(proc, fd, file, request, argument)
    if request == FIONREAD and isinstance(file, PipeEnd):
        proc.mm.write_struct(argument, "<i", len(file.pipe.data))
        return 0
    answer = terminal.generic_ioctl(proc, fd, file, request, argument)
    if answer is not None:
        return answer
    raise SyscallError(errno.ENOTTY, f"ioctl {request:#x} is not supported")


def sys_pipe2(proc: Process, address: int, flags: int) -> int:
    """pipe2(2): a pipe kept in minikvm's memory, between the guest's threads.

    An empty pipe gives EAGAIN unless another guest thread may fill it (no
    other process can)."""
    flags = signed32(flags)
    # Both fds and the int[2] first: a failure leaves no fd taken.
    proc.fds.check_room(count=2)
    proc.mm.views(address, 8, write=True)
    proc.pipes_made += 1
    pipe = Pipe(number=proc.pipes_made, budget=proc.fds.pipe_budget)
    status = flags & O_NONBLOCK
    read_fd = proc.fds.install(PipeEnd(pipe, False, status), cloexec=bool(flags & O_CLOEXEC))
    write_fd = proc.fds.install(PipeEnd(pipe, True, status), cloexec=bool(flags & O_CLOEXEC))
    proc.mm.write_struct(address, "<ii", read_fd, write_fd)
    return 0


def sys_eventfd2(proc: Process, initial: int, flags: int) -> int:
    """eventfd2(2): an event counter kept by minikvm (``EFD_SEMAPHORE`` too)."""
    flags = signed32(flags)
    if flags & ~(EFD_SEMAPHORE | EFD_CLOEXEC | EFD_NONBLOCK):
        raise SyscallError(errno.EINVAL, f"eventfd2 flags {flags:#x}")
    file = EventFd(initial & 0xFFFF_FFFF, bool(flags & EFD_SEMAPHORE), flags & EFD_NONBLOCK)
    return proc.fds.install(file, cloexec=bool(flags & EFD_CLOEXEC))


def sys_eventfd(proc: Process, initial: int) -> int:
    """eventfd(2): :func:`sys_eventfd2` without flags."""
    return sys_eventfd2(proc, initial, 0)


def sys_pipe(proc: Process, address: int) -> int:
    """pipe(2): :func:`sys_pipe2` without flags."""
    return sys_pipe2(proc, address, 0)


SYSCALLS = [
    Syscall(16, "ioctl", sys_ioctl, ("fd", "hex", "ptr"), PARTIAL,
            "on a terminal: TCGETS, TCSETS, TCSETSW, TCSETSF (and the termios2 forms), "
            "TIOCGWINSZ, TIOCSWINSZ, TIOCGPGRP, TIOCSPGRP, TIOCGSID, TIOCSCTTY, TIOCNOTTY, "
            "TCFLSH, TCXONC, TIOCOUTQ, FIONREAD; on every fd: FIONBIO, FIOCLEX, FIONCLEX, "
            "FIONREAD (pipes, host files); TIOCSTI, TIOCLINUX, TIOCCONS refused (EPERM); "
            "other requests ENOTTY"),
    Syscall(22, "pipe", sys_pipe, ("ptr",), PARTIAL,
            "in-guest pipes; an empty pipe gives EAGAIN unless another thread may fill it"),
    Syscall(293, "pipe2", sys_pipe2, ("ptr", "hex"), PARTIAL,
            "in-guest pipes; an empty pipe gives EAGAIN unless another thread may fill it"),
    Syscall(290, "eventfd2", sys_eventfd2, ("uint", "hex"), PARTIAL,
            "a read of 0 gives EAGAIN unless another thread may write it"),
    Syscall(284, "eventfd", sys_eventfd, ("uint",), PARTIAL,
            "a read of 0 gives EAGAIN unless another thread may write it"),
    Syscall(32, "dup", sys_dup, ("fd",)),
    Syscall(33, "dup2", sys_dup2, ("fd", "fd")),
    Syscall(292, "dup3", sys_dup3, ("fd", "fd", "hex")),
    Syscall(72, "fcntl", sys_fcntl, ("fd", "int", "hex"), PARTIAL,
            "F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD/SETFD, F_GETFL/SETFL, F_GETPIPE_SZ, F_ADD/GET_SEALS; record locks "
            "(F_SETLK, F_OFD_SETLK …) always granted, F_GETLK finds none"),
    Syscall(40, "sendfile", sys_sendfile, ("fd", "fd", "ptr", "uint")),
    Syscall(326, "copy_file_range", sys_copy_file_range,
            ("fd", "ptr", "fd", "ptr", "uint", "hex"), PARTIAL, "between granted files only"),
    Syscall(436, "close_range", sys_close_range, ("uint", "uint", "hex")),
    Syscall(221, "fadvise64", sys_fadvise64, ("fd", "long", "long", "int"), PARTIAL,
            "checked, then ignored (advice only)"),
    Syscall(73, "flock", sys_flock, ("fd", "int"), PARTIAL,
            "always granted: one process has nobody to lock against"),
]
