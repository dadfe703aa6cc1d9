"""Layer 6 — file system calls: open/read/write/close and their friends.

Every path goes through the sandbox policy (``proc.policy``), the one seam
that decides whether a path may be reached; every guest buffer goes through
the memory manager (``proc.mm``), which bounds-checks it.  Reads and
writes move data between host fds and guest memory with ``os.readv`` /
``os.writev`` on zero-copy views of guest RAM.

Directories (listing, mkdir, unlink, rename, link, symlink) are in
:mod:`minikvm.syscalls.directories`, attributes (truncate, sync, times,
mode, owner) in :mod:`minikvm.syscalls.attributes`; both use the path
helpers defined here.

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
names a virtual one   ``/dev/null`` & co., ``/proc/self/exe``, ``/proc/self/fd/N``
                      and ``/proc/self/cwd``: answered here, never by the host
====================  ==========================================================

The guest's ``.`` and ``..`` are taken lexically by the policy, so the calls
that act on an entry look at the final component *as the guest wrote it*
first (``rmdir("a/.")`` is EINVAL on Linux, not "remove a").

Files are created with the guest's umask applied here; the host's umask
(normally the same 022) applies too, as the host kernel creates the file.
Ownership never changes: ``chown`` to the owner a file already has (or -1)
succeeds and does nothing, anything else is EPERM, as for an unprivileged
user.  ``flock`` and ``fadvise64`` are accepted and do nothing: one
process has nobody to lock against; so are ``fcntl``'s record locks
(``F_SETLK``, ``F_OFD_SETLK`` …), after checking their ``struct flock``.

Left out on purpose: ``fallocate``, the example tutorial 13 adds with
:meth:`Dispatcher.add <minikvm.syscalls.dispatch.Dispatcher.add>` (move the
tutorial to another call before adding it here).
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import re
import select
import stat as stat_module
import struct
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import (AT_EMPTY_PATH, AT_FDCWD, AT_NO_AUTOMOUNT, AT_SYMLINK_NOFOLLOW,
                               F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_GETFL, F_GETLK, F_GETPIPE_SZ,
                               F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW, F_SETFD, F_SETFL, F_SETLK,
                               F_SETLKW, NSEC_PER_SEC, O_CREAT, O_PATH, O_TRUNC,
                               FD_CLOEXEC, O_ACCMODE, O_APPEND, O_CLOEXEC, O_NONBLOCK, O_WRONLY)
from minikvm.process import threads
from minikvm.process.fdtable import (PIPE_CAPACITY, AboveGrantDirectory, DeviceFile, EventFd,
                                     HostFile, OpenFile, Pipe, PipeEnd)
from minikvm.syscalls import signals
from minikvm.syscalls.base import PARTIAL, SUPPORTED, Syscall, signed32, signed64

if TYPE_CHECKING:
    from minikvm.process.process import Process

AT_STATX_SYNC_TYPE = 0x6000    # AT_STATX_FORCE_SYNC | AT_STATX_DONT_SYNC: hints
# -- record locks (fcntl(2), asm-generic/fcntl.h) --------------------------------------
F_RDLCK, F_WRLCK, F_UNLCK = 0, 1, 2
#: ``struct flock`` on x86-64: l_type, l_whence (short); l_start, l_len (off_t); l_pid
FLOCK_FORMAT = "<hh4xqqi4x"
TCGETS = 0x5401
TIOCGWINSZ = 0x5413
TIOCGPGRP = 0x540F
FIONREAD = 0x541B
SEEK_SET = 0
SEEK_CUR = 1
SEEK_END = 2
PATH_MAX = 4096
MAX_IO = 0x7FFF_F000  # Linux's MAX_RW_COUNT: one read or write moves at most this
UINT_MASK = 0xFFFF_FFFF
#: ``struct stat`` on x86-64 (asm/stat.h): 144 bytes
STAT_FORMAT = "<QQQIIIiQqqqqqqqqq24x"

# -- directory listings (linux/dirent.h, fs/readdir.c) --------------------------------
DT_UNKNOWN, DT_DIR, DT_REG, DT_LNK = 0, 4, 8, 10

# -- statx (linux/stat.h) --------------------------------------------------------------
#: ``struct statx``: 256 bytes.  mask, blksize, attributes; nlink, uid, gid, mode;
#: ino, size, blocks, attributes_mask; atime, btime, ctime, mtime (each tv_sec,
#: tv_nsec, reserved); rdev major/minor, dev major/minor; mnt_id, dio alignments.
STATX_FORMAT = "<IIQIIIH2xQQQQ" + "qIi" * 4 + "IIIIQII96x"
STATX_BASIC_STATS = 0x7FF       # type, mode, nlink, uid, gid, times, ino, size, blocks
STATX__RESERVED = 0x8000_0000   # asking for it is EINVAL

# -- changing files ---------------------------------------------------------------------
CLOSE_RANGE_UNSHARE = 2
CLOSE_RANGE_CLOEXEC = 4
LOCK_SH, LOCK_EX, LOCK_NB, LOCK_UN = 1, 2, 4, 8
POSIX_FADV_NOREUSE = 5          # the highest fadvise advice
#: how much sendfile moves per call when Python has to copy (pipes, devices):
#: a short count is a valid answer, and the guest asks again
COPY_CHUNK = 1 << 20

# -- statfs (asm-generic/statfs.h, linux/magic.h) ------------------------------------------
#: ``struct statfs``: type, bsize, blocks, bfree, bavail, files, ffree, fsid[2],
#: namelen, frsize, flags, spare[4]: 120 bytes
STATFS_FORMAT = "<qqQQQQQiiqqq32x"
STATFS_SIZE = struct.calcsize(STATFS_FORMAT)
TMPFS_MAGIC = 0x0102_1994       # what /dev (devtmpfs) reports
PIPEFS_MAGIC = 0x5049_5045
NAME_MAX = 255
#: the block size shown for files that exist only in minikvm (devices, pipes)
VIRTUAL_BLOCK_SIZE = 4096

# -- host calls Python's os module does not offer (x86-64 numbers) ------------------------
SYS_fstatfs = 138
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


def check_writable_entry(proc: Process, path: str, syscall: str) -> None:
    """Raise unless *path*'s directory entry lies in a write grant.

    Calls that change an entry's metadata without following it (chmod,
    utimensat, chown with ``AT_SYMLINK_NOFOLLOW``) need what creating or
    removing it needs.  A grant directory itself is refused: the sandbox does
    not let the guest change the roots it was given.
    """
    with proc.policy.resolve_parent(path, proc.cwd, write=True, syscall=syscall):
        pass


def open_to_change(proc: Process, path: str, follow: bool, syscall: str) -> int:
    """An ``O_PATH`` host fd on a file the guest may change; a final symlink
    is followed beneath the grant when *follow*, and the rights are those of
    where it leads (:meth:`~minikvm.sandbox.policy.Policy.open_to_change`).
    The caller closes it."""
    return proc.policy.open_to_change(path, proc.cwd, follow, syscall=syscall)


def check_file_change(proc: Process, file: OpenFile, syscall: str) -> None:
    """Raise unless the guest may change the metadata of an open *file*
    (fchmod, futimens, fchown): a granted file must be in a write grant
    where it really is, whatever path opened it; our stdio is the user's,
    not the guest's; devices are root's."""
    if isinstance(file, HostFile) and file.path.startswith("/"):
        proc.policy.check_may_change(file.host_fd, file.path, syscall=syscall)
    elif isinstance(file, HostFile):
        raise proc.policy.refuse(syscall, file.path)
    else:
        raise SyscallError(errno.EPERM, f"{file.kind} files belong to root")


# -- opening and closing ---------------------------------------------------------
def sys_openat(proc: Process, dirfd: int, path_address: int, flags: int, mode: int) -> int:
    """openat(2): open a file through the policy, or one of its virtual devices.

    The path is resolved by the kernel beneath a grant (:mod:`minikvm.sandbox.policy`):
    ENOENT outside the grants (they do not exist for the guest), EACCES for a
    write in a read-only grant; EMFILE past
    ``--max-fds``."""
    path = guest_path(proc, dirfd, read_path(proc, path_address))
    flags = signed32(flags)
    device = proc.policy.is_virtual_device(path, proc.cwd)
    if device:
        file = DeviceFile(device, path, flags & (O_ACCMODE | O_APPEND | O_NONBLOCK))
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
    if len(proc.threads) > 1 and isinstance(file, HostFile) and views:
        _wait_for_host_fd(proc, file)
    try:
        return file.readv(views)
    except SyscallError as error:
        _wait_for_pipe(proc, file, error, "read from an empty pipe")
        raise


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
    if (error.errno == errno.EAGAIN and isinstance(file, (PipeEnd, EventFd))
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
    does: ``yes | head -1`` ends ``yes`` with status 141."""
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
    file's own position when None) would grow a granted file past the limit."""
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
    """pread64(2): read at an offset, without moving the file position (host files)."""
    host_fd = _host_fd(proc, fd)
    return os.preadv(host_fd, proc.mm.views(buffer, min(count, MAX_IO), write=True),
                     signed64(offset))


