"""Layer 6 — directories: listing them (getdents64) and changing their
entries (mkdir, unlink, rmdir, rename, link, symlink).

Listings are read from the host directory and packed as Linux packs them
(``struct linux_dirent64``, fs/readdir.c), ``.`` and ``..`` included, with
offsets that stay valid across calls.  Every call that acts on an entry goes
through ``policy.resolve_parent``: the directory holding the entry is opened
beneath its grant and the host call names one entry in it, so a symlink or
``..`` can never carry the operation outside the grant; rename and link need
*both* ends beneath a write grant.  Shared path helpers live in
:mod:`minikvm.syscalls.files`.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import posixpath
import stat as stat_module
import struct
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import (AT_EMPTY_PATH, AT_FDCWD, AT_REMOVEDIR, AT_SYMLINK_FOLLOW, MODE_BITS)
from minikvm.process.determinism import MAX_SORTED_ENTRIES
from minikvm.process.fdtable import DIRECTORY_WINDOW, HostFile, OpenFile, SyntheticDirectory
from minikvm.syscalls import procfs
from minikvm.syscalls.base import PARTIAL, REFUSED, SUPPORTED, Syscall, signed32
from minikvm.syscalls.files import (UINT_MASK, entry_path, final_name, guest_path, host_call,
                                    read_path)

if TYPE_CHECKING:
    from minikvm.process.process import Process

#: d_type values of a directory listing (linux/dirent.h, fs/readdir.c)
DT_UNKNOWN, DT_DIR, DT_REG, DT_LNK = 0, 4, 8, 10

#: ``struct linux_dirent64``: d_ino, d_off, d_reclen, d_type, then the name and a NUL
DIRENT64_HEADER = struct.Struct("<QqHB")
#: ``struct linux_dirent`` (getdents): d_ino, d_off, d_reclen, the name, a NUL, d_type last
DIRENT_HEADER = struct.Struct("<QQH")
DIRENT_ALIGN = 8
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
SYS_renameat2 = 316


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


def _parent_inode(proc: Process, file: HostFile, own: os.stat_result) -> int:
    """``..``'s inode: the parent's, as ``stat("..")`` shows it — the policy
    answers stat for the directories above a grant too, so a program that
    walks up comparing inodes sees the same number both ways — or the
    directory's own for ``/``, whose ``..`` is itself."""
    parent = posixpath.dirname(file.path)
    if parent == file.path:
        return own.st_ino
    try:
        return proc.policy.stat(parent, proc.cwd, True, syscall="getdents64").st_ino
    except (SyscallError, OSError):
        return own.st_ino


def directory_listing(proc: Process, file: OpenFile, start: int = 0,
                      limit: int | None = None) -> list[tuple[bytes, int, int]]:
    """``(name, inode, d_type)`` of the entries of an open directory from
    index *start* (at most *limit* of them), ``.`` and ``..`` first, as
    Linux's file systems list them.  Entries before *start* are read and
    dropped, never kept: the host holds at most *limit* entries.

    A directory above the grants lists only the way down to them
    (:meth:`~minikvm.sandbox.policy.Policy.visible_entries`): the rest of
    it does not exist for the guest."""
    if not isinstance(file, HostFile) or file.host_fd is None:
        raise SyscallError(errno.ENOTDIR, f"a {file.kind} is not a directory")
    own = os.fstat(file.host_fd)
    if not stat_module.S_ISDIR(own.st_mode):
        raise SyscallError(errno.ENOTDIR, "not a directory")
    dots = [(b".", own.st_ino, DT_DIR), (b"..", _parent_inode(proc, file, own), DT_DIR)]
    stop = None if limit is None else start + limit
    visible = proc.policy.visible_entries(file.path)
    if visible is not None:     # above a grant: only the way down, never the host's listing
        for name in sorted(visible):
            try:
                st = os.stat(name, dir_fd=file.host_fd, follow_symlinks=False)
            except OSError:
                continue        # the way down is gone: nothing to show
            dots.append((os.fsencode(name), st.st_ino, stat_module.S_IFMT(st.st_mode) >> 12))
        return dots[start:stop]
    if proc.determinism is not None:
        names = _sorted_listing(file.host_fd)
        if names is not None:
            return (dots + names)[start:stop]
    entries = dots[start:stop]
    with os.scandir(file.host_fd) as listing:
        for entry in itertools.islice(listing, max(start - len(dots), 0),
                                      None if stop is None else max(stop - len(dots), 0)):
            entries.append((os.fsencode(entry.name), entry.inode(), _d_type(entry)))
    return entries


