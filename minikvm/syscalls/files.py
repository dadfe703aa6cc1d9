"""Layer 6 — file system calls: open/read/write/close and their friends.

Every path goes through the sandbox policy (``proc.policy``), the one seam
that decides whether a path may be reached; every guest buffer goes through
the memory manager (``proc.mm``), which bounds-checks it.  Reads and
writes move data between host fds and guest memory with ``os.readv`` /
``os.writev`` on zero-copy views of guest RAM.

Directories (listing, mkdir, unlink, rename, link, symlink) are in
:mod:`minikvm.syscalls.directories`, attributes (truncate, sync, times,
mode, owner) in :mod:`minikvm.syscalls.attributes`, questions about a path
(stat, statx, statfs, readlink, access, the working directory) in
:mod:`minikvm.syscalls.metadata`, and what works on the fd table (dup,
fcntl, ioctl, pipes, eventfds, sendfile) in
:mod:`minikvm.syscalls.descriptors`; all use the path helpers defined here.

Three ways a path reaches the host, chosen by what the call does with the
*final* component of the path:

====================  ==========================================================
opens or follows it   ``policy.open`` / ``policy.stat``: the kernel resolves it
                      beneath its grant (openat, stat, chmod, utimensat, truncate,
                      statfs).  Calls that *change* a file this way check first
                      that its directory entry is in a write grant.
acts on the entry     ``policy.resolve_parent``: the directory that holds it,
                      opened beneath its grant, and one name the host call looks
                      up there (mkdir, unlink, rmdir, rename, link, symlink)
names a virtual one   ``/dev/null`` & co., ``/dev/tty``, and all of ``/proc``
                      (:mod:`minikvm.syscalls.procfs`): answered here, never by
                      the host; a link out of /proc (``/proc/self/root/x``)
                      leads to a guest path that goes to the policy
====================  ==========================================================

The guest's ``.`` and ``..`` are taken lexically by the policy, so the calls
that act on an entry look at the final component *as the guest wrote it*
first (``rmdir("a/.")`` is EINVAL on Linux, not "remove a").

Files are created with the guest's umask applied here; the host's umask
(normally the same 022) applies too, as the host kernel creates the file.
Ownership never changes: ``chown`` to the owner a file already has (or -1)
succeeds and does nothing, anything else is EPERM, as for an unprivileged
user.

Left out on purpose: ``fallocate``, the example tutorial 13 adds with
:meth:`Dispatcher.add <minikvm.syscalls.dispatch.Dispatcher.add>` (move the
tutorial to another call before adding it here).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import posixpath
import re
import select
import stat as stat_module
import time
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import (AT_FDCWD, PATH_MAX, O_CREAT, O_NOFOLLOW, O_PATH, O_TRUNC,
                               O_ACCMODE, O_APPEND, O_CLOEXEC, O_NONBLOCK, O_RDONLY, O_WRONLY)
from minikvm.process import threads
from minikvm.process.fdtable import (SEEK_CUR, SEEK_SET, AboveGrantDirectory, DeviceFile, EventFd,
                                     HostFile, MemFd, OpenFile, PipeEnd, SharedPipeEnd,
                                     SyntheticDirectory, SyntheticFile)
from minikvm.syscalls import procfs, pty, signals
from minikvm.syscalls.base import Syscall, signed32, signed64, views_after
from minikvm.syscalls.memfd import check_memfd_size
from minikvm.syscalls.signalfd import SignalFd

if TYPE_CHECKING:
    from minikvm.process.process import Process

# -- record locks (fcntl(2), asm-generic/fcntl.h) --------------------------------------
MAX_IO = 0x7FFF_F000  # Linux's MAX_RW_COUNT: one read or write moves at most this
UINT_MASK = 0xFFFF_FFFF



# -- changing files ---------------------------------------------------------------------

# -- statfs (asm-generic/statfs.h, linux/magic.h) ------------------------------------------

# -- host calls Python's os module does not offer (x86-64 numbers) ------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def host_call(number: int, *args: object) -> int:
    """``syscall(number, args...)`` on the host; an ``OSError`` on failure."""
    result = _libc.syscall(ctypes.c_long(number), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)


def guest_path(proc: Process, dirfd: int, path: bytes) -> str:
    """The absolute guest path of *path* relative to *dirfd* (or the cwd)."""
    text = os.fsdecode(path)
    if text.startswith("/"):
        return text
    dirfd = signed32(dirfd)
    base = proc.cwd if dirfd == AT_FDCWD else _directory_path(proc, dirfd)
    return posixpath.join(base, text)


def _directory_path(proc: Process, dirfd: int) -> str:
    file = proc.fds.get(dirfd)
    if isinstance(file, SyntheticDirectory):
        return file.path
    if not isinstance(file, HostFile) or not file.path.startswith("/"):
        raise SyscallError(errno.ENOTDIR, "not a directory fd")
    return file.path


def read_path(proc: Process, address: int) -> bytes:
    """A path argument: at most PATH_MAX bytes, ENOENT when empty."""
    path = proc.mm.read_cstring(address, PATH_MAX)
    if not path:
        raise SyscallError(errno.ENOENT, "empty path")
    return path


def final_name(raw: bytes) -> bytes:
    """The last component of a guest path as the guest wrote it: ``b"."`` for
    ``"a/."``, ``b"/"`` for ``"/"``.  Checked before the policy normalises
    the path away."""
    stripped = raw.rstrip(b"/")
    return stripped.rsplit(b"/", 1)[-1] if stripped else b"/"


def entry_path(proc: Process, path: str, follow: bool = False,
               refusal: int = errno.EACCES) -> str:
    """The guest path a call that changes something acts on: *path*
    itself, or where a /proc link leads (``mkdir("/proc/self/cwd/d")``
    makes ``<cwd>/d``; with *follow*, ``chmod("/proc/self/fd/3")`` changes
    the file fd 3 was opened by).  The synthesized /proc itself is never
    changed: *refusal* (EACCES for entries and contents, EPERM for
    metadata, as Linux answers an unprivileged user)."""
    absolute = posixpath.normpath(path)
    if not procfs.owns(absolute):
        return path
    if follow:
        found = procfs.lookup(proc, absolute, follow=True)
    else:
        parent, name = posixpath.split(absolute)
        found = procfs.lookup(proc, parent, follow=True)
        if isinstance(found, procfs.Redirect):
            return posixpath.join(found.path, name)
    if isinstance(found, procfs.Redirect):
        return found.path
    if isinstance(found, procfs.OwnFd):
        file = proc.fds.get(found.fd)
        if follow and isinstance(file, HostFile) and file.path.startswith("/"):
            return file.path
        if not follow:
            raise SyscallError(errno.ENOTDIR, f"{path}: fd {found.fd} is not a directory")
    raise SyscallError(refusal, f"{path}: the synthesized /proc cannot be changed")


def check_writable_entry(proc: Process, path: str, syscall: str) -> None:
    """Raise unless *path*'s directory entry lies in a write grant.

    Calls that change an entry's metadata without following it (chmod,
    utimensat, chown with ``AT_SYMLINK_NOFOLLOW``) need what creating or
    removing it needs.  A grant directory itself is refused: the sandbox does
    not let the guest change the roots it was given.
    """
    with proc.policy.resolve_parent(entry_path(proc, path), proc.cwd, write=True,
                                    syscall=syscall):
        pass


def open_to_change(proc: Process, path: str, follow: bool, syscall: str) -> int:
    """An ``O_PATH`` host fd on a file the guest may change; a final symlink
    is followed beneath the grant when *follow*, and the rights are those of
    where it leads (:meth:`~minikvm.sandbox.policy.Policy.open_to_change`).
    The caller closes it."""
    return proc.policy.open_to_change(entry_path(proc, path, follow, errno.EPERM), proc.cwd,
                                      follow, syscall=syscall)


def check_file_change(proc: Process, file: OpenFile, syscall: str) -> None:
    """Raise unless the guest may change the metadata of an open *file*
    (fchmod, futimens, fchown): a granted file must be in a write grant
    where it really is, whatever path opened it; our stdio is the user's,
    not the guest's; devices are root's."""
    if isinstance(file, MemFd):
        return                               # the guest's own memory
    if isinstance(file, HostFile) and file.path.startswith("/"):
        proc.policy.check_may_change(file.host_fd, file.path, syscall=syscall)
    elif isinstance(file, HostFile):
        raise proc.policy.refuse(syscall, file.path)
    else:
        raise SyscallError(errno.EPERM, f"{file.kind} files belong to root")


# -- opening and closing ---------------------------------------------------------
#: The names by which a program opens a file it already has: ``/dev/stdin``
#: (on Linux a link to ``/proc/self/fd/0``), ``/dev/stdout``, ``/dev/stderr``,
#: ``/dev/fd/N`` and ``/proc/self/fd/N`` (``/proc/PID/fd/N`` with its own pid).
OWN_FD_PATH = re.compile(r"/dev/(?P<stdio>stdin|stdout|stderr)|/dev/fd/(?P<devfd>\d+)"
                         r"|/proc/(?P<pid>self|thread-self|\d+)/fd/(?P<fd>\d+)")
STDIO_NUMBERS = {"stdin": 0, "stdout": 1, "stderr": 2}


def own_open_file(proc: Process, path: str, flags: int) -> OpenFile | None:
    """The file ``open(path)`` names when *path* is one of the guest's own
    fds by name (:data:`OWN_FD_PATH`), or None for any other path.

    ``echo x > /dev/stderr`` and bash's ``<(cmd)`` open these.  The host's
    own ``/dev/stderr`` would be minikvm's, so the answer comes from the
    guest's fd table (:func:`own_fd_file`).
    """
    match = OWN_FD_PATH.fullmatch(posixpath.normpath(posixpath.join(proc.cwd, path)))
    if match is None or match["pid"] not in (None, "self", "thread-self", str(proc.pid)):
        return None
    number = (STDIO_NUMBERS[match["stdio"]] if match["stdio"]
              else int(match["devfd"] or match["fd"]))
    return own_fd_file(proc, number, path, flags)


def own_fd_file(proc: Process, number: int, path: str, flags: int) -> OpenFile:
    """The open file guest fd *number* holds, opened again by its name
    *path*: the same open file as that fd (as ``dup`` gives; Linux makes a
    new open of the same file, which differs only for a regular file's
    offset and ``O_TRUNC``).  It may not be opened for more than the fd
    allows (EACCES: a read-only fd cannot become a writable one), and a fd
    that is not open is ENOENT, as on Linux."""
    entry = proc.fds.entries.get(number)
    if entry is None:
        raise SyscallError(errno.ENOENT, f"{path}: fd {number} is not open")
    file = entry.file
    wants = flags & O_ACCMODE
    if (wants != O_WRONLY and not file.readable()) or (wants != O_RDONLY and not file.writable()):
        raise SyscallError(errno.EACCES, f"{path}: fd {number} is not open for "
                           f"{'writing' if wants != O_RDONLY else 'reading'}")
    return file


#: ioctl asking a terminal for its session (asm-generic/ioctls.h); it fails
#: with ENOTTY on a terminal that is not the caller's controlling terminal.
TIOCGSID = 0x5429
#: The name of the controlling terminal, whatever it is (tty(4)).
CONTROLLING_TERMINAL = "/dev/tty"


def controlling_terminal(proc: Process, flags: int) -> OpenFile:
    """``open("/dev/tty")``: the sandbox's controlling terminal, when one
    of the stdio minikvm was given is it (``TIOCGSID`` succeeds only on
    the caller's controlling terminal), opened again with the guest's
    access mode; ENXIO without one, as Linux answers a process that has no
    controlling terminal.  The host's /dev/tty is never opened by name.
    In a session whose controlling terminal is a sandbox pty (``xterm``'s
    shell), that pty (:mod:`minikvm.syscalls.pty`)."""
    own_pty = pty.controlling_pty(proc, flags)
    if own_pty is not None:
        return own_pty
    for entry in list(proc.fds.entries.values()):
        file = entry.file
        if not (isinstance(file, HostFile) and file.path.startswith("<stdio")
                and file.host_fd is not None and os.isatty(file.host_fd)):
            continue
        try:
            fcntl.ioctl(file.host_fd, TIOCGSID, bytes(4))
        except OSError:
            continue                    # a terminal, but not the controlling one
        mode = flags & (O_ACCMODE | O_NONBLOCK)
        try:
            host_fd = os.open(f"/proc/self/fd/{file.host_fd}", mode | os.O_NOCTTY | O_CLOEXEC)
        except OSError:
            host_fd = os.dup(file.host_fd)      # the same terminal, the same open mode
        return HostFile(host_fd, "<controlling terminal>", mode | (flags & O_APPEND))
    raise SyscallError(errno.ENXIO, "/dev/tty: the sandbox has no controlling terminal")


def synthesized_open(proc: Process, path: str, flags: int) -> tuple[OpenFile | None, str]:
    """A file of the synthesized /proc (:mod:`minikvm.syscalls.procfs`) or
    /dev/tty for ``open(path, flags)``; otherwise None and the guest path
    the policy must open (a link out of /proc leads to another)."""
    absolute = posixpath.normpath(path) + ("/" if path.endswith("/") else "")
    if absolute.rstrip("/") == CONTROLLING_TERMINAL:
        return controlling_terminal(proc, flags), path
    own_pty = pty.pty_open(proc, posixpath.normpath(posixpath.join(proc.cwd, path)), flags)
    if own_pty is not None:
        return own_pty, path
    try:
        found = procfs.lookup(proc, absolute, follow=not flags & O_NOFOLLOW)
    except SyscallError as error:
        parent = posixpath.dirname(absolute.rstrip("/"))
        if error.errno == errno.ENOENT and flags & O_CREAT and procfs.owns(parent):
            if isinstance(procfs.lookup(proc, parent), procfs.Node):
                raise SyscallError(errno.EACCES, f"{path}: nothing can be created in "
                                   f"{parent}") from None
        raise
    if found is None:
        return None, path
    if isinstance(found, procfs.Redirect):
        return None, found.path
    if isinstance(found, procfs.OwnFd):
        return own_fd_file(proc, found.fd, path, flags), path
    if path.endswith("/") and found.kind != procfs.DIRECTORY:
        raise SyscallError(errno.ENOTDIR, f"{path}: not a directory")
    return procfs.open_node(found, flags), path


def sys_openat(proc: Process, dirfd: int, path_address: int, flags: int, mode: int) -> int:
    """openat(2): open a file through the policy, or one of its virtual devices.

    The path is resolved by the kernel beneath a grant (:mod:`minikvm.sandbox.policy`):
    ENOENT outside the grants (they do not exist for the guest), EACCES for a
    write in a read-only grant; EMFILE past ``--max-fds``.  The synthesized
    /proc and /dev/tty are answered first, never by the host."""
    path = guest_path(proc, dirfd, read_path(proc, path_address))
    flags = signed32(flags)
    proc.fds.check_room()   # EMFILE before O_CREAT or O_TRUNC changes a file
    own = own_open_file(proc, path, flags)
    if own is not None:
        return proc.fds.install(own, cloexec=bool(flags & O_CLOEXEC))
    file, path = synthesized_open(proc, path, flags)
    if file is not None and id(file) in proc.fds.references:
        return proc.fds.install(file, cloexec=bool(flags & O_CLOEXEC))   # an fd's own file
    device = proc.policy.is_virtual_device(path, proc.cwd)
    if file is not None:
        pass                                # made for this open: /proc, /dev/tty
    elif device:
        file = DeviceFile(device, path, flags & (O_ACCMODE | O_APPEND | O_NONBLOCK),
                          proc.random)
    else:
        host_fd = proc.policy.open(path, flags, mode & ~proc.umask & 0o7777, proc.cwd,
                                   syscall="openat")
        above = proc.policy.visible_entries(path, proc.cwd) is not None and not flags & O_PATH
        file = (AboveGrantDirectory if above else HostFile)(
            host_fd, posixpath.normpath(path), flags & (O_ACCMODE | O_APPEND | O_NONBLOCK))
    try:
        return proc.fds.install(file, cloexec=bool(flags & O_CLOEXEC))
    except SyscallError:
        file.close()
        raise


def sys_open(proc: Process, path_address: int, flags: int, mode: int) -> int:
    """open(2): :func:`sys_openat` at the working directory."""
    return sys_openat(proc, AT_FDCWD, path_address, flags, mode)


def sys_creat(proc: Process, path_address: int, mode: int) -> int:
    """creat(2): :func:`sys_open` with ``O_CREAT | O_WRONLY | O_TRUNC``."""
    return sys_openat(proc, AT_FDCWD, path_address, O_CREAT | O_WRONLY | O_TRUNC, mode)


def sys_close(proc: Process, fd: int) -> int:
    """close(2): free an fd (EBADF for one that is not open)."""
    proc.fds.close(signed32(fd))
    return 0


# -- reading and writing ---------------------------------------------------------------
def sys_read(proc: Process, fd: int, buffer: int, count: int) -> int:
    """read(2): read from an fd into guest memory (at most ``MAX_IO`` bytes a call).

    EFAULT for a buffer outside the guest's mappings, before anything is read."""
    file = proc.fds.get(signed32(fd))
    return _read(proc, file, proc.mm.views(buffer, min(count, MAX_IO), write=True))


def _read(proc: Process, file, views: list[memoryview]) -> int:
    if isinstance(file, SharedPipeEnd) and views:
        return _read_shared_pipe(proc, file, views)
    if isinstance(file, HostFile) and views and may_wait(file):
        if file.status_flags & O_NONBLOCK:
            _check_ready_now(file, select.POLLIN)
        elif len(proc.threads) > 1:
            _wait_for_host_fd(proc, file)
        else:
            signals.wait_for_host_fd(proc, file.host_fd, select.POLLIN)
    while True:
        try:
            return file.readv(views)
        except SyscallError as error:
            if error.errno != errno.EAGAIN or file.status_flags & O_NONBLOCK \
                    or file.wakes_at() is None:
                _wait_for_pipe(proc, file, error, "read from an empty pipe")
                raise
            _wait_for_time(proc, file)


def _read_shared_pipe(proc: Process, file: SharedPipeEnd, views: list[memoryview]) -> int:
    """A read of a pipe shared with other processes (its host fd never
    blocks): EAGAIN at once when the guest's fd is non-blocking; otherwise
    wait for data or the last writer's close — with other threads, while
    they run — and read again if another process took the data first."""
    while True:
        try:
            return file.readv(views)
        except SyscallError as error:
            if error.errno != errno.EAGAIN or file.status_flags & O_NONBLOCK:
                raise
        if len(proc.threads) > 1:
            threads.retry_after_others(proc, "read from a pipe",
                                       lambda seconds: signals.sleep(proc, seconds),
                                       watch=((file.host_fd, select.POLLIN),))
        signals.wait_for_host_fd(proc, file.host_fd, select.POLLIN)


def _write_shared_pipe(proc: Process, file: SharedPipeEnd, views: list[memoryview]) -> int:
    """A write to a pipe shared with other processes: what fits now, and
    for a blocking fd the rest as room comes (a signal's handler or, with
    other threads, the first wait ends it early with what was written)."""
    total = 0
    while True:
        try:
            written = file.writev(views)
        except SyscallError as error:
            if error.errno != errno.EAGAIN or file.status_flags & O_NONBLOCK and not total:
                raise
            written = 0
        total += written
        views = views_after(views, written)
        if not views or file.status_flags & O_NONBLOCK:
            return total
        if len(proc.threads) > 1:
            if total:
                return total
            threads.retry_after_others(proc, "write to a full pipe",
                                       lambda seconds: signals.sleep(proc, seconds),
                                       watch=((file.host_fd, select.POLLOUT),))
        try:
            signals.wait_for_host_fd(proc, file.host_fd, select.POLLOUT)
        except SyscallError:
            if total:
                return total
            raise


def may_wait(file: HostFile) -> bool:
    """Whether a read or write of this host fd may wait: a terminal, a pipe
    or FIFO, a socket — not a regular file or a directory, which the host
    answers at once.  Asked of the host each time (one ``fstat``): a
    cached answer would be state a snapshot must compare."""
    if file.host_fd is None:
        return False
    mode = os.fstat(file.host_fd).st_mode
    return (stat_module.S_ISFIFO(mode) or stat_module.S_ISCHR(mode)
            or stat_module.S_ISSOCK(mode))


def _check_ready_now(file: HostFile, events: int) -> None:
    """A non-blocking (``O_NONBLOCK``, ``FIONBIO``) read or write of a host
    fd that would wait: EAGAIN, as Linux answers.  The host fd itself stays
    blocking — it is the user's terminal, shared with the shell — so the
    guest's flag is honoured here."""
    poller = select.poll()
    poller.register(file.host_fd, events)
    if not poller.poll(0):
        raise SyscallError(errno.EAGAIN, f"{file.link_target()}: not ready, and the fd is "
                                         "non-blocking")


def _wait_for_time(proc: Process, file: OpenFile) -> None:
    """A blocking read of a file that becomes readable by itself at a time
    (a timerfd: :meth:`~minikvm.process.fdtable.OpenFile.wakes_at`) waits
    until then: with other threads, they run meanwhile and the read is made
    again at that time; alone, the host sleeps (the run's time limit ends
    the sleep, and the read with EINTR; a signal's handler too)."""
    wake = file.wakes_at()
    if len(proc.threads) > 1:
        threads.retry_after_others(proc, f"read from a {file.kind}",
                                   lambda seconds: signals.sleep(proc, seconds), wake_at=wake)
        return
    signals.sleep(proc, max(0.0, wake - time.monotonic()))
    if proc.machine.stopping:
        raise SyscallError(errno.EINTR, "interrupted: the run is being stopped")


def _wait_for_host_fd(proc: Process, file: HostFile) -> None:
    """With other threads, a read that would block on a host fd (a
    terminal, a pipe from the host) must not block the host: they would all
    stop.  The calling thread waits instead, while the others run
    (:func:`minikvm.process.threads.retry_after_others`, watching the fd)."""
    if file.status_flags & O_NONBLOCK:
        return
    poller = select.poll()
    poller.register(file.host_fd, select.POLLIN)
    if not poller.poll(0):
        threads.retry_after_others(proc, "read from a host fd",
                                   lambda seconds: signals.sleep(proc, seconds),
                                   watch=((file.host_fd, select.POLLIN),))


def _wait_for_pipe(proc: Process, file, error: SyscallError, what: str) -> None:
    """A read of an empty pipe or a write to a full one would block: with
    other threads that may write or read it, the calling thread waits for
    them (:func:`minikvm.process.threads.retry_after_others`).  Alone, it gets the
    EAGAIN (it would wait for ever)."""
    if (error.errno == errno.EAGAIN and isinstance(file, (PipeEnd, EventFd, SignalFd))
            and not file.status_flags & O_NONBLOCK and len(proc.threads) > 1):
        threads.retry_after_others(proc, what, lambda seconds: signals.sleep(proc, seconds))


def sys_write(proc: Process, fd: int, buffer: int, count: int) -> int:
    """write(2): write guest memory to an fd (at most ``MAX_IO`` bytes a call).

    EFAULT for a buffer outside the guest's mappings; EFBIG past
    ``--max-file-size``."""
    file = proc.fds.get(signed32(fd))
    views = proc.mm.views(buffer, min(count, MAX_IO))
    check_file_size(proc, file, count)
    return _write(proc, file, views)


def _iovec_views(proc: Process, address: int, count: int, write: bool) -> list[memoryview]:
    """The guest buffers of an iovec array, cut so that together they hold
    at most MAX_IO bytes, as Linux's ``__import_iovec`` shortens them: 1024
    iovecs naming the same 1 GiB buffer are 2 GiB of work, not 1 TiB."""
    views: list[memoryview] = []
    total = 0
    for base, length in proc.mm.read_iovec(address, signed32(count)):
        length = min(length, MAX_IO - total)
        views.extend(proc.mm.views(base, length, write=write))
        total += length
    return views


def sys_readv(proc: Process, fd: int, iov: int, count: int) -> int:
    """readv(2): :func:`sys_read` into an iovec array (``UIO_MAXIOV`` at most)."""
    file = proc.fds.get(signed32(fd))
    return _read(proc, file, _iovec_views(proc, iov, count, write=True))


def sys_writev(proc: Process, fd: int, iov: int, count: int) -> int:
    """writev(2): :func:`sys_write` from an iovec array (``UIO_MAXIOV`` at most)."""
    file = proc.fds.get(signed32(fd))
    views = _iovec_views(proc, iov, count, write=False)
    check_file_size(proc, file, sum(len(v) for v in views))
    return _write(proc, file, views)


def _write(proc: Process, file, views: list[memoryview]) -> int:
    """Write, and on EPIPE (no reader left) send SIGPIPE first, as Linux
    does: ``yes | head -1`` ends ``yes`` with status 141.  A write to a
    host pipe or terminal that is full waits as :func:`_read` does (a
    signal from outside interrupts it)."""
    if isinstance(file, SharedPipeEnd) and views and file.writable():
        try:
            return _write_shared_pipe(proc, file, views)
        except BrokenPipeError:
            signals.broken_pipe(proc)
            raise
    if isinstance(file, HostFile) and views and file.writable() and may_wait(file):
        if file.status_flags & O_NONBLOCK:
            _check_ready_now(file, select.POLLOUT)
        elif len(proc.threads) == 1:
            signals.wait_for_host_fd(proc, file.host_fd, select.POLLOUT)
    try:
        return file.writev(views)
    except (BrokenPipeError, SyscallError) as error:
        if error.errno == errno.EPIPE:
            signals.broken_pipe(proc)
        if isinstance(error, SyscallError):
            _wait_for_pipe(proc, file, error, "write to a full pipe")
        raise


def check_file_size(proc: Process, file, count: int, position: int | None = None,
                     syscall: str = "write") -> None:
    """EFBIG (from the policy) if writing *count* bytes at *position* (the
    file's own position when None) would grow a granted file past the limit;
    ENOSPC if it would take a memfd past the memfd budget."""
    if isinstance(file, MemFd):
        if position is None:
            position = os.fstat(file.host_fd).st_size if file.status_flags & O_APPEND else \
                os.lseek(file.host_fd, 0, os.SEEK_CUR)
        check_memfd_size(proc, file, position + count)
        return
    limit = proc.policy.max_file_size
    if limit is None or not isinstance(file, HostFile) or file.path.startswith("<"):
        return
    st = os.fstat(file.host_fd)
    if not stat_module.S_ISREG(st.st_mode):
        return
    if position is None:
        position = st.st_size if file.status_flags & O_APPEND else \
            os.lseek(file.host_fd, 0, os.SEEK_CUR)
    if position + count > limit:
        proc.policy.check_file_size(position + count, path=file.path, syscall=syscall)


def _host_fd(proc: Process, fd: int) -> int:
    file = proc.fds.get(signed32(fd))
    if file.host_fd is None:
        raise SyscallError(errno.ESPIPE, "not a seekable file")
    return file.host_fd


def sys_pread64(proc: Process, fd: int, buffer: int, count: int, offset: int) -> int:
    """pread64(2): read at an offset, without moving the file position (host
    files and the synthesized /proc's)."""
    file = proc.fds.get(signed32(fd))
    if isinstance(file, SyntheticFile):
        return file.pread(proc.mm.views(buffer, min(count, MAX_IO), write=True), signed64(offset))
    host_fd = _host_fd(proc, fd)
    return os.preadv(host_fd, proc.mm.views(buffer, min(count, MAX_IO), write=True),
                     signed64(offset))


def sys_pwrite64(proc: Process, fd: int, buffer: int, count: int, offset: int) -> int:
    """pwrite64(2): write at an offset, without moving the file position.

    EBADF for an fd not open for writing; EFBIG past ``--max-file-size``."""
    if isinstance(proc.fds.get(signed32(fd)), SyntheticFile):
        raise SyscallError(errno.EBADF, "a /proc file is not open for writing")
    host_fd = _host_fd(proc, fd)
    file = proc.fds.get(signed32(fd))
    if not file.writable():
        raise SyscallError(errno.EBADF, "not open for writing")
    count = min(count, MAX_IO)
    check_file_size(proc, file, count, signed64(offset), syscall="pwrite64")
    return os.pwritev(host_fd, proc.mm.views(buffer, count), signed64(offset))


def sys_lseek(proc: Process, fd: int, offset: int, whence: int) -> int:
    """lseek(2): move a file's position; pipes are ESPIPE, devices stay at 0.

    A directory's position is the index into minikvm's copy of its listing."""
    file = proc.fds.get(signed32(fd))
    if isinstance(file, DeviceFile):
        return 0
    if isinstance(file, (SyntheticFile, SyntheticDirectory)):
        return file.seek(signed64(offset), signed32(whence))
    if file.host_fd is None:
        raise SyscallError(errno.ESPIPE, "pipes cannot seek")
    if isinstance(file, HostFile) and file.is_directory():
        return _seek_directory(file, signed64(offset), signed32(whence))
    return os.lseek(file.host_fd, signed64(offset), signed32(whence))


def _seek_directory(file: HostFile, offset: int, whence: int) -> int:
    """lseek on a directory moves in its listing; back to 0 reads it again
    (``rewinddir`` sees files created since)."""
    if whence == SEEK_SET:
        position = offset
    elif whence == SEEK_CUR:
        position = file.directory_offset + offset
    else:
        raise SyscallError(errno.EINVAL, f"whence {whence} on a directory")
    if position < 0:
        raise SyscallError(errno.EINVAL, f"directory offset {position}")
    if position == 0:
        file.directory_entries = None
    file.directory_offset = position
    return position


SYSCALLS = [
    Syscall(0, "read", sys_read, ("fd", "outbuf", "uint")),
    Syscall(1, "write", sys_write, ("fd", "inbuf", "uint")),
    Syscall(2, "open", sys_open, ("path", "oflags", "mode")),
    Syscall(3, "close", sys_close, ("fd",)),
    Syscall(8, "lseek", sys_lseek, ("fd", "long", "int")),
    Syscall(17, "pread64", sys_pread64, ("fd", "outbuf", "uint", "long")),
    Syscall(18, "pwrite64", sys_pwrite64, ("fd", "inbuf", "uint", "long")),
    Syscall(19, "readv", sys_readv, ("fd", "ptr", "int")),
    Syscall(20, "writev", sys_writev, ("fd", "ptr", "int")),
    Syscall(85, "creat", sys_creat, ("path", "mode")),
    Syscall(257, "openat", sys_openat, ("dirfd", "path", "oflags", "mode")),
]
