"""Layer 6 — extended attributes, read-only: getxattr, listxattr and their l/f forms.

Why a program reads them at all: ``ls -l`` asks every file for its ACL and
SELinux label (``lgetxattr(path, "system.posix_acl_access")``,
``"security.selinux"``) to decide whether to print a ``+`` or ``.`` after the
mode, and ``cp -a``, ``tar --xattrs`` and ``rsync -X`` list them.  A missing
system call (``ENOSYS``) makes ``ls -la`` print "Function not implemented"
for every file, so these answer as Linux does: the attributes the host file
really has, found through the policy like any other path (outside the
grants: ``ENOENT``).

Reading an attribute never changes anything; *setting* one
(``setxattr``, ``removexattr``) is not offered — a sandboxed program has
no business labelling host files — and stays ``ENOSYS``.

The host reads the attribute through ``/proc/self/fd/N`` of an ``O_PATH``
fd the policy opened beneath the grant: the fd pins the very file the
policy resolved, and its magic link reaches it without a second walk of
the guest's path.  A symlink itself (``lgetxattr`` on a link) has no
attributes a guest can see: ``ENODATA`` and an empty list, as for a
symlink on most file systems.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from typing import TYPE_CHECKING, Callable

from minikvm.errors import SyscallError
from minikvm.linux_abi import O_NOFOLLOW, O_PATH
from minikvm.linux_abi import AT_FDCWD
from minikvm.syscalls.base import PARTIAL, Syscall, signed32
from minikvm.syscalls.files import guest_path, read_path

if TYPE_CHECKING:
    from minikvm.process.process import Process

#: The longest attribute name, without its NUL (include/uapi/linux/limits.h).
XATTR_NAME_MAX = 255
#: The largest attribute value or name list (include/uapi/linux/limits.h).
XATTR_SIZE_MAX = 65536


def _reply(proc: Process, data: bytes, buffer: int, size: int) -> int:
    """What getxattr and listxattr return: with *size* 0 the size the value
    needs; ERANGE when *size* is too small; else the bytes, copied out."""
    if size == 0:
        return len(data)
    if len(data) > size:
        raise SyscallError(errno.ERANGE, f"the value is {len(data)} bytes, the buffer {size}")
    proc.mm.write(buffer, data)
    return len(data)


def _attribute_name(proc: Process, address: int) -> str:
    """The attribute name argument: 1 to XATTR_NAME_MAX bytes (else ERANGE)."""
    try:
        name = proc.mm.read_cstring(address, XATTR_NAME_MAX + 1)
    except SyscallError as error:
        if error.errno == errno.ENAMETOOLONG:
            raise SyscallError(errno.ERANGE, f"attribute name longer than {XATTR_NAME_MAX}")
        raise
    if not name:
        raise SyscallError(errno.ERANGE, "empty attribute name")
    return os.fsdecode(name)


def _on_path(proc: Process, path_address: int, follow: bool, syscall: str,
             read: Callable[[str], bytes]) -> bytes:
    """Run *read* on the host file the guest's path names, through the policy."""
    path = guest_path(proc, AT_FDCWD, read_path(proc, path_address))
    if proc.policy.is_virtual_device(path, proc.cwd):
        return read("")                     # a device of minikvm's own: no attributes
    try:
        fd = proc.policy.open(path, O_PATH | (0 if follow else O_NOFOLLOW), 0, proc.cwd,
                              syscall=syscall)
    except OSError as error:
        raise SyscallError(error.errno or errno.EIO, error.strerror or "") from None
    try:
        if stat_module.S_ISLNK(os.fstat(fd).st_mode):
            return read("")
        return read(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _on_fd(proc: Process, fd: int, read: Callable[[int | str], bytes]) -> bytes:
    """Run *read* on the host file behind guest *fd* (none: no attributes)."""
    file = proc.fds.get(signed32(fd))
    if file.host_fd is None:
        return read("")
    return read(file.host_fd)


def _get(name: str) -> Callable[[int | str], bytes]:
    """A reader of attribute *name* (of a host fd, or a path; "" is none)."""
    def read(target: int | str) -> bytes:
        if target == "":
            raise SyscallError(errno.ENODATA, f"no attribute {name}")
        try:
            return os.getxattr(target, name)
        except OSError as error:
            raise SyscallError(error.errno or errno.EIO, f"{name}: {error.strerror}") from None
    return read


def _list(target: int | str) -> bytes:
    """The names of *target*'s attributes, as listxattr lays them out."""
    if target == "":
        return b""
    try:
        names = os.listxattr(target)
    except OSError as error:
        raise SyscallError(error.errno or errno.EIO, error.strerror or "") from None
    return b"".join(os.fsencode(name) + b"\0" for name in names)


def sys_getxattr(proc: Process, path: int, name: int, value: int, size: int) -> int:
    """getxattr(2): the value of attribute *name* of the file *path* names
    (symlinks followed); ENODATA when it has none."""
    data = _on_path(proc, path, True, "getxattr", _get(_attribute_name(proc, name)))
    return _reply(proc, data, value, min(size, XATTR_SIZE_MAX))


def sys_lgetxattr(proc: Process, path: int, name: int, value: int, size: int) -> int:
    """lgetxattr(2): getxattr of a symlink itself (which shows none)."""
    data = _on_path(proc, path, False, "lgetxattr", _get(_attribute_name(proc, name)))
    return _reply(proc, data, value, min(size, XATTR_SIZE_MAX))


def sys_fgetxattr(proc: Process, fd: int, name: int, value: int, size: int) -> int:
    """fgetxattr(2): getxattr of an open file (a pipe or device: ENODATA)."""
    data = _on_fd(proc, fd, _get(_attribute_name(proc, name)))
    return _reply(proc, data, value, min(size, XATTR_SIZE_MAX))


def sys_listxattr(proc: Process, path: int, names: int, size: int) -> int:
    """listxattr(2): the attribute names of a file, each NUL-terminated."""
    return _reply(proc, _on_path(proc, path, True, "listxattr", _list), names,
                  min(size, XATTR_SIZE_MAX))


def sys_llistxattr(proc: Process, path: int, names: int, size: int) -> int:
    """llistxattr(2): listxattr of a symlink itself (an empty list)."""
    return _reply(proc, _on_path(proc, path, False, "llistxattr", _list), names,
                  min(size, XATTR_SIZE_MAX))


def sys_flistxattr(proc: Process, fd: int, names: int, size: int) -> int:
    """flistxattr(2): listxattr of an open file."""
    return _reply(proc, _on_fd(proc, fd, _list), names, min(size, XATTR_SIZE_MAX))


READ_ONLY = "read-only: the host file's attributes; setting them is not offered"

SYSCALLS = [
    Syscall(191, "getxattr", sys_getxattr, ("path", "path", "ptr", "uint"), PARTIAL, READ_ONLY),
    Syscall(192, "lgetxattr", sys_lgetxattr, ("path", "path", "ptr", "uint"), PARTIAL, READ_ONLY),
    Syscall(193, "fgetxattr", sys_fgetxattr, ("fd", "path", "ptr", "uint"), PARTIAL, READ_ONLY),
    Syscall(194, "listxattr", sys_listxattr, ("path", "ptr", "uint"), PARTIAL, READ_ONLY),
    Syscall(195, "llistxattr", sys_llistxattr, ("path", "ptr", "uint"), PARTIAL, READ_ONLY),
    Syscall(196, "flistxattr", sys_flistxattr, ("fd", "ptr", "uint"), PARTIAL, READ_ONLY),
]