def _sorted_listing(host_fd: int) -> list[tuple[bytes, int, int]] | None:
    """``--deterministic``: the directory's entries sorted by name, so that
    two runs list them in one order whatever order the host's file system
    keeps; None for a directory of more than :data:`MAX_SORTED_ENTRIES`
    (listed in the host's order: sorting holds every name at once)."""
    entries = []
    with os.scandir(host_fd) as listing:
        for entry in itertools.islice(listing, MAX_SORTED_ENTRIES + 1):
            entries.append((os.fsencode(entry.name), entry.inode(), _d_type(entry)))
    if len(entries) > MAX_SORTED_ENTRIES:
        return None
    entries.sort()
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


def _getdents(proc: Process, fd: int, address: int, count: int, pack) -> int:
    """Fill the guest's buffer with whole records from the directory's position.

    The listing is read in windows of :data:`~minikvm.process.fdtable.DIRECTORY_WINDOW`
    entries (:attr:`HostFile.directory_entries`), so a huge directory costs
    the host one window, not its whole listing; each record's ``d_off`` is
    the index of the next one, so ``telldir`` / ``seekdir`` (lseek) land
    where they should across calls.  A window shorter than the limit ends
    the directory.
    """
    file = proc.fds.get(signed32(fd))
    count &= UINT_MASK
    if isinstance(file, SyntheticDirectory):
        return _getdents_synthesized(proc, file, address, count, pack)
    if not isinstance(file, HostFile):
        raise SyscallError(errno.ENOTDIR, f"a {file.kind} is not a directory")
    index = file.directory_offset
    buffer = bytearray()
    while True:
        entries, base = file.directory_entries, file.directory_window_start
        if entries is None or not base <= index <= base + len(entries) or (
                index == base + len(entries) and len(entries) == DIRECTORY_WINDOW):
            entries = directory_listing(proc, file, index, DIRECTORY_WINDOW)
            proc.fds.directory_windows.hold(file, index, entries)
            base = index
        if index == base + len(entries):
            break                                  # the end of the directory
        record = pack(*entries[index - base], index + 1)
        if len(buffer) + len(record) > count:
            break
        buffer += record
        index += 1
    if not buffer and index < base + len(entries):
        raise SyscallError(errno.EINVAL, f"a {count}-byte buffer cannot hold one entry")
    proc.mm.write(address, bytes(buffer))
    file.directory_offset = index
    return len(buffer)


def _getdents_synthesized(proc: Process, file: SyntheticDirectory, address: int, count: int,
                          pack) -> int:
    """getdents of a /proc directory: its listing was made at open; whole
    records from :attr:`~SyntheticDirectory.directory_offset`, EINVAL when
    not even one fits, 0 at the end (or past it, after an lseek)."""
    if file.entries is None:
        file.entries = procfs.list_directory(proc, file)
    buffer = bytearray()
    index = file.directory_offset
    while index < len(file.entries):
        record = pack(*file.entries[index], index + 1)
        if len(buffer) + len(record) > count:
            break
        buffer += record
        index += 1
    if not buffer and index < len(file.entries):
        raise SyscallError(errno.EINVAL, f"a {count}-byte buffer cannot hold one entry")
    proc.mm.write(address, bytes(buffer))
    file.directory_offset = index
    return len(buffer)


def sys_getdents64(proc: Process, fd: int, address: int, count: int) -> int:
    """getdents64(2): the next entries of a directory, as ``linux_dirent64`` records.

    The listing is read from the host at the first call (and after a rewind)
    and handed out from that copy."""
    return _getdents(proc, fd, address, count, pack_dirent64)


def sys_getdents(proc: Process, fd: int, address: int, count: int) -> int:
    """getdents(2): the old ``linux_dirent`` form of :func:`sys_getdents64`."""
    return _getdents(proc, fd, address, count, pack_dirent)