def sys_pwrite64(proc: Process, fd: int, buffer: int, count: int, offset: int) -> int:
    """pwrite64(2): write at an offset, without moving the file position.

    EBADF for an fd not open for writing; EFBIG past ``--max-file-size``."""
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
    if file.host_fd is None:
        raise SyscallError(errno.ESPIPE, "pipes cannot seek")
    if isinstance(file, HostFile) and file.is_directory():
        return _seek_directory(file, signed64(offset), signed32(whence))
    return os.lseek(file.host_fd, signed64(offset), signed32(whence))


# -- metadata ---------------------------------------------------------------------
def pack_stat(st: os.stat_result) -> bytes:
    """A host ``os.stat_result`` as the guest's ``struct stat``."""
    return struct.pack(STAT_FORMAT, st.st_dev, st.st_ino, st.st_nlink, st.st_mode, st.st_uid,
                       st.st_gid, 0, st.st_rdev, st.st_size, st.st_blksize, st.st_blocks,
                       int(st.st_atime), st.st_atime_ns % 10**9, int(st.st_mtime),
                       st.st_mtime_ns % 10**9, int(st.st_ctime), st.st_ctime_ns % 10**9)


#: the ``st_dev`` of files minikvm makes up (devices, pipes): no host device
VIRTUAL_DEV = 0


