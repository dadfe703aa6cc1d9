"""Layer 8 — file system calls: open/read/write/close and their friends.

Every path goes through the sandbox policy (``proc.policy``), the one seam
that decides whether a path may be reached; every guest buffer goes through
the memory manager (``proc.mm``), which bounds-checks it.  Reads and
writes move data between host fds and guest memory with ``os.readv`` /
``os.writev`` on zero-copy views of guest RAM.

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
process has nobody to lock against.

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
import stat as stat_module
import struct

from minikvm.errors import SyscallError
from minikvm.fdtable import (FD_CLOEXEC, O_ACCMODE, O_APPEND, O_CLOEXEC, O_NONBLOCK, O_WRONLY,
                             PIPE_CAPACITY, DeviceFile, HostFile, OpenFile, Pipe, PipeEnd)
from minikvm.syscalls import signals
from minikvm.syscalls.base import PARTIAL, SUPPORTED, Syscall, signed32, signed64

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_EACCESS = 0x200
AT_SYMLINK_FOLLOW = 0x400
AT_NO_AUTOMOUNT = 0x800
AT_EMPTY_PATH = 0x1000
AT_STATX_SYNC_TYPE = 0x6000    # AT_STATX_FORCE_SYNC | AT_STATX_DONT_SYNC: hints
O_DIRECTORY = 0o200000
O_CREAT = 0o100
O_TRUNC = 0o1000
O_NOFOLLOW = 0o400000
O_PATH = 0o10000000
F_DUPFD = 0
F_GETFD = 1
F_SETFD = 2
F_GETFL = 3
F_SETFL = 4
F_DUPFD_CLOEXEC = 1030
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
#: mode bits mkdir and chmod keep (S_IALLUGO: permissions, setuid/setgid, sticky)
MODE_BITS = 0o7777

# -- directory listings (linux/dirent.h, fs/readdir.c) --------------------------------
#: ``struct linux_dirent64``: d_ino, d_off, d_reclen, d_type, then the name and a NUL
DIRENT64_HEADER = struct.Struct("<QqHB")
#: ``struct linux_dirent`` (getdents): d_ino, d_off, d_reclen, the name, a NUL, d_type last
DIRENT_HEADER = struct.Struct("<QQH")
DIRENT_ALIGN = 8
DT_UNKNOWN, DT_DIR, DT_REG, DT_LNK = 0, 4, 8, 10

# -- statx (linux/stat.h) --------------------------------------------------------------
#: ``struct statx``: 256 bytes.  mask, blksize, attributes; nlink, uid, gid, mode;
#: ino, size, blocks, attributes_mask; atime, btime, ctime, mtime (each tv_sec,
#: tv_nsec, reserved); rdev major/minor, dev major/minor; mnt_id, dio alignments.
STATX_FORMAT = "<IIQIIIH2xQQQQ" + "qIi" * 4 + "IIIIQII96x"
STATX_BASIC_STATS = 0x7FF       # type, mode, nlink, uid, gid, times, ino, size, blocks
STATX__RESERVED = 0x8000_0000   # asking for it is EINVAL

# -- changing files ---------------------------------------------------------------------
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
NSEC_PER_SEC = 1_000_000_000
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4
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
SYS_utimensat = 280
SYS_renameat2 = 316
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _host_call(number: int, *args: object) -> int:
    """``syscall(number, args...)`` on the host; an ``OSError`` on failure."""
    result = _libc.syscall(ctypes.c_long(number), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)


def guest_path(proc, dirfd: int, path: bytes) -> str:
    """The absolute guest path of *path* relative to *dirfd* (or the cwd)."""
    text = os.fsdecode(path)
    if text.startswith("/"):
        return text
    dirfd = signed32(dirfd)
    base = proc.cwd if dirfd == AT_FDCWD else _directory_path(proc, dirfd)
    return posixpath.join(base, text)


def _directory_path(proc, dirfd: int) -> str:
    file = proc.fds.get(dirfd)
    if not isinstance(file, HostFile) or not file.path.startswith("/"):
        raise SyscallError(errno.ENOTDIR, "not a directory fd")
    return file.path


def read_path(proc, address: int) -> bytes:
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


def check_writable_entry(proc, path: str, syscall: str) -> None:
    """Raise unless *path*'s directory entry lies in a write grant.

    Calls that change a file's metadata (chmod, utimensat, chown) need what
    creating or removing it needs.  A grant directory itself is refused:
    the sandbox does not let the guest change the roots it was given.
    """
    with proc.policy.resolve_parent(path, proc.cwd, write=True, syscall=syscall):
        pass


def open_to_change(proc, path: str, follow: bool, syscall: str) -> int:
    """An ``O_PATH`` host fd on a file the guest may change (see
    :func:`check_writable_entry`); a final symlink is followed beneath the
    grant when *follow*.  The caller closes it."""
    check_writable_entry(proc, path, syscall)
    return proc.policy.open(path, O_PATH | (0 if follow else O_NOFOLLOW), 0, proc.cwd,
                            syscall=syscall)


def check_file_change(proc, file: OpenFile, syscall: str) -> None:
    """Raise unless the guest may change the metadata of an open *file*
    (fchmod, futimens, fchown): a granted file needs a write grant, as by
    path; our stdio is the user's, not the guest's; devices are root's."""
    if isinstance(file, HostFile) and file.path.startswith("/"):
        check_writable_entry(proc, file.path, syscall)
    elif isinstance(file, HostFile):
        raise proc.policy.refuse(syscall, file.path)
    else:
        raise SyscallError(errno.EPERM, f"{file.kind} files belong to root")