# -- directory entries: create, remove, rename, link -------------------------------------
def _mkdirat(proc: Process, dirfd: int, path_address: int, mode: int, syscall: str) -> int:
    raw = read_path(proc, path_address)
    if final_name(raw) in (b".", b"..", b"/"):
        raise SyscallError(errno.EEXIST, "the directory exists")
    path = entry_path(proc, guest_path(proc, dirfd, raw))
    if proc.policy.is_virtual_device(path, proc.cwd):
        raise SyscallError(errno.EEXIST, "a device exists there")
    with proc.policy.resolve_parent(path, proc.cwd, write=True, syscall=syscall) as parent:
        os.mkdir(parent.name, mode & ~proc.umask & MODE_BITS, dir_fd=parent.dirfd)
    return 0


def sys_mkdirat(proc: Process, dirfd: int, path_address: int, mode: int) -> int:
    """mkdirat(2): make a directory; its parent must be in a write grant (EACCES)."""
    return _mkdirat(proc, dirfd, path_address, mode, "mkdirat")


def sys_mkdir(proc: Process, path_address: int, mode: int) -> int:
    """mkdir(2): :func:`sys_mkdirat` at the working directory."""
    return _mkdirat(proc, AT_FDCWD, path_address, mode, "mkdir")


def _unlinkat(proc: Process, dirfd: int, path_address: int, flags: int, syscall: str) -> int:
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
    path = entry_path(proc, guest_path(proc, dirfd, raw))
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


def sys_unlinkat(proc: Process, dirfd: int, path_address: int, flags: int) -> int:
    """unlinkat(2): remove a name (``AT_REMOVEDIR``: an empty directory).

    The parent must be in a write grant (EACCES)."""
    return _unlinkat(proc, dirfd, path_address, flags, "unlinkat")


def sys_unlink(proc: Process, path_address: int) -> int:
    """unlink(2): :func:`sys_unlinkat` at the working directory."""
    return _unlinkat(proc, AT_FDCWD, path_address, 0, "unlink")


def sys_rmdir(proc: Process, path_address: int) -> int:
    """rmdir(2): :func:`sys_unlinkat` with ``AT_REMOVEDIR``."""
    return _unlinkat(proc, AT_FDCWD, path_address, AT_REMOVEDIR, "rmdir")


