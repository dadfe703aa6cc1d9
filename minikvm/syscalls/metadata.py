"""Layer 6 — questions about a path or a file: stat, statx, statfs, readlink, access, the cwd.

None of these opens a file for the guest or changes one: they answer what
a path is (``stat``, ``statx``, ``statfs``), where a link points
(``readlink``), whether the guest could use it (``access``), and where the
guest is (``getcwd``, ``chdir``).  Paths go through the policy like every
other (:mod:`minikvm.syscalls.files` has the path helpers); the synthesized
/proc (:mod:`minikvm.syscalls.procfs`) is asked first: its files,
directories and links (``/proc/self/exe``, ``/proc/self/fd/N``…) are
answered from the process, never by the host.
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import stat as stat_module
import struct
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import (AT_EMPTY_PATH, AT_FDCWD, AT_NO_AUTOMOUNT, AT_SYMLINK_NOFOLLOW,
                               NSEC_PER_SEC, O_PATH)
from minikvm.process.fdtable import (DeviceFile, HostFile, OpenFile, PipeEnd, SyntheticDirectory,
                                     SyntheticFile)
from minikvm.syscalls import procfs, pty
from minikvm.syscalls.base import PARTIAL, SUPPORTED, Syscall, signed32

from minikvm.syscalls.files import (PATH_MAX, UINT_MASK, host_call, guest_path, read_path, _directory_path)
if TYPE_CHECKING:
    from minikvm.process.process import Process

#: ``struct stat`` on x86-64 (asm/stat.h): 144 bytes
STAT_FORMAT = "<QQQIIIiQqqqqqqqqq24x"
# -- statx (linux/stat.h) --------------------------------------------------------------
#: ``struct statx``: 256 bytes.  mask, blksize, attributes; nlink, uid, gid, mode;
#: ino, size, blocks, attributes_mask; atime, btime, ctime, mtime (each tv_sec,
#: tv_nsec, reserved); rdev major/minor, dev major/minor; mnt_id, dio alignments.
STATX_FORMAT = "<IIQIIIH2xQQQQ" + "qIi" * 4 + "IIIIQII96x"
STATX_BASIC_STATS = 0x7FF       # type, mode, nlink, uid, gid, times, ino, size, blocks

AT_STATX_SYNC_TYPE = 0x6000    # AT_STATX_FORCE_SYNC | AT_STATX_DONT_SYNC: hints
STATX__RESERVED = 0x8000_0000   # asking for it is EINVAL
#: ``struct statfs``: type, bsize, blocks, bfree, bavail, files, ffree, fsid[2],
#: namelen, frsize, flags, spare[4]: 120 bytes
STATFS_FORMAT = "<qqQQQQQiiqqq32x"
STATFS_SIZE = struct.calcsize(STATFS_FORMAT)
TMPFS_MAGIC = 0x0102_1994       # what /dev (devtmpfs) reports
PIPEFS_MAGIC = 0x5049_5045
NAME_MAX = 255
#: the block size shown for files that exist only in minikvm (devices, pipes)
VIRTUAL_BLOCK_SIZE = 4096
SYS_fstatfs = 138

#: the ``st_dev`` of files minikvm makes up (devices, pipes): no host device
VIRTUAL_DEV = 0

# -- metadata ---------------------------------------------------------------------
def pack_stat(st: os.stat_result) -> bytes:
    """A host ``os.stat_result`` as the guest's ``struct stat``."""
    return struct.pack(STAT_FORMAT, st.st_dev, st.st_ino, st.st_nlink, st.st_mode, st.st_uid,
                       st.st_gid, 0, st.st_rdev, st.st_size, st.st_blksize, st.st_blocks,
                       int(st.st_atime), st.st_atime_ns % 10**9, int(st.st_mtime),
                       st.st_mtime_ns % 10**9, int(st.st_ctime), st.st_ctime_ns % 10**9)


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
    if isinstance(file, (SyntheticFile, SyntheticDirectory)):
        return file.stat
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
    follow = not flags & AT_SYMLINK_NOFOLLOW
    found = procfs.lookup(proc, _spelled(path), follow)
    if isinstance(found, procfs.Node):
        return found.stat()
    if isinstance(found, procfs.OwnFd):
        return stat_of_file(proc.fds.get(found.fd))
    if isinstance(found, procfs.Redirect):
        path = found.path
    device = proc.policy.is_virtual_device(path, proc.cwd)
    if device:
        return stat_of_file(DeviceFile(device, path, 0))
    own_pty = pty.stat_of_name(proc, path)
    if own_pty is not None:
        return own_pty
    return proc.policy.stat(path, proc.cwd, follow, syscall=syscall)


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