# -- opening and closing ---------------------------------------------------------
def sys_openat(proc, dirfd: int, path_address: int, flags: int, mode: int) -> int:
    path = guest_path(proc, dirfd, read_path(proc, path_address))
    flags = signed32(flags)
    device = proc.policy.is_virtual_device(path, proc.cwd)
    if device:
        file = DeviceFile(device, path, flags & (O_ACCMODE | O_APPEND | O_NONBLOCK))
    else:
        host_fd = proc.policy.open(path, flags, mode & ~proc.umask & 0o7777, proc.cwd,
                                   syscall="openat")
        file = HostFile(host_fd, posixpath.normpath(path),
                        flags & (O_ACCMODE | O_APPEND | O_NONBLOCK))
    try:
        return proc.fds.install(file, cloexec=bool(flags & O_CLOEXEC))
    except SyscallError:
        file.close()
        raise


def sys_open(proc, path_address: int, flags: int, mode: int) -> int:
    return sys_openat(proc, AT_FDCWD, path_address, flags, mode)


def sys_creat(proc, path_address: int, mode: int) -> int:
    return sys_openat(proc, AT_FDCWD, path_address, O_CREAT | O_WRONLY | O_TRUNC, mode)


def sys_close(proc, fd: int) -> int:
    proc.fds.close(signed32(fd))
    return 0


# -- reading and writing ---------------------------------------------------------------
def sys_read(proc, fd: int, buffer: int, count: int) -> int:
    file = proc.fds.get(signed32(fd))
    return file.readv(proc.mm.views(buffer, min(count, MAX_IO), write=True))


def sys_write(proc, fd: int, buffer: int, count: int) -> int:
    file = proc.fds.get(signed32(fd))
    views = proc.mm.views(buffer, min(count, MAX_IO))
    _check_file_size(proc, file, count)
    return _write(proc, file, views)


def _iovec_views(proc, address: int, count: int, write: bool) -> list[memoryview]:
    views: list[memoryview] = []
    for base, length in proc.mm.read_iovec(address, signed32(count)):
        views.extend(proc.mm.views(base, length, write=write))
    return views


def sys_readv(proc, fd: int, iov: int, count: int) -> int:
    file = proc.fds.get(signed32(fd))
    return file.readv(_iovec_views(proc, iov, count, write=True))


def sys_writev(proc, fd: int, iov: int, count: int) -> int:
    file = proc.fds.get(signed32(fd))
    views = _iovec_views(proc, iov, count, write=False)
    _check_file_size(proc, file, sum(len(v) for v in views))
    return _write(proc, file, views)


def _write(proc, file, views: list[memoryview]) -> int:
    """Write, and on EPIPE (no reader left) send SIGPIPE first, as Linux
    does: ``yes | head -1`` ends ``yes`` with status 141."""
    try:
        return file.writev(views)
    except (BrokenPipeError, SyscallError) as error:
        if error.errno == errno.EPIPE:
            signals.broken_pipe(proc)
        raise


def _check_file_size(proc, file, count: int, position: int | None = None,
                     syscall: str = "write") -> None:
    """EFBIG (from the policy) if writing *count* bytes at *position* (the
    file's own position when None) would grow a granted file past the limit."""
    limit = getattr(proc.policy, "max_file_size", None)
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


def _host_fd(proc, fd: int) -> int:
    file = proc.fds.get(signed32(fd))
    if file.host_fd is None:
        raise SyscallError(errno.ESPIPE, "not a seekable file")
    return file.host_fd


def sys_pread64(proc, fd: int, buffer: int, count: int, offset: int) -> int:
    host_fd = _host_fd(proc, fd)
    return os.preadv(host_fd, proc.mm.views(buffer, min(count, MAX_IO), write=True),
                     signed64(offset))


def sys_pwrite64(proc, fd: int, buffer: int, count: int, offset: int) -> int:
    host_fd = _host_fd(proc, fd)
    file = proc.fds.get(signed32(fd))
    if not file.writable():
        raise SyscallError(errno.EBADF, "not open for writing")
    count = min(count, MAX_IO)
    _check_file_size(proc, file, count, signed64(offset), syscall="pwrite64")
    return os.pwritev(host_fd, proc.mm.views(buffer, count), signed64(offset))


def sys_lseek(proc, fd: int, offset: int, whence: int) -> int:
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