def _renameat2(proc: Process, old_dirfd: int, old_address: int, new_dirfd: int, new_address: int,
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
    old = entry_path(proc, guest_path(proc, old_dirfd, old_raw))
    new = entry_path(proc, guest_path(proc, new_dirfd, new_raw))
    policy = proc.policy
    with policy.resolve_parent(old, proc.cwd, write=True, syscall=syscall) as source, \
            policy.resolve_parent(new, proc.cwd, write=True, syscall=syscall) as target:
        if old_raw.endswith(b"/") or new_raw.endswith(b"/"):
            entry = os.stat(source.name, dir_fd=source.dirfd, follow_symlinks=False)
            if not stat_module.S_ISDIR(entry.st_mode):
                raise SyscallError(errno.ENOTDIR, "trailing slash on a non-directory")
        if flags:
            host_call(SYS_renameat2, ctypes.c_int(source.dirfd),
                       ctypes.c_char_p(os.fsencode(source.name)), ctypes.c_int(target.dirfd),
                       ctypes.c_char_p(os.fsencode(target.name)), ctypes.c_uint(flags))
        else:
            os.rename(source.name, target.name, src_dir_fd=source.dirfd,
                      dst_dir_fd=target.dirfd)
    return 0


def sys_renameat2(proc: Process, old_dirfd: int, old: int, new_dirfd: int, new: int,
                  flags: int) -> int:
    """renameat2(2): rename, with ``RENAME_NOREPLACE`` or ``RENAME_EXCHANGE``.

    Both parents must be in write grants (EACCES); ``RENAME_WHITEOUT`` is EINVAL."""
    return _renameat2(proc, old_dirfd, old, new_dirfd, new, flags, "renameat2")


def sys_renameat(proc: Process, old_dirfd: int, old: int, new_dirfd: int, new: int) -> int:
    """renameat(2): :func:`sys_renameat2` without flags."""
    return _renameat2(proc, old_dirfd, old, new_dirfd, new, 0, "renameat")


def sys_rename(proc: Process, old: int, new: int) -> int:
    """rename(2): :func:`sys_renameat2` at the working directory, without flags."""
    return _renameat2(proc, AT_FDCWD, old, AT_FDCWD, new, 0, "rename")


def _linkat(proc: Process, old_dirfd: int, old_address: int, new_dirfd: int, new_address: int,
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
    old = entry_path(proc, guest_path(proc, old_dirfd, old_raw))
    new = entry_path(proc, guest_path(proc, new_dirfd, new_raw))
    policy = proc.policy
    with policy.resolve_parent(old, proc.cwd, write=True, syscall=syscall) as source, \
            policy.resolve_parent(new, proc.cwd, write=True, syscall=syscall) as target:
        if not flags & AT_SYMLINK_FOLLOW:
            os.link(source.name, target.name, src_dir_fd=source.dirfd,
                    dst_dir_fd=target.dirfd, follow_symlinks=False)
            return 0
        # Follow a final symlink beneath the grant (never with the host's own
        # lookup, which could leave it), then link the file that fd holds.
        held = policy.open_to_change(old, proc.cwd, True, syscall=syscall)
        try:
            os.link(f"/proc/self/fd/{held}", target.name, dst_dir_fd=target.dirfd,
                    follow_symlinks=True)
        finally:
            os.close(held)
    return 0


def sys_linkat(proc: Process, old_dirfd: int, old: int, new_dirfd: int, new: int,
               flags: int) -> int:
    """linkat(2): make a hard link (``AT_SYMLINK_FOLLOW``: to a symlink's target).

    The new name's parent must be in a write grant (EACCES); ``AT_EMPTY_PATH``
    is ENOENT, as for a process without CAP_DAC_READ_SEARCH."""
    return _linkat(proc, old_dirfd, old, new_dirfd, new, flags, "linkat")


def sys_link(proc: Process, old: int, new: int) -> int:
    """link(2): :func:`sys_linkat` at the working directory."""
    return _linkat(proc, AT_FDCWD, old, AT_FDCWD, new, 0, "link")


def _symlinkat(proc: Process, target_address: int, dirfd: int, path_address: int,
               syscall: str) -> int:
    """The link's text may name anything: following it is what the policy
    guards, and every guest lookup stays beneath its grant."""
    target = read_path(proc, target_address)
    raw = read_path(proc, path_address)
    if final_name(raw) in (b".", b"..", b"/"):
        raise SyscallError(errno.EEXIST, "the name exists")
    path = entry_path(proc, guest_path(proc, dirfd, raw))
    with proc.policy.resolve_parent(path, proc.cwd, write=True, syscall=syscall) as parent:
        os.symlink(os.fsdecode(target), parent.name, dir_fd=parent.dirfd)
    return 0


def sys_symlinkat(proc: Process, target: int, dirfd: int, path: int) -> int:
    """symlinkat(2): make a symlink; its parent must be in a write grant (EACCES).

    The target is stored as given: it is resolved, beneath a grant, only when
    followed."""
    return _symlinkat(proc, target, dirfd, path, "symlinkat")


def sys_symlink(proc: Process, target: int, path: int) -> int:
    """symlink(2): :func:`sys_symlinkat` at the working directory."""
    return _symlinkat(proc, target, AT_FDCWD, path, "symlink")


#: Why inotify is ENOSYS.  A watch would be a host inotify on a granted
#: directory, and its events name entries by the host's view — including
#: a rename *out* of the grant, whose destination the guest must not learn
#: — so each event would have to be filtered by the policy, and a watch on
#: a directory above a grant (only the way down is visible) faked.  ENOSYS
#: is what programs are written to handle: ``tail -f``, editors, build
#: watchers and file managers fall back to polling (stat every second).
INOTIFY_NOTE = ("ENOSYS: events would need filtering by the policy; programs fall back "
                "to polling")


def sys_inotify(proc: Process, *args: int) -> int:
    """inotify_init, inotify_init1, inotify_add_watch, inotify_rm_watch:
    ENOSYS (:data:`INOTIFY_NOTE` says why)."""
    raise SyscallError(errno.ENOSYS, "inotify is not offered: " + INOTIFY_NOTE)


SYSCALLS = [
    Syscall(253, "inotify_init", sys_inotify, (), REFUSED, INOTIFY_NOTE, errno.ENOSYS),
    Syscall(294, "inotify_init1", sys_inotify, ("hex",), REFUSED, INOTIFY_NOTE, errno.ENOSYS),
    Syscall(254, "inotify_add_watch", sys_inotify, ("fd", "path", "hex"), REFUSED, INOTIFY_NOTE,
            errno.ENOSYS),
    Syscall(255, "inotify_rm_watch", sys_inotify, ("fd", "int"), REFUSED, INOTIFY_NOTE,
            errno.ENOSYS),
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
]
