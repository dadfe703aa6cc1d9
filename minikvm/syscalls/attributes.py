"""Layer 6 — file attributes: size, data on disk, times, mode and owner
(truncate, fsync, utimensat, chmod, chown).

A call that changes a file reached by path first checks that the file's
directory entry lies in a write grant (``check_writable_entry``), then acts
on an fd the policy opened beneath that grant — never on a host path string.
Ownership never changes: ``chown`` to the owner a file already has (or -1)
succeeds and does nothing, anything else is EPERM, as for an unprivileged
user.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat as stat_module
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import (O_NONBLOCK, O_WRONLY, AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW,
                               MODE_BITS, NSEC_PER_SEC)
from minikvm.process.fdtable import HostFile
from minikvm.syscalls.base import PARTIAL, SUPPORTED, Syscall, signed32, signed64
from minikvm.syscalls.files import (PATH_MAX, check_file_change, check_file_size,
                                    check_writable_entry, entry_path, guest_path, host_call,
                                    open_to_change, read_path)
from minikvm.syscalls.metadata import stat_of_file, stat_of_path

if TYPE_CHECKING:
    from minikvm.process.process import Process

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
SYS_utimensat = 280


# -- changing files: size, sync, times, mode, owner ----------------------------------------
def sys_ftruncate(proc: Process, fd: int, length: int) -> int:
    """ftruncate(2): set the length of a regular file open for writing.

    EINVAL for a negative length or an fd that is not a writable regular file;
    EFBIG past ``--max-file-size``."""
    file = proc.fds.get(signed32(fd))
    length = signed64(length)
    if length < 0:
        raise SyscallError(errno.EINVAL, f"negative length {length}")
    if file.host_fd is None or not file.writable():
        raise SyscallError(errno.EINVAL, "not a regular file open for writing")
    if not stat_module.S_ISREG(os.fstat(file.host_fd).st_mode):
        raise SyscallError(errno.EINVAL, "not a regular file")
    check_file_size(proc, file, 0, length, syscall="ftruncate")
    os.ftruncate(file.host_fd, length)
    return 0


def sys_truncate(proc: Process, path_address: int, length: int) -> int:
    """Opened for writing beneath its grant (so a write grant and write
    permission are needed, as Linux wants), then cut."""
    length = signed64(length)
    path = entry_path(proc, guest_path(proc, AT_FDCWD, read_path(proc, path_address)), True)
    if length < 0:
        raise SyscallError(errno.EINVAL, f"negative length {length}")
    if proc.policy.is_virtual_device(path, proc.cwd):
        raise SyscallError(errno.EINVAL, "not a regular file")
    host_fd = proc.policy.open(path, O_WRONLY | O_NONBLOCK, 0, proc.cwd, syscall="truncate")
    try:
        if not stat_module.S_ISREG(os.fstat(host_fd).st_mode):
            raise SyscallError(errno.EINVAL, "not a regular file")
        limit = proc.policy.max_file_size
        if limit is not None and length > limit:
            proc.policy.check_file_size(length, path=path, syscall="truncate")
        os.ftruncate(host_fd, length)
    finally:
        os.close(host_fd)
    return 0


def _sync(proc: Process, fd: int, data_only: bool) -> int:
    file = proc.fds.get(signed32(fd))
    if file.host_fd is None:
        raise SyscallError(errno.EINVAL, f"a {file.kind} cannot be synced")
    (os.fdatasync if data_only else os.fsync)(file.host_fd)
    return 0


def sys_fsync(proc: Process, fd: int) -> int:
    """fsync(2): flush a file's data and metadata to its disk (the host's fsync)."""
    return _sync(proc, fd, data_only=False)


def sys_fdatasync(proc: Process, fd: int) -> int:
    """fdatasync(2): flush a file's data to its disk (the host's fdatasync)."""
    return _sync(proc, fd, data_only=True)


def _sync_open_files(proc: Process) -> None:
    """Flush every host file the guest has open to disk.

    That is what ``sync`` and ``syncfs`` mean for a sandboxed program: its
    own data.  The host's ``sync()`` would flush every file system of the
    machine, so a guest calling it in a loop would keep the host's disks
    busy for other programs (~30 ms a call here) for nothing it can see."""
    for host_fd in {getattr(entry.file, "host_fd", None) for entry in proc.fds.entries.values()}:
        if host_fd is None:
            continue
        try:
            os.fsync(host_fd)
        except OSError:
            pass  # a terminal, pipe or socket: nothing to flush (sync(2) never fails)


def sys_sync(proc: Process) -> int:
    """Write the guest's open files to disk (see :func:`_sync_open_files`)."""
    _sync_open_files(proc)
    return 0