def synthetic_stat(mode: int, uid: int, gid: int, rdev: int = 0, ino: int = 0) -> os.stat_result:
    """A complete ``os.stat_result`` for a file that exists only in minikvm
    (every field :func:`pack_stat` and :func:`pack_statx` read, times 0)."""
    return os.stat_result((mode, ino, VIRTUAL_DEV, 1, uid, gid, 0, 0, 0, 0),
                          {"st_atime_ns": 0, "st_mtime_ns": 0, "st_ctime_ns": 0,
                           "st_blksize": VIRTUAL_BLOCK_SIZE, "st_blocks": 0, "st_rdev": rdev})


def stat_of_file(file) -> os.stat_result:
    """fstat of an open guest file, whatever kind it is: a host fd's own
    stat; a virtual device as Linux shows it (root's character device
    1,3 for /dev/null …); an in-guest pipe as the program's own FIFO."""
    if file.host_fd is not None:
        return os.fstat(file.host_fd)
    if isinstance(file, DeviceFile):
        return synthetic_stat(stat_module.S_IFCHR | 0o666, 0, 0, DeviceFile.RDEV[file.name])
    number = file.pipe.number if isinstance(file, PipeEnd) else 0
    return synthetic_stat(stat_module.S_IFIFO | 0o600, os.getuid(), os.getgid(), ino=number)


def stat_of_path(proc: Process, dirfd: int, path_address: int, flags: int,
                 syscall: str = "newfstatat") -> os.stat_result:
    """The stat of a path argument (AT_EMPTY_PATH: of *dirfd* itself)."""
    flags = signed32(flags)
    raw = proc.mm.read_cstring(path_address, PATH_MAX)
    if not raw and flags & AT_EMPTY_PATH:
        dirfd = signed32(dirfd)
        if dirfd == AT_FDCWD:
            return proc.policy.stat(proc.cwd, proc.cwd, True, syscall=syscall)
        return stat_of_file(proc.fds.get(dirfd))
    if not raw:
        raise SyscallError(errno.ENOENT, "empty path")
    path = guest_path(proc, dirfd, raw)
    device = proc.policy.is_virtual_device(path, proc.cwd)
    if device:
        return stat_of_file(DeviceFile(device, path, 0))
    return proc.policy.stat(path, proc.cwd, not flags & AT_SYMLINK_NOFOLLOW, syscall=syscall)


