"""Layer 8 — file system calls: open/read/write/close and their friends.

Every path goes through the sandbox policy (``proc.policy``), the one seam
that decides whether a path may be opened; every guest buffer goes through
the memory manager (``proc.mm``), which bounds-checks it.  Reads and
writes move data between host fds and guest memory with ``os.readv`` /
``os.writev`` on zero-copy views of guest RAM.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat as stat_module
import struct

from minikvm.errors import SyscallError
from minikvm.fdtable import (FD_CLOEXEC, O_ACCMODE, O_APPEND, O_CLOEXEC, O_NONBLOCK, O_WRONLY,
                             DeviceFile, HostFile, Pipe, PipeEnd)
from minikvm.syscalls.base import PARTIAL, SUPPORTED, Syscall, signed32, signed64

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_EACCESS = 0x200
AT_EMPTY_PATH = 0x1000
O_DIRECTORY = 0o200000
O_CREAT = 0o100
O_TRUNC = 0o1000
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
SEEK_END = 2
PATH_MAX = 4096
MAX_IO = 0x7FFF_F000  # Linux's MAX_RW_COUNT: one read or write moves at most this
#: ``struct stat`` on x86-64 (asm/stat.h): 144 bytes
STAT_FORMAT = "<QQQIIIiQqqqqqqqqq24x"


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
    return file.writev(views)


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
    return file.writev(views)


def _check_file_size(proc, file, count: int) -> None:
    limit = getattr(proc.policy, "max_file_size", None)
    if limit is None or not isinstance(file, HostFile) or file.path.startswith("<"):
        return
    position = os.lseek(file.host_fd, 0, os.SEEK_CUR) if not file.status_flags & O_APPEND \
        else os.fstat(file.host_fd).st_size
    if stat_module.S_ISREG(os.fstat(file.host_fd).st_mode) and position + count > limit:
        proc.policy.check_file_size(position + count, path=file.path, syscall="write")


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
    if not proc.fds.get(signed32(fd)).writable():
        raise SyscallError(errno.EBADF, "not open for writing")
    return os.pwritev(host_fd, proc.mm.views(buffer, min(count, MAX_IO)), signed64(offset))


def sys_lseek(proc, fd: int, offset: int, whence: int) -> int:
    file = proc.fds.get(signed32(fd))
    if isinstance(file, DeviceFile):
        return 0
    if file.host_fd is None:
        raise SyscallError(errno.ESPIPE, "pipes cannot seek")
    return os.lseek(file.host_fd, signed64(offset), signed32(whence))


# -- metadata ---------------------------------------------------------------------
def pack_stat(st: os.stat_result) -> bytes:
    """A host ``os.stat_result`` as the guest's ``struct stat``."""
    return struct.pack(STAT_FORMAT, st.st_dev, st.st_ino, st.st_nlink, st.st_mode, st.st_uid,
                       st.st_gid, 0, st.st_rdev, st.st_size, st.st_blksize, st.st_blocks,
                       int(st.st_atime), st.st_atime_ns % 10**9, int(st.st_mtime),
                       st.st_mtime_ns % 10**9, int(st.st_ctime), st.st_ctime_ns % 10**9)


def stat_of_file(file) -> os.stat_result:
    """fstat of an open guest file, whatever kind it is."""
    if file.host_fd is not None:
        return os.fstat(file.host_fd)
    if isinstance(file, DeviceFile):
        return os.stat_result((stat_module.S_IFCHR | 0o666, 0, 0, 1, 0, 0, 0, 0, 0, 0))
    return os.stat_result((stat_module.S_IFIFO | 0o600, 0, 0, 1, os.getuid(), os.getgid(),
                           0, 0, 0, 0))


def stat_of_path(proc, dirfd: int, path_address: int, flags: int) -> os.stat_result:
    """The stat of a path argument (AT_EMPTY_PATH: of *dirfd* itself)."""
    flags = signed32(flags)
    raw = proc.mm.read_cstring(path_address, PATH_MAX)
    if not raw and flags & AT_EMPTY_PATH:
        dirfd = signed32(dirfd)
        if dirfd == AT_FDCWD:
            return proc.policy.stat(proc.cwd, proc.cwd, True, syscall="newfstatat")
        return stat_of_file(proc.fds.get(dirfd))
    if not raw:
        raise SyscallError(errno.ENOENT, "empty path")
    path = guest_path(proc, dirfd, raw)
    device = proc.policy.is_virtual_device(path, proc.cwd)
    if device:
        return stat_of_file(DeviceFile(device, path, 0))
    return proc.policy.stat(path, proc.cwd, not flags & AT_SYMLINK_NOFOLLOW, syscall="newfstatat")


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


def sys_readlinkat(proc, dirfd: int, path_address: int, buffer: int, size: int) -> int:
    path = guest_path(proc, dirfd, read_path(proc, path_address))
    if signed32(size) <= 0:
        raise SyscallError(errno.EINVAL, "buffer size")
    if path == "/proc/self/exe":
        target = os.fsencode(proc.exe_path)
    else:
        target = os.fsencode(proc.policy.readlink(path, proc.cwd, syscall="readlinkat"))
    target = target[:size]
    proc.mm.write(buffer, target)
    return len(target)


def sys_readlink(proc, path_address: int, buffer: int, size: int) -> int:
    return sys_readlinkat(proc, AT_FDCWD, path_address, buffer, size)


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
    Syscall(89, "readlink", sys_readlink, ("path", "ptr", "uint")),
    Syscall(95, "umask", sys_umask, ("mode",)),
    Syscall(257, "openat", sys_openat, ("dirfd", "path", "oflags", "mode")),
    Syscall(262, "newfstatat", sys_newfstatat, ("dirfd", "path", "ptr", "hex")),
    Syscall(267, "readlinkat", sys_readlinkat, ("dirfd", "path", "ptr", "uint")),
    Syscall(269, "faccessat", sys_faccessat, ("dirfd", "path", "int")),
    Syscall(439, "faccessat2", sys_faccessat2, ("dirfd", "path", "int", "hex")),
]