# -- file systems --------------------------------------------------------------------------
def _statfs_of_file(file: OpenFile) -> bytes:
    """``struct statfs`` of the file system an open file lives on."""
    if file.host_fd is not None:
        buffer = ctypes.create_string_buffer(STATFS_SIZE)
        host_call(SYS_fstatfs, ctypes.c_int(file.host_fd), buffer)
        return buffer.raw
    magic = PIPEFS_MAGIC if isinstance(file, PipeEnd) else \
        procfs.PROC_SUPER_MAGIC if isinstance(file, (SyntheticFile, SyntheticDirectory)) \
        else TMPFS_MAGIC
    return struct.pack(STATFS_FORMAT, magic, VIRTUAL_BLOCK_SIZE, 0, 0, 0, 0, 0, 0, 0, NAME_MAX,
                       VIRTUAL_BLOCK_SIZE, 0)


def sys_fstatfs(proc: Process, fd: int, address: int) -> int:
    """fstatfs(2): the file system of an open file (the host's, for host files)."""
    proc.mm.write(address, _statfs_of_file(proc.fds.get(signed32(fd))))
    return 0


def sys_statfs(proc: Process, path_address: int, address: int) -> int:
    """statfs(2): the file system of a path, resolved through the policy."""
    path = guest_path(proc, AT_FDCWD, read_path(proc, path_address))
    found = procfs.lookup(proc, posixpath.normpath(path))
    if isinstance(found, (procfs.Node, procfs.OwnFd)):
        file = proc.fds.get(found.fd) if isinstance(found, procfs.OwnFd) else \
            SyntheticFile(found.path, b"", 0, found.stat())
        proc.mm.write(address, _statfs_of_file(file))
        return 0
    if isinstance(found, procfs.Redirect):
        path = found.path
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
    found = procfs.lookup(proc, path)
    if isinstance(found, procfs.Node):
        if found.kind != procfs.DIRECTORY:
            raise SyscallError(errno.ENOTDIR, f"{path} is not a directory")
        proc.cwd = found.path
        return 0
    if isinstance(found, procfs.OwnFd):
        raise SyscallError(errno.ENOTDIR, f"{path} is not a directory")
    if isinstance(found, procfs.Redirect):
        path = found.path
    st = proc.policy.stat(path, proc.cwd, True, syscall="chdir")
    if not stat_module.S_ISDIR(st.st_mode):
        raise SyscallError(errno.ENOTDIR, "not a directory")
    proc.cwd = path
    return 0


def sys_fchdir(proc: Process, fd: int) -> int:
    """fchdir(2): :func:`sys_chdir` to the directory an fd is open on."""
    proc.cwd = _directory_path(proc, signed32(fd))
    return 0


def _spelled(path: str) -> str:
    """*path* normalised, keeping a trailing slash: ``"/proc/self/"`` names
    the directory the link leads to, as the kernel follows a final link
    spelled with a slash."""
    normal = posixpath.normpath(path)
    return normal + "/" if path.endswith("/") and normal != "/" else normal