def sys_fstat(proc: Process, fd: int, address: int) -> int:
    """fstat(2): a ``struct stat`` of an open file (devices and pipes described
    by minikvm as Linux would)."""
    proc.mm.write(address, pack_stat(stat_of_file(proc.fds.get(signed32(fd)))))
    return 0


def sys_newfstatat(proc: Process, dirfd: int, path_address: int, address: int, flags: int) -> int:
    """newfstatat(2): a ``struct stat`` of a path, through the policy.

    The directories above a grant may be stat'ed; elsewhere outside the
    grants nothing exists (ENOENT)."""
    proc.mm.write(address, pack_stat(stat_of_path(proc, dirfd, path_address, flags)))
    return 0


def sys_stat(proc: Process, path_address: int, address: int) -> int:
    """stat(2): :func:`sys_newfstatat` at the working directory, following symlinks."""
    return sys_newfstatat(proc, AT_FDCWD, path_address, address, 0)


def sys_lstat(proc: Process, path_address: int, address: int) -> int:
    """lstat(2): :func:`sys_newfstatat` on the link itself."""
    return sys_newfstatat(proc, AT_FDCWD, path_address, address, AT_SYMLINK_NOFOLLOW)


def pack_statx(st: os.stat_result) -> bytes:
    """A host ``os.stat_result`` as the guest's ``struct statx`` (the basic
    fields; no birth time, which ``os.stat`` does not give)."""
    def timestamp(ns: int) -> tuple[int, int, int]:
        return ns // NSEC_PER_SEC, ns % NSEC_PER_SEC, 0
    return struct.pack(STATX_FORMAT, STATX_BASIC_STATS, st.st_blksize, 0,
                       st.st_nlink, st.st_uid, st.st_gid, st.st_mode & 0xFFFF,
                       st.st_ino, st.st_size, st.st_blocks, 0,
                       *timestamp(st.st_atime_ns), 0, 0, 0, *timestamp(st.st_ctime_ns),
                       *timestamp(st.st_mtime_ns),
                       os.major(st.st_rdev), os.minor(st.st_rdev),
                       os.major(st.st_dev), os.minor(st.st_dev), 0, 0, 0)


def sys_statx(proc: Process, dirfd: int, path_address: int, flags: int, mask: int,
              address: int) -> int:
    """statx: the basic fields whatever *mask* asks (stx_mask says which
    were filled, as Linux does)."""
    flags = signed32(flags)
    known = AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_EMPTY_PATH | AT_STATX_SYNC_TYPE
    if flags & ~known or flags & AT_STATX_SYNC_TYPE == AT_STATX_SYNC_TYPE:
        raise SyscallError(errno.EINVAL, f"statx flags {flags:#x}")
    if mask & UINT_MASK & STATX__RESERVED:
        raise SyscallError(errno.EINVAL, "STATX__RESERVED in mask")
    st = stat_of_path(proc, dirfd, path_address, flags, syscall="statx")
    proc.mm.write(address, pack_statx(st))
    return 0


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


# -- file systems --------------------------------------------------------------------------
def _statfs_of_file(file: OpenFile) -> bytes:
    """``struct statfs`` of the file system an open file lives on."""
    if file.host_fd is not None:
        buffer = ctypes.create_string_buffer(STATFS_SIZE)
        host_call(SYS_fstatfs, ctypes.c_int(file.host_fd), buffer)
        return buffer.raw
    magic = PIPEFS_MAGIC if isinstance(file, PipeEnd) else TMPFS_MAGIC
    return struct.pack(STATFS_FORMAT, magic, VIRTUAL_BLOCK_SIZE, 0, 0, 0, 0, 0, 0, 0, NAME_MAX,
                       VIRTUAL_BLOCK_SIZE, 0)


def sys_fstatfs(proc: Process, fd: int, address: int) -> int:
    """fstatfs(2): the file system of an open file (the host's, for host files)."""
    proc.mm.write(address, _statfs_of_file(proc.fds.get(signed32(fd))))
    return 0