def stat_of_path(proc, dirfd: int, path_address: int, flags: int,
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


def sys_fstat(proc, fd: int, address: int) -> int:
    proc.mm.write(address, pack_stat(stat_of_file(proc.fds.get(signed32(fd)))))
    return 0


def sys_newfstatat(proc, dirfd: int, path_address: int, address: int, flags: int) -> int:
    proc.mm.write(address, pack_stat(stat_of_path(proc, dirfd, path_address, flags)))
    return 0


def sys_stat(proc, path_address: int, address: int) -> int:
    return sys_newfstatat(proc, AT_FDCWD, path_address, address, 0)


def sys_lstat(proc, path_address: int, address: int) -> int:
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


def sys_statx(proc, dirfd: int, path_address: int, flags: int, mask: int, address: int) -> int:
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


# -- directory listings ------------------------------------------------------------------
def _d_type(entry: os.DirEntry) -> int:
    """The ``d_type`` of a host directory entry (DT_x is S_IFx >> 12)."""
    try:
        if entry.is_symlink():
            return DT_LNK
        if entry.is_dir(follow_symlinks=False):
            return DT_DIR
        if entry.is_file(follow_symlinks=False):
            return DT_REG
        return stat_module.S_IFMT(entry.stat(follow_symlinks=False).st_mode) >> 12
    except OSError:
        return DT_UNKNOWN


def _parent_inode(proc, file: HostFile, own: os.stat_result) -> int:
    """``..``'s inode: the parent's when the policy lets the guest see it, the
    directory's own otherwise (as for ``/``, whose ``..`` is itself)."""
    parent = posixpath.dirname(file.path)
    grants = getattr(proc.policy, "grants", ())
    if parent == file.path or not any(grant.contains(parent) for grant in grants):
        return own.st_ino
    try:
        return proc.policy.stat(parent, proc.cwd, True, syscall="getdents64").st_ino
    except (SyscallError, OSError):
        return own.st_ino


def directory_listing(proc, file: OpenFile) -> list[tuple[bytes, int, int]]:
    """``(name, inode, d_type)`` of every entry of an open directory,
    ``.`` and ``..`` first, as Linux's file systems list them."""
    if not isinstance(file, HostFile) or file.host_fd is None:
        raise SyscallError(errno.ENOTDIR, f"a {file.kind} is not a directory")
    own = os.fstat(file.host_fd)
    if not stat_module.S_ISDIR(own.st_mode):
        raise SyscallError(errno.ENOTDIR, "not a directory")
    entries = [(b".", own.st_ino, DT_DIR), (b"..", _parent_inode(proc, file, own), DT_DIR)]
    with os.scandir(file.host_fd) as listing:
        for entry in listing:
            entries.append((os.fsencode(entry.name), entry.inode(), _d_type(entry)))
    return entries


def pack_dirent64(name: bytes, inode: int, d_type: int, next_offset: int) -> bytes:
    """One ``struct linux_dirent64``, padded to 8 bytes."""
    size = -(-(DIRENT64_HEADER.size + len(name) + 1) // DIRENT_ALIGN) * DIRENT_ALIGN
    record = DIRENT64_HEADER.pack(inode, next_offset, size, d_type) + name
    return record.ljust(size, b"\0")


def pack_dirent(name: bytes, inode: int, d_type: int, next_offset: int) -> bytes:
    """One old ``struct linux_dirent`` (getdents): d_type is its last byte."""
    size = -(-(DIRENT_HEADER.size + len(name) + 2) // DIRENT_ALIGN) * DIRENT_ALIGN
    record = (DIRENT_HEADER.pack(inode, next_offset, size) + name).ljust(size - 1, b"\0")
    return record + bytes([d_type])


def _getdents(proc, fd: int, address: int, count: int, pack) -> int:
    """Fill the guest's buffer with whole records from the directory's position.

    The listing is read once and kept (:attr:`HostFile.directory_entries`);
    each record's ``d_off`` is the index of the next one, so ``telldir`` /
    ``seekdir`` (lseek) land where they should across calls.
    """
    file = proc.fds.get(signed32(fd))
    if not isinstance(file, HostFile):
        raise SyscallError(errno.ENOTDIR, f"a {file.kind} is not a directory")
    if file.directory_entries is None:
        file.directory_entries = directory_listing(proc, file)
    entries = file.directory_entries
    count &= UINT_MASK
    index = file.directory_offset
    buffer = bytearray()
    while index < len(entries):
        record = pack(*entries[index], index + 1)
        if len(buffer) + len(record) > count:
            break
        buffer += record
        index += 1
    if not buffer and index < len(entries):
        raise SyscallError(errno.EINVAL, f"a {count}-byte buffer cannot hold one entry")
    proc.mm.write(address, bytes(buffer))
    file.directory_offset = index
    return len(buffer)


def sys_getdents64(proc, fd: int, address: int, count: int) -> int:
    return _getdents(proc, fd, address, count, pack_dirent64)


def sys_getdents(proc, fd: int, address: int, count: int) -> int:
    return _getdents(proc, fd, address, count, pack_dirent)


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


# -- directory entries: create, remove, rename, link -------------------------------------
def _mkdirat(proc, dirfd: int, path_address: int, mode: int, syscall: str) -> int:
    raw = read_path(proc, path_address)
    if final_name(raw) in (b".", b"..", b"/"):
        raise SyscallError(errno.EEXIST, "the directory exists")
    path = guest_path(proc, dirfd, raw)
    if proc.policy.is_virtual_device(path, proc.cwd):
        raise SyscallError(errno.EEXIST, "a device exists there")
    with proc.policy.resolve_parent(path, proc.cwd, write=True, syscall=syscall) as parent:
        os.mkdir(parent.name, mode & ~proc.umask & MODE_BITS, dir_fd=parent.dirfd)
    return 0


def sys_mkdirat(proc, dirfd: int, path_address: int, mode: int) -> int:
    return _mkdirat(proc, dirfd, path_address, mode, "mkdirat")


def sys_mkdir(proc, path_address: int, mode: int) -> int:
    return _mkdirat(proc, AT_FDCWD, path_address, mode, "mkdir")


def _unlinkat(proc, dirfd: int, path_address: int, flags: int, syscall: str) -> int:
    flags = signed32(flags)
    if flags & ~AT_REMOVEDIR:
        raise SyscallError(errno.EINVAL, f"unlinkat flags {flags:#x}")
    raw = read_path(proc, path_address)
    name = final_name(raw)
    if flags & AT_REMOVEDIR:
        dots = {b".": (errno.EINVAL, "cannot remove '.'"),
                b"..": (errno.ENOTEMPTY, "'..' is not empty"),
                b"/": (errno.EBUSY, "cannot remove the root")}
    else:
        dots = {dot: (errno.EISDIR, "a directory") for dot in (b".", b"..", b"/")}
    if name in dots:
        raise SyscallError(*dots[name])
    path = guest_path(proc, dirfd, raw)
    with proc.policy.resolve_parent(path, proc.cwd, write=True, syscall=syscall) as parent:
        if flags & AT_REMOVEDIR:
            os.rmdir(parent.name, dir_fd=parent.dirfd)
            return 0
        if raw.endswith(b"/"):     # "file/": the entry must be a directory
            entry = os.stat(parent.name, dir_fd=parent.dirfd, follow_symlinks=False)
            is_directory = stat_module.S_ISDIR(entry.st_mode)
            raise SyscallError(errno.EISDIR if is_directory else errno.ENOTDIR,
                               "trailing slash")
        os.unlink(parent.name, dir_fd=parent.dirfd)
    return 0


def sys_unlinkat(proc, dirfd: int, path_address: int, flags: int) -> int:
    return _unlinkat(proc, dirfd, path_address, flags, "unlinkat")


def sys_unlink(proc, path_address: int) -> int:
    return _unlinkat(proc, AT_FDCWD, path_address, 0, "unlink")


def sys_rmdir(proc, path_address: int) -> int:
    return _unlinkat(proc, AT_FDCWD, path_address, AT_REMOVEDIR, "rmdir")


def _renameat2(proc, old_dirfd: int, old_address: int, new_dirfd: int, new_address: int,
               flags: int, syscall: str) -> int:
    """Both ends need a write grant; the host renames one name in one
    directory fd to one name in another."""
    flags &= UINT_MASK
    if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or \
            flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
        raise SyscallError(errno.EINVAL, f"rename flags {flags:#x} (RENAME_WHITEOUT is "
                           "not supported)")
    old_raw, new_raw = read_path(proc, old_address), read_path(proc, new_address)
    if final_name(old_raw) in (b".", b"..", b"/") or final_name(new_raw) in (b".", b"..", b"/"):
        raise SyscallError(errno.EBUSY, "cannot rename '.', '..' or '/'")
    old = guest_path(proc, old_dirfd, old_raw)
    new = guest_path(proc, new_dirfd, new_raw)
    policy = proc.policy
    with policy.resolve_parent(old, proc.cwd, write=True, syscall=syscall) as source, \
            policy.resolve_parent(new, proc.cwd, write=True, syscall=syscall) as target:
        if old_raw.endswith(b"/") or new_raw.endswith(b"/"):
            entry = os.stat(source.name, dir_fd=source.dirfd, follow_symlinks=False)
            if not stat_module.S_ISDIR(entry.st_mode):
                raise SyscallError(errno.ENOTDIR, "trailing slash on a non-directory")
        if flags:
            _host_call(SYS_renameat2, ctypes.c_int(source.dirfd),
                       ctypes.c_char_p(os.fsencode(source.name)), ctypes.c_int(target.dirfd),
                       ctypes.c_char_p(os.fsencode(target.name)), ctypes.c_uint(flags))
        else:
            os.rename(source.name, target.name, src_dir_fd=source.dirfd,
                      dst_dir_fd=target.dirfd)
    return 0


def sys_renameat2(proc, old_dirfd: int, old: int, new_dirfd: int, new: int, flags: int) -> int:
    return _renameat2(proc, old_dirfd, old, new_dirfd, new, flags, "renameat2")


def sys_renameat(proc, old_dirfd: int, old: int, new_dirfd: int, new: int) -> int:
    return _renameat2(proc, old_dirfd, old, new_dirfd, new, 0, "renameat")


def sys_rename(proc, old: int, new: int) -> int:
    return _renameat2(proc, AT_FDCWD, old, AT_FDCWD, new, 0, "rename")


def _linkat(proc, old_dirfd: int, old_address: int, new_dirfd: int, new_address: int,
            flags: int, syscall: str) -> int:
    """A hard link is the file itself, so both ends need a write grant (a
    read-only file linked into a write grant would become writable)."""
    flags = signed32(flags)
    if flags & ~(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH):
        raise SyscallError(errno.EINVAL, f"linkat flags {flags:#x}")
    if flags & AT_EMPTY_PATH:
        raise SyscallError(errno.ENOENT, "AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH")
    old_raw, new_raw = read_path(proc, old_address), read_path(proc, new_address)
    if final_name(new_raw) in (b".", b"..", b"/"):
        raise SyscallError(errno.EEXIST, "the name exists")
    if final_name(old_raw) in (b".", b"..", b"/"):
        raise SyscallError(errno.EPERM, "directories cannot be hard-linked")
    old = guest_path(proc, old_dirfd, old_raw)
    new = guest_path(proc, new_dirfd, new_raw)
    policy = proc.policy
    with policy.resolve_parent(old, proc.cwd, write=True, syscall=syscall) as source, \
            policy.resolve_parent(new, proc.cwd, write=True, syscall=syscall) as target:
        if not flags & AT_SYMLINK_FOLLOW:
            os.link(source.name, target.name, src_dir_fd=source.dirfd,
                    dst_dir_fd=target.dirfd, follow_symlinks=False)
            return 0
        # Follow a final symlink beneath the grant (never with the host's own
        # lookup, which could leave it), then link the file that fd holds.
        held = policy.open(old, O_PATH, 0, proc.cwd, syscall=syscall)
        try:
            os.link(f"/proc/self/fd/{held}", target.name, dst_dir_fd=target.dirfd,
                    follow_symlinks=True)
        finally:
            os.close(held)
    return 0


def sys_linkat(proc, old_dirfd: int, old: int, new_dirfd: int, new: int, flags: int) -> int:
    return _linkat(proc, old_dirfd, old, new_dirfd, new, flags, "linkat")


def sys_link(proc, old: int, new: int) -> int:
    return _linkat(proc, AT_FDCWD, old, AT_FDCWD, new, 0, "link")


def _symlinkat(proc, target_address: int, dirfd: int, path_address: int, syscall: str) -> int:
    """The link's text may name anything: following it is what the policy
    guards, and every guest lookup stays beneath its grant."""
    target = read_path(proc, target_address)
    raw = read_path(proc, path_address)
    if final_name(raw) in (b".", b"..", b"/"):
        raise SyscallError(errno.EEXIST, "the name exists")
    path = guest_path(proc, dirfd, raw)
    with proc.policy.resolve_parent(path, proc.cwd, write=True, syscall=syscall) as parent:
        os.symlink(os.fsdecode(target), parent.name, dir_fd=parent.dirfd)
    return 0


def sys_symlinkat(proc, target: int, dirfd: int, path: int) -> int:
    return _symlinkat(proc, target, dirfd, path, "symlinkat")


def sys_symlink(proc, target: int, path: int) -> int:
    return _symlinkat(proc, target, AT_FDCWD, path, "symlink")


# -- changing files: size, sync, times, mode, owner ----------------------------------------
def sys_ftruncate(proc, fd: int, length: int) -> int:
    file = proc.fds.get(signed32(fd))
    length = signed64(length)
    if length < 0:
        raise SyscallError(errno.EINVAL, f"negative length {length}")
    if file.host_fd is None or not file.writable():
        raise SyscallError(errno.EINVAL, "not a regular file open for writing")
    if not stat_module.S_ISREG(os.fstat(file.host_fd).st_mode):
        raise SyscallError(errno.EINVAL, "not a regular file")
    _check_file_size(proc, file, 0, length, syscall="ftruncate")
    os.ftruncate(file.host_fd, length)
    return 0


def sys_truncate(proc, path_address: int, length: int) -> int:
    """Opened for writing beneath its grant (so a write grant and write
    permission are needed, as Linux wants), then cut."""
    length = signed64(length)
    path = guest_path(proc, AT_FDCWD, read_path(proc, path_address))
    if length < 0:
        raise SyscallError(errno.EINVAL, f"negative length {length}")
    if proc.policy.is_virtual_device(path, proc.cwd):
        raise SyscallError(errno.EINVAL, "not a regular file")
    host_fd = proc.policy.open(path, O_WRONLY | O_NONBLOCK, 0, proc.cwd, syscall="truncate")
    try:
        if not stat_module.S_ISREG(os.fstat(host_fd).st_mode):
            raise SyscallError(errno.EINVAL, "not a regular file")
        limit = getattr(proc.policy, "max_file_size", None)
        if limit is not None and length > limit:
            proc.policy.check_file_size(length, path=path, syscall="truncate")
        os.ftruncate(host_fd, length)
    finally:
        os.close(host_fd)
    return 0


def _sync(proc, fd: int, data_only: bool) -> int:
    file = proc.fds.get(signed32(fd))
    if file.host_fd is None:
        raise SyscallError(errno.EINVAL, f"a {file.kind} cannot be synced")
    (os.fdatasync if data_only else os.fsync)(file.host_fd)
    return 0


def sys_fsync(proc, fd: int) -> int:
    return _sync(proc, fd, data_only=False)


def sys_fdatasync(proc, fd: int) -> int:
    return _sync(proc, fd, data_only=True)


def sys_sync(proc) -> int:
    """Write every dirty buffer of the host to disk (what sync(2) asks)."""
    os.sync()
    return 0


def sys_syncfs(proc, fd: int) -> int:
    """syncfs(2) flushes one file system; the host's ``sync`` does that and more."""
    proc.fds.get(signed32(fd))
    os.sync()
    return 0


def _read_utimens(proc, address: int) -> tuple[int, int, int, int] | None:
    """The two timespecs of utimensat (None: both now), checked like Linux."""
    if not address:
        return None
    times = proc.mm.read_struct(address, "<qqqq")
    for nanoseconds in (times[1], times[3]):
        if nanoseconds not in (UTIME_NOW, UTIME_OMIT) and not 0 <= nanoseconds < NSEC_PER_SEC:
            raise SyscallError(errno.EINVAL, f"tv_nsec {nanoseconds}")
    return times


def _host_utimens(host_fd: int, times: tuple[int, int, int, int] | None) -> None:
    """``utimensat(host_fd, "", times, AT_EMPTY_PATH)``: the file an fd
    holds, even an ``O_PATH`` one, with UTIME_NOW/UTIME_OMIT as given."""
    array = (ctypes.c_int64 * 4)(*times) if times is not None else None
    _host_call(SYS_utimensat, ctypes.c_int(host_fd), ctypes.c_char_p(b""), array,
               ctypes.c_int(AT_EMPTY_PATH))


def sys_utimensat(proc, dirfd: int, path_address: int, times_address: int, flags: int) -> int:
    """Set access and modification times.  A NULL path (how C libraries
    implement ``futimens``) or ``""`` with AT_EMPTY_PATH means *dirfd* itself."""
    flags = signed32(flags)
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise SyscallError(errno.EINVAL, f"utimensat flags {flags:#x}")
    times = _read_utimens(proc, times_address)
    dirfd = signed32(dirfd)
    raw = proc.mm.read_cstring(path_address, PATH_MAX) if path_address else None
    if raw is None and dirfd == AT_FDCWD:
        raise SyscallError(errno.EFAULT, "NULL path")
    if raw is None and flags:
        raise SyscallError(errno.EINVAL, "flags with a NULL path")
    if raw is None or not raw and flags & AT_EMPTY_PATH and dirfd != AT_FDCWD:
        file = proc.fds.get(dirfd)
        check_file_change(proc, file, "utimensat")
        _host_utimens(file.host_fd, times)  # type: ignore[arg-type]
        return 0
    path = proc.cwd if not raw and flags & AT_EMPTY_PATH else \
        guest_path(proc, dirfd, raw or read_path(proc, path_address))
    if proc.policy.is_virtual_device(path, proc.cwd):
        raise SyscallError(errno.EPERM, "devices belong to root")
    host_fd = open_to_change(proc, path, not flags & AT_SYMLINK_NOFOLLOW, "utimensat")
    try:
        _host_utimens(host_fd, times)
    finally:
        os.close(host_fd)
    return 0


def sys_fchmod(proc, fd: int, mode: int) -> int:
    file = proc.fds.get(signed32(fd))
    check_file_change(proc, file, "fchmod")
    os.fchmod(file.host_fd, mode & MODE_BITS)  # type: ignore[arg-type]
    return 0


def _chmod(proc, dirfd: int, path_address: int, mode: int, flags: int, syscall: str) -> int:
    flags = signed32(flags)
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise SyscallError(errno.EINVAL, f"fchmodat flags {flags:#x}")
    raw = proc.mm.read_cstring(path_address, PATH_MAX)
    if not raw and flags & AT_EMPTY_PATH and signed32(dirfd) != AT_FDCWD:
        return sys_fchmod(proc, dirfd, mode)
    path = proc.cwd if not raw and flags & AT_EMPTY_PATH else \
        guest_path(proc, dirfd, read_path(proc, path_address))
    if proc.policy.is_virtual_device(path, proc.cwd):
        raise SyscallError(errno.EPERM, "devices belong to root")
    follow = not flags & AT_SYMLINK_NOFOLLOW
    host_fd = open_to_change(proc, path, follow, syscall)
    try:
        if not follow and stat_module.S_ISLNK(os.fstat(host_fd).st_mode):
            raise SyscallError(errno.EOPNOTSUPP, "a symlink has no mode of its own")
        # fchmod does not take an O_PATH fd; the fd's /proc link names exactly
        # the file it holds (glibc's fchmodat(AT_SYMLINK_NOFOLLOW) does this too).
        os.chmod(f"/proc/self/fd/{host_fd}", mode & MODE_BITS)
    finally:
        os.close(host_fd)
    return 0


def sys_fchmodat2(proc, dirfd: int, path_address: int, mode: int, flags: int) -> int:
    return _chmod(proc, dirfd, path_address, mode, flags, "fchmodat2")


def sys_fchmodat(proc, dirfd: int, path_address: int, mode: int) -> int:
    return _chmod(proc, dirfd, path_address, mode, 0, "fchmodat")


def sys_chmod(proc, path_address: int, mode: int) -> int:
    return _chmod(proc, AT_FDCWD, path_address, mode, 0, "chmod")


def _same_owner(st: os.stat_result, uid: int, gid: int) -> int:
    """chown that would change nothing succeeds; any real change is EPERM."""
    uid, gid = signed32(uid), signed32(gid)
    if uid in (-1, st.st_uid) and gid in (-1, st.st_gid):
        return 0
    raise SyscallError(errno.EPERM, "the sandbox never changes a file's owner")


def sys_fchown(proc, fd: int, uid: int, gid: int) -> int:
    file = proc.fds.get(signed32(fd))
    st = stat_of_file(file)
    if isinstance(file, HostFile) and file.path.startswith("/"):
        check_writable_entry(proc, file.path, "fchown")
    return _same_owner(st, uid, gid)


def sys_fchownat(proc, dirfd: int, path_address: int, uid: int, gid: int, flags: int) -> int:
    flags = signed32(flags)
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise SyscallError(errno.EINVAL, f"fchownat flags {flags:#x}")
    raw = proc.mm.read_cstring(path_address, PATH_MAX)
    if not raw and flags & AT_EMPTY_PATH and signed32(dirfd) != AT_FDCWD:
        return sys_fchown(proc, dirfd, uid, gid)
    st = stat_of_path(proc, dirfd, path_address, flags, syscall="fchownat")
    path = proc.cwd if not raw else guest_path(proc, dirfd, raw)
    if not proc.policy.is_virtual_device(path, proc.cwd):
        check_writable_entry(proc, path, "fchownat")
    return _same_owner(st, uid, gid)


def sys_chown(proc, path_address: int, uid: int, gid: int) -> int:
    return sys_fchownat(proc, AT_FDCWD, path_address, uid, gid, 0)


def sys_lchown(proc, path_address: int, uid: int, gid: int) -> int:
    return sys_fchownat(proc, AT_FDCWD, path_address, uid, gid, AT_SYMLINK_NOFOLLOW)


# -- file systems --------------------------------------------------------------------------
def _statfs_of_file(file: OpenFile) -> bytes:
    """``struct statfs`` of the file system an open file lives on."""
    if file.host_fd is not None:
        buffer = ctypes.create_string_buffer(STATFS_SIZE)
        _host_call(SYS_fstatfs, ctypes.c_int(file.host_fd), buffer)
        return buffer.raw
    magic = PIPEFS_MAGIC if isinstance(file, PipeEnd) else TMPFS_MAGIC
    return struct.pack(STATFS_FORMAT, magic, VIRTUAL_BLOCK_SIZE, 0, 0, 0, 0, 0, 0, 0, NAME_MAX,
                       VIRTUAL_BLOCK_SIZE, 0)


def sys_fstatfs(proc, fd: int, address: int) -> int:
    proc.mm.write(address, _statfs_of_file(proc.fds.get(signed32(fd))))
    return 0


def sys_statfs(proc, path_address: int, address: int) -> int:
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
def _read_offset(proc, address: int) -> int | None:
    """An ``loff_t *`` argument: None for NULL, EINVAL when negative."""
    if not address:
        return None
    (offset,) = proc.mm.read_struct(address, "<q")
    if offset < 0:
        raise SyscallError(errno.EINVAL, f"negative offset {offset}")
    return offset


def _copy_through_python(proc, source: OpenFile, target: OpenFile, offset: int | None,
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


def sys_sendfile(proc, out_fd: int, in_fd: int, offset_address: int, count: int) -> int:
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
    _check_file_size(proc, target, count, syscall="sendfile")
    if source.host_fd is not None and target.host_fd is not None:
        sent = os.sendfile(target.host_fd, source.host_fd, offset, count)
    else:
        sent = _copy_through_python(proc, source, target, offset, count) if count else 0
    if offset is not None:
        proc.mm.write_struct(offset_address, "<q", offset + sent)
    return sent


def sys_copy_file_range(proc, in_fd: int, in_offset: int, out_fd: int, out_offset: int,
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
    _check_file_size(proc, target, count, target_offset, syscall="copy_file_range")
    copied = os.copy_file_range(source.host_fd, target.host_fd, count,
                                source_offset, target_offset)
    if source_offset is not None:
        proc.mm.write_struct(in_offset, "<q", source_offset + copied)
    if target_offset is not None:
        proc.mm.write_struct(out_offset, "<q", target_offset + copied)
    return copied


# -- descriptors ----------------------------------------------------------------------
def sys_dup(proc, fd: int) -> int:
    return proc.fds.install(proc.fds.get(signed32(fd)))


def sys_dup3(proc, old: int, new: int, flags: int) -> int:
    old, new = signed32(old), signed32(new)
    if old == new:
        raise SyscallError(errno.EINVAL, "same fd")
    proc.fds.install_at(new, proc.fds.get(old), cloexec=bool(signed32(flags) & O_CLOEXEC))
    return new


def sys_dup2(proc, old: int, new: int) -> int:
    if signed32(old) == signed32(new):
        proc.fds.get(signed32(old))
        return signed32(new)
    return sys_dup3(proc, old, new, 0)


def sys_close_range(proc, first: int, last: int, flags: int) -> int:
    first, last, flags = first & UINT_MASK, last & UINT_MASK, flags & UINT_MASK
    if flags & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC) or first > last:
        raise SyscallError(errno.EINVAL, f"close_range({first}, {last}, {flags:#x})")
    proc.fds.close_range(first, last, cloexec=bool(flags & CLOSE_RANGE_CLOEXEC))
    return 0


def sys_fadvise64(proc, fd: int, offset: int, length: int, advice: int) -> int:
    """Advice about future reads: checked, then ignored (it is only a hint)."""
    file = proc.fds.get(signed32(fd))
    if isinstance(file, PipeEnd):
        raise SyscallError(errno.ESPIPE, "a pipe")
    if signed64(length) < 0 or not 0 <= signed32(advice) <= POSIX_FADV_NOREUSE:
        raise SyscallError(errno.EINVAL, f"length {signed64(length)}, advice {signed32(advice)}")
    return 0


def sys_flock(proc, fd: int, operation: int) -> int:
    """Always granted: one process has nobody to lock against (and a lock
    the host kept could block the host on another program's lock)."""
    proc.fds.get(signed32(fd))
    if signed32(operation) & ~LOCK_NB not in (LOCK_SH, LOCK_EX, LOCK_UN):
        raise SyscallError(errno.EINVAL, f"flock operation {signed32(operation)}")
    return 0


def sys_fcntl(proc, fd: int, command: int, argument: int) -> int:
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
    raise SyscallError(errno.EINVAL, f"fcntl command {command}")


def sys_ioctl(proc, fd: int, request: int, argument: int) -> int:
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


def sys_pipe2(proc, address: int, flags: int) -> int:
    flags = signed32(flags)
    pipe = Pipe()
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


def sys_pipe(proc, address: int) -> int:
    return sys_pipe2(proc, address, 0)


# -- the working directory -------------------------------------------------------------
def sys_getcwd(proc, buffer: int, size: int) -> int:
    path = os.fsencode(proc.cwd) + b"\0"
    if len(path) > size:
        raise SyscallError(errno.ERANGE, "buffer too small")
    proc.mm.write(buffer, path)
    return len(path)


def sys_chdir(proc, path_address: int) -> int:
    path = posixpath.normpath(guest_path(proc, AT_FDCWD, read_path(proc, path_address)))
    st = proc.policy.stat(path, proc.cwd, True, syscall="chdir")
    if not stat_module.S_ISDIR(st.st_mode):
        raise SyscallError(errno.ENOTDIR, "not a directory")
    proc.cwd = path
    return 0


def sys_fchdir(proc, fd: int) -> int:
    proc.cwd = _directory_path(proc, signed32(fd))
    return 0


#: the /proc links a program reads about itself: ``/proc/self/fd/3``,
#: ``/proc/1000/cwd``, ``/dev/fd/1`` (a link to /proc/self/fd on Linux)
PROC_SELF_LINK = re.compile(r"/proc/(?P<pid>self|thread-self|\d+)/(?P<what>exe|cwd|fd/(?P<fd>\d+))"
                            r"|/dev/fd/(?P<devfd>\d+)")


def virtual_link(proc, path: str) -> str | None:
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


def _readlinkat(proc, dirfd: int, path_address: int, buffer: int, size: int,
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


def sys_readlinkat(proc, dirfd: int, path_address: int, buffer: int, size: int) -> int:
    return _readlinkat(proc, dirfd, path_address, buffer, size, "readlinkat")


def sys_readlink(proc, path_address: int, buffer: int, size: int) -> int:
    return _readlinkat(proc, AT_FDCWD, path_address, buffer, size, "readlink")


def sys_faccessat2(proc, dirfd: int, path_address: int, mode: int, flags: int) -> int:
    path = guest_path(proc, dirfd, read_path(proc, path_address))
    if proc.policy.is_virtual_device(path, proc.cwd):
        return 0
    proc.policy.access(path, signed32(mode), proc.cwd,
                       follow=not signed32(flags) & AT_SYMLINK_NOFOLLOW, syscall="faccessat2")
    return 0


def sys_faccessat(proc, dirfd: int, path_address: int, mode: int) -> int:
    return sys_faccessat2(proc, dirfd, path_address, mode, 0)


def sys_access(proc, path_address: int, mode: int) -> int:
    return sys_faccessat2(proc, AT_FDCWD, path_address, mode, 0)


def sys_umask(proc, mask: int) -> int:
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
    Syscall(22, "pipe", sys_pipe, ("ptr",), PARTIAL, "in-guest pipes; an empty pipe gives EAGAIN"),
    Syscall(293, "pipe2", sys_pipe2, ("ptr", "hex"), PARTIAL,
            "in-guest pipes; an empty pipe gives EAGAIN"),
    Syscall(32, "dup", sys_dup, ("fd",)),
    Syscall(33, "dup2", sys_dup2, ("fd", "fd")),
    Syscall(292, "dup3", sys_dup3, ("fd", "fd", "hex")),
    Syscall(72, "fcntl", sys_fcntl, ("fd", "int", "hex"), PARTIAL,
            "F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD/SETFD, F_GETFL/SETFL; no locks"),
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
    # directories and their entries
    Syscall(217, "getdents64", sys_getdents64, ("fd", "ptr", "uint"), SUPPORTED,
            "the listing is read at the first call and after a rewind"),
    Syscall(78, "getdents", sys_getdents, ("fd", "ptr", "uint")),
    Syscall(83, "mkdir", sys_mkdir, ("path", "mode")),
    Syscall(258, "mkdirat", sys_mkdirat, ("dirfd", "path", "mode")),
    Syscall(87, "unlink", sys_unlink, ("path",)),
    Syscall(84, "rmdir", sys_rmdir, ("path",)),
    Syscall(263, "unlinkat", sys_unlinkat, ("dirfd", "path", "hex")),
    Syscall(82, "rename", sys_rename, ("path", "path")),
    Syscall(264, "renameat", sys_renameat, ("dirfd", "path", "dirfd", "path")),
    Syscall(316, "renameat2", sys_renameat2, ("dirfd", "path", "dirfd", "path", "hex"), PARTIAL,
            "RENAME_NOREPLACE and RENAME_EXCHANGE; RENAME_WHITEOUT is EINVAL"),
    Syscall(86, "link", sys_link, ("path", "path")),
    Syscall(265, "linkat", sys_linkat, ("dirfd", "path", "dirfd", "path", "hex"), PARTIAL,
            "AT_SYMLINK_FOLLOW; AT_EMPTY_PATH is ENOENT (needs CAP_DAC_READ_SEARCH)"),
    Syscall(88, "symlink", sys_symlink, ("path", "path")),
    Syscall(266, "symlinkat", sys_symlinkat, ("path", "dirfd", "path")),
    # changing files
    Syscall(77, "ftruncate", sys_ftruncate, ("fd", "long")),
    Syscall(76, "truncate", sys_truncate, ("path", "long")),
    Syscall(74, "fsync", sys_fsync, ("fd",)),
    Syscall(75, "fdatasync", sys_fdatasync, ("fd",)),
    Syscall(162, "sync", sys_sync, ()),
    Syscall(306, "syncfs", sys_syncfs, ("fd",), SUPPORTED, "syncs every host file system"),
    Syscall(280, "utimensat", sys_utimensat, ("dirfd", "path", "ptr", "hex"), SUPPORTED,
            "needs a write grant; a grant directory itself is refused"),
    Syscall(91, "fchmod", sys_fchmod, ("fd", "mode"), PARTIAL,
            "granted files only: stdio and devices are EPERM"),
    Syscall(90, "chmod", sys_chmod, ("path", "mode")),
    Syscall(268, "fchmodat", sys_fchmodat, ("dirfd", "path", "mode")),
    Syscall(452, "fchmodat2", sys_fchmodat2, ("dirfd", "path", "mode", "hex")),
    Syscall(93, "fchown", sys_fchown, ("fd", "int", "int"), PARTIAL,
            "never changes the owner: the current owner or -1 succeeds, else EPERM"),
    Syscall(92, "chown", sys_chown, ("path", "int", "int"), PARTIAL,
            "never changes the owner: the current owner or -1 succeeds, else EPERM"),
    Syscall(94, "lchown", sys_lchown, ("path", "int", "int"), PARTIAL,
            "never changes the owner: the current owner or -1 succeeds, else EPERM"),
    Syscall(260, "fchownat", sys_fchownat, ("dirfd", "path", "int", "int", "hex"), PARTIAL,
            "never changes the owner: the current owner or -1 succeeds, else EPERM"),
    # file systems, copies, descriptors
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