def sys_syncfs(proc: Process, fd: int) -> int:
    """syncfs(2) flushes *fd*'s file system; the guest's open files are its part of it."""
    proc.fds.get(signed32(fd))
    _sync_open_files(proc)
    return 0


def _read_utimens(proc: Process, address: int) -> tuple[int, int, int, int] | None:
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
    host_call(SYS_utimensat, ctypes.c_int(host_fd), ctypes.c_char_p(b""), array,
               ctypes.c_int(AT_EMPTY_PATH))


def sys_utimensat(proc: Process, dirfd: int, path_address: int, times_address: int,
                  flags: int) -> int:
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


def sys_fchmod(proc: Process, fd: int, mode: int) -> int:
    """fchmod(2): change the mode bits of an open file.

    Only files opened from a write grant: stdio and devices are EPERM (they are
    the host's, not the sandbox's)."""
    file = proc.fds.get(signed32(fd))
    check_file_change(proc, file, "fchmod")
    os.fchmod(file.host_fd, mode & MODE_BITS)  # type: ignore[arg-type]
    return 0


def _chmod(proc: Process, dirfd: int, path_address: int, mode: int, flags: int,
           syscall: str) -> int:
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


def sys_fchmodat2(proc: Process, dirfd: int, path_address: int, mode: int, flags: int) -> int:
    """fchmodat2(2): chmod relative to a directory fd, with flags; see ``_chmod``."""
    return _chmod(proc, dirfd, path_address, mode, flags, "fchmodat2")


def sys_fchmodat(proc: Process, dirfd: int, path_address: int, mode: int) -> int:
    """fchmodat(2): chmod relative to a directory fd; see ``_chmod``."""
    return _chmod(proc, dirfd, path_address, mode, 0, "fchmodat")


def sys_chmod(proc: Process, path_address: int, mode: int) -> int:
    """chmod(2): change a file's mode bits; the path must be in a write grant (EACCES)."""
    return _chmod(proc, AT_FDCWD, path_address, mode, 0, "chmod")


def _same_owner(st: os.stat_result, uid: int, gid: int) -> int:
    """chown that would change nothing succeeds; any real change is EPERM."""
    uid, gid = signed32(uid), signed32(gid)
    if uid in (-1, st.st_uid) and gid in (-1, st.st_gid):
        return 0
    raise SyscallError(errno.EPERM, "the sandbox never changes a file's owner")


def sys_fchown(proc: Process, fd: int, uid: int, gid: int) -> int:
    """fchown(2): minikvm never changes an owner.

    Asking for the current owner (or -1) succeeds; anything else is EPERM, as
    for an unprivileged process."""
    file = proc.fds.get(signed32(fd))
    st = stat_of_file(file)
    if isinstance(file, HostFile) and file.path.startswith("/"):
        check_writable_entry(proc, file.path, "fchown")
    return _same_owner(st, uid, gid)


def sys_fchownat(proc: Process, dirfd: int, path_address: int, uid: int, gid: int,
                 flags: int) -> int:
    """fchownat(2): as :func:`sys_fchown`, for a path (``AT_EMPTY_PATH``: the fd).

    EINVAL for unknown flags."""
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


def sys_chown(proc: Process, path_address: int, uid: int, gid: int) -> int:
    """chown(2): :func:`sys_fchownat` at the working directory, following symlinks."""
    return sys_fchownat(proc, AT_FDCWD, path_address, uid, gid, 0)


def sys_lchown(proc: Process, path_address: int, uid: int, gid: int) -> int:
    """lchown(2): :func:`sys_fchownat` at the working directory, on the link itself."""
    return sys_fchownat(proc, AT_FDCWD, path_address, uid, gid, AT_SYMLINK_NOFOLLOW)


SYSCALLS = [
    Syscall(77, "ftruncate", sys_ftruncate, ("fd", "long")),
    Syscall(76, "truncate", sys_truncate, ("path", "long")),
    Syscall(74, "fsync", sys_fsync, ("fd",)),
    Syscall(75, "fdatasync", sys_fdatasync, ("fd",)),
    Syscall(162, "sync", sys_sync, ()),
    Syscall(306, "syncfs", sys_syncfs, ("fd",), SUPPORTED, "flushes the files the guest has open"),
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
]