def sys_statfs(proc: Process, path_address: int, address: int) -> int:
    """statfs(2): the file system of a path, resolved through the policy."""
    path = guest_path(proc, AT_FDCWD, read_path(proc, path_address))
    device = proc.policy.is_virtual_device(path, proc.cwd)
    if device:
        proc.mm.write(address, _statfs_of_file(DeviceFile(device, path, 0)))
        return 0
    host_fd = proc.policy.open(path, O_PATH, 0, proc.cwd, syscall="statfs")
    try:
        proc.mm.write(address, _statfs_of_file(HostFile(host_fd, path, 0)))
    finally:
        os.close(host_fd)
    return 0


# -- copying between files -------------------------------------------------------------------
def _read_offset(proc: Process, address: int) -> int | None:
    """An ``loff_t *`` argument: None for NULL, EINVAL when negative."""
    if not address:
        return None
    (offset,) = proc.mm.read_struct(address, "<q")
    if offset < 0:
        raise SyscallError(errno.EINVAL, f"negative offset {offset}")
    return offset


def _copy_through_python(proc: Process, source: OpenFile, target: OpenFile, offset: int | None,
                         count: int) -> int:
    """sendfile where one end is not a host fd: one bounded chunk."""
    if isinstance(target, PipeEnd):     # check before reading, so nothing is lost
        room = PIPE_CAPACITY - len(target.pipe.data)
        if target.pipe.readers == 0:
            raise SyscallError(errno.EPIPE, "no reader")
        if room <= 0:
            raise SyscallError(errno.EAGAIN, "pipe full")
        count = min(count, room)
    chunk = bytearray(min(count, COPY_CHUNK))
    if offset is not None:
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
    """Terminal queries: answered from the host fd when it is a terminal,
    ENOTTY otherwise.  No other ioctl reaches the host."""
    file = proc.fds.get(signed32(fd))
    request &= 0xFFFF_FFFF
    if request in (TCGETS, TIOCGWINSZ, TIOCGPGRP):
        if file.host_fd is None or not os.isatty(file.host_fd):
            raise SyscallError(errno.ENOTTY, "not a terminal")
        if request == TIOCGWINSZ:
            size = os.get_terminal_size(file.host_fd)
            proc.mm.write_struct(argument, "<HHHH", size.lines, size.columns, 0, 0)
            return 0
        if request == TIOCGPGRP:
            proc.mm.write_struct(argument, "<i", proc.pid)
            return 0
        import termios
        attributes = termios.tcgetattr(file.host_fd)
        iflag, oflag, cflag, lflag = attributes[:4]
        control = bytes(c if isinstance(c, int) else c[0] for c in attributes[6])[:19]
        proc.mm.write(argument, struct.pack("<IIIIB19s", iflag, oflag, cflag, lflag, 0, control))
        return 0
    if request == FIONREAD and isinstance(file, PipeEnd):
        proc.mm.write_struct(argument, "<i", len(file.pipe.data))
        return 0
    raise SyscallError(errno.ENOTTY, f"ioctl {request:#x} is not supported")


def sys_pipe2(proc: Process, address: int, flags: int) -> int:
    """pipe2(2): a pipe kept in minikvm's memory, between the guest's threads.

    An empty pipe gives EAGAIN unless another guest thread may fill it (no
    other process can)."""
    flags = signed32(flags)
    proc.pipes_made += 1
    pipe = Pipe(number=proc.pipes_made)
    status = flags & O_NONBLOCK
    read_fd = proc.fds.install(PipeEnd(pipe, False, status), cloexec=bool(flags & O_CLOEXEC))
    write_fd = proc.fds.install(PipeEnd(pipe, True, status), cloexec=bool(flags & O_CLOEXEC))
    try:
        proc.mm.write_struct(address, "<ii", read_fd, write_fd)
    except SyscallError:
        proc.fds.close(read_fd)
        proc.fds.close(write_fd)
        raise
    return 0


#: eventfd2 flags (linux/eventfd.h)
EFD_SEMAPHORE = 1
EFD_CLOEXEC = O_CLOEXEC
EFD_NONBLOCK = O_NONBLOCK


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