def virtual_link(proc: Process, path: str) -> str | None:
    """The target of a link in the synthesized /proc (``/proc/self/exe``,
    ``/proc/self/fd/3``, ``/dev/stdin``…), answered from the process's own
    state; None when the policy must answer (a path outside /proc, or one
    a link led out of).  EINVAL for a /proc name that is not a link."""
    found = procfs.lookup(proc, _spelled(path), follow=False)
    if isinstance(found, procfs.Node):
        if found.kind != procfs.LINK:
            raise SyscallError(errno.EINVAL, f"{path} is not a symbolic link")
        assert found.target is not None
        return found.target()
    return None


def _redirected(proc: Process, path: str) -> str:
    """*path*, or the guest path a /proc link leads to when its directory
    is reached through one (``/proc/self/cwd/link``)."""
    parent, name = posixpath.split(posixpath.normpath(path))
    found = procfs.lookup(proc, parent)
    return posixpath.join(found.path, name) if isinstance(found, procfs.Redirect) else path


def _readlinkat(proc: Process, dirfd: int, path_address: int, buffer: int, size: int,
                syscall: str) -> int:
    path = guest_path(proc, dirfd, read_path(proc, path_address))
    if signed32(size) <= 0:
        raise SyscallError(errno.EINVAL, "buffer size")
    target_text = virtual_link(proc, path)
    if target_text is None:
        target_text = proc.policy.readlink(_redirected(proc, path), proc.cwd, syscall=syscall)
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
    follow = not signed32(flags) & AT_SYMLINK_NOFOLLOW
    if signed32(mode) & ~(os.R_OK | os.W_OK | os.X_OK):
        raise SyscallError(errno.EINVAL, f"access mode {signed32(mode):#o} has unknown bits")
    found = procfs.lookup(proc, _spelled(path), follow)
    if isinstance(found, procfs.Node):
        procfs.check_access(found, signed32(mode))
        return 0
    if isinstance(found, procfs.OwnFd):
        file = proc.fds.get(found.fd)
        if (mode & os.W_OK and not file.writable()) or (mode & os.R_OK and not file.readable()):
            raise SyscallError(errno.EACCES, f"{path}: fd {found.fd} does not allow it")
        return 0
    if isinstance(found, procfs.Redirect):
        path = found.path
    if proc.policy.is_virtual_device(path, proc.cwd):
        return 0
    proc.policy.access(path, signed32(mode), proc.cwd, follow=follow, syscall="faccessat2")
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
    Syscall(4, "stat", sys_stat, ("path", "ptr")),
    Syscall(5, "fstat", sys_fstat, ("fd", "ptr")),
    Syscall(6, "lstat", sys_lstat, ("path", "ptr")),
    Syscall(21, "access", sys_access, ("path", "int")),
    Syscall(79, "getcwd", sys_getcwd, ("ptr", "uint")),
    Syscall(80, "chdir", sys_chdir, ("path",)),
    Syscall(81, "fchdir", sys_fchdir, ("fd",)),
    Syscall(89, "readlink", sys_readlink, ("path", "ptr", "uint"), SUPPORTED,
            "the synthesized /proc's links (exe, cwd, root, fd/N) describe the guest"),
    Syscall(95, "umask", sys_umask, ("mode",)),
    Syscall(262, "newfstatat", sys_newfstatat, ("dirfd", "path", "ptr", "hex")),
    Syscall(267, "readlinkat", sys_readlinkat, ("dirfd", "path", "ptr", "uint"), SUPPORTED,
            "the synthesized /proc's links (exe, cwd, root, fd/N) describe the guest"),
    Syscall(269, "faccessat", sys_faccessat, ("dirfd", "path", "int")),
    Syscall(439, "faccessat2", sys_faccessat2, ("dirfd", "path", "int", "hex")),
    Syscall(332, "statx", sys_statx, ("dirfd", "path", "hex", "hex", "ptr"), PARTIAL,
            "the basic fields (STATX_BASIC_STATS); no birth time or mount id"),
    Syscall(137, "statfs", sys_statfs, ("path", "ptr")),
    Syscall(138, "fstatfs", sys_fstatfs, ("fd", "ptr")),
]