# -- the working directory -------------------------------------------------------------
def sys_getcwd(proc: Process, buffer: int, size: int) -> int:
    """getcwd(2): the guest's working directory (kept by minikvm); ERANGE if it
    does not fit."""
    path = os.fsencode(proc.cwd) + b"\0"
    if len(path) > size:
        raise SyscallError(errno.ERANGE, "buffer too small")
    proc.mm.write(buffer, path)
    return len(path)


def sys_chdir(proc: Process, path_address: int) -> int:
    """chdir(2): change the working directory, checked through the policy.

    ENOTDIR for a file; the directories above a grant may be entered."""
    path = posixpath.normpath(guest_path(proc, AT_FDCWD, read_path(proc, path_address)))
    st = proc.policy.stat(path, proc.cwd, True, syscall="chdir")
    if not stat_module.S_ISDIR(st.st_mode):
        raise SyscallError(errno.ENOTDIR, "not a directory")
    proc.cwd = path
    return 0


def sys_fchdir(proc: Process, fd: int) -> int:
    """fchdir(2): :func:`sys_chdir` to the directory an fd is open on."""
    proc.cwd = _directory_path(proc, signed32(fd))
    return 0


#: the /proc links a program reads about itself: ``/proc/self/fd/3``,
#: ``/proc/1000/cwd``, ``/dev/fd/1`` (a link to /proc/self/fd on Linux)
PROC_SELF_LINK = re.compile(r"/proc/(?P<pid>self|thread-self|\d+)/(?P<what>exe|cwd|fd/(?P<fd>\d+))"
                            r"|/dev/fd/(?P<devfd>\d+)")


def virtual_link(proc: Process, path: str) -> str | None:
    """The target of a /proc link about the process itself, answered from
    its own state (None when *path* is not one): the host's /proc would
    describe minikvm, not the guest."""
    match = PROC_SELF_LINK.fullmatch(posixpath.normpath(path))
    if match is None or match["pid"] not in (None, "self", "thread-self", str(proc.pid)):
        return None
    fd = match["fd"] or match["devfd"]
    if fd is None:
        return proc.exe_path if match["what"] == "exe" else proc.cwd
    entry = proc.fds.entries.get(int(fd))
    if entry is None:
        raise SyscallError(errno.ENOENT, f"fd {fd} is not open")
    return entry.file.link_target()


def _readlinkat(proc: Process, dirfd: int, path_address: int, buffer: int, size: int,
                syscall: str) -> int:
    path = guest_path(proc, dirfd, read_path(proc, path_address))
    if signed32(size) <= 0:
        raise SyscallError(errno.EINVAL, "buffer size")
    target_text = virtual_link(proc, path)
    if target_text is None:
        target_text = proc.policy.readlink(path, proc.cwd, syscall=syscall)
    target = os.fsencode(target_text)[:size]
    proc.mm.write(buffer, target)
    return len(target)


def sys_readlinkat(proc: Process, dirfd: int, path_address: int, buffer: int, size: int) -> int:
    """readlinkat(2): a symlink's target, through the policy.

    ``/proc/self/exe``, ``/proc/self/cwd`` and ``/proc/self/fd/N`` describe the
    guest, never the host."""
    return _readlinkat(proc, dirfd, path_address, buffer, size, "readlinkat")


def sys_readlink(proc: Process, path_address: int, buffer: int, size: int) -> int:
    """readlink(2): :func:`sys_readlinkat` at the working directory."""
    return _readlinkat(proc, AT_FDCWD, path_address, buffer, size, "readlink")


def sys_faccessat2(proc: Process, dirfd: int, path_address: int, mode: int, flags: int) -> int:
    """faccessat2(2): may the guest read, write or execute a path?

    Asked of the host kernel beneath the grant (faccessat2); a write in a
    read-only grant is EACCES."""
    path = guest_path(proc, dirfd, read_path(proc, path_address))
    if proc.policy.is_virtual_device(path, proc.cwd):
        return 0
    proc.policy.access(path, signed32(mode), proc.cwd,
                       follow=not signed32(flags) & AT_SYMLINK_NOFOLLOW, syscall="faccessat2")
    return 0


def sys_faccessat(proc: Process, dirfd: int, path_address: int, mode: int) -> int:
    """faccessat(2): :func:`sys_faccessat2` without flags."""
    return sys_faccessat2(proc, dirfd, path_address, mode, 0)


def sys_access(proc: Process, path_address: int, mode: int) -> int:
    """access(2): :func:`sys_faccessat2` at the working directory."""
    return sys_faccessat2(proc, AT_FDCWD, path_address, mode, 0)


def sys_umask(proc: Process, mask: int) -> int:
    """umask(2): set the guest's file-creation mask; returns the old one."""
    old, proc.umask = proc.umask, mask & 0o777
    return old


SYSCALLS = [
    Syscall(0, "read", sys_read, ("fd", "outbuf", "uint")),
    Syscall(1, "write", sys_write, ("fd", "inbuf", "uint")),
    Syscall(2, "open", sys_open, ("path", "oflags", "mode")),
    Syscall(3, "close", sys_close, ("fd",)),
    Syscall(4, "stat", sys_stat, ("path", "ptr")),
    Syscall(5, "fstat", sys_fstat, ("fd", "ptr")),
    Syscall(6, "lstat", sys_lstat, ("path", "ptr")),
    Syscall(8, "lseek", sys_lseek, ("fd", "long", "int")),
    Syscall(16, "ioctl", sys_ioctl, ("fd", "hex", "ptr"), PARTIAL,
            "terminal queries (TCGETS, TIOCGWINSZ, TIOCGPGRP) and FIONREAD on pipes"),
    Syscall(17, "pread64", sys_pread64, ("fd", "outbuf", "uint", "long")),
    Syscall(18, "pwrite64", sys_pwrite64, ("fd", "inbuf", "uint", "long")),
    Syscall(19, "readv", sys_readv, ("fd", "ptr", "int")),
    Syscall(20, "writev", sys_writev, ("fd", "ptr", "int")),
    Syscall(21, "access", sys_access, ("path", "int")),
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
            "F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD/SETFD, F_GETFL/SETFL, F_GETPIPE_SZ; record locks "
            "(F_SETLK, F_OFD_SETLK …) always granted, F_GETLK finds none"),
    Syscall(79, "getcwd", sys_getcwd, ("ptr", "uint")),
    Syscall(80, "chdir", sys_chdir, ("path",)),
    Syscall(81, "fchdir", sys_fchdir, ("fd",)),
    Syscall(85, "creat", sys_creat, ("path", "mode")),
    Syscall(89, "readlink", sys_readlink, ("path", "ptr", "uint"), SUPPORTED,
            "/proc/self/exe, /proc/self/cwd and /proc/self/fd/N describe the guest"),
    Syscall(95, "umask", sys_umask, ("mode",)),
    Syscall(257, "openat", sys_openat, ("dirfd", "path", "oflags", "mode")),
    Syscall(262, "newfstatat", sys_newfstatat, ("dirfd", "path", "ptr", "hex")),
    Syscall(267, "readlinkat", sys_readlinkat, ("dirfd", "path", "ptr", "uint"), SUPPORTED,
            "/proc/self/exe, /proc/self/cwd and /proc/self/fd/N describe the guest"),
    Syscall(269, "faccessat", sys_faccessat, ("dirfd", "path", "int")),
    Syscall(439, "faccessat2", sys_faccessat2, ("dirfd", "path", "int", "hex")),
    Syscall(332, "statx", sys_statx, ("dirfd", "path", "hex", "hex", "ptr"), PARTIAL,
            "the basic fields (STATX_BASIC_STATS); no birth time or mount id"),
    Syscall(137, "statfs", sys_statfs, ("path", "ptr")),
    Syscall(138, "fstatfs", sys_fstatfs, ("fd", "ptr")),
    Syscall(40, "sendfile", sys_sendfile, ("fd", "fd", "ptr", "uint")),
    Syscall(326, "copy_file_range", sys_copy_file_range,
            ("fd", "ptr", "fd", "ptr", "uint", "hex"), PARTIAL, "between granted files only"),
    Syscall(436, "close_range", sys_close_range, ("uint", "uint", "hex")),
    Syscall(221, "fadvise64", sys_fadvise64, ("fd", "long", "long", "int"), PARTIAL,
            "checked, then ignored (advice only)"),
    Syscall(73, "flock", sys_flock, ("fd", "int"), PARTIAL,
            "always granted: one process has nobody to lock against"),
]
