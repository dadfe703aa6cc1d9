"""Layer 6 — memfd_create: a file that is only memory.

``memfd_create(name, flags)`` gives an fd to an anonymous file, like a file
in a tmpfs that no directory names.  Programs use it for shared-memory
buffers, for code they generate (JITs), and to pass data between processes
with a guarantee that it will not change: *sealing* (``MFD_ALLOW_SEALING``
then ``fcntl(F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | …)``).

minikvm gives the guest a real host memfd (:class:`~minikvm.process.fdtable.MemFd`),
so every operation on the data — read, write, ``ftruncate``, ``lseek``,
``fstat``, the seals and their enforcement — is the host kernel's own
implementation, not an imitation.  What minikvm adds:

* **A budget.**  A memfd's data is host memory that the guest's memory
  limit does not cover, so the memfds a process holds may together be at
  most as large as its guest memory (``--memory``): a write, ``pwrite``,
  ``sendfile`` or ``ftruncate`` that would pass it fails with ENOSPC, as a
  full tmpfs answers.  A memfd counts by its size (holes included).
* **Names.**  The name is the guest's, at most 249 bytes (Linux's limit,
  ``NAME_MAX`` minus ``"memfd:"``); ``/proc/self/fd/N`` reads
  ``/memfd:NAME (deleted)`` as on Linux.
* **Flags.**  ``MFD_CLOEXEC``, ``MFD_ALLOW_SEALING``, ``MFD_NOEXEC_SEAL``
  (sealed against execution: ``F_SEAL_EXEC``) and ``MFD_EXEC`` are
  accepted; ``MFD_HUGETLB`` is EINVAL (there are no huge pages to give).

Limits, each a difference a program can see: ``mmap`` of a memfd is a
private *copy*, as for every file here (:mod:`minikvm.syscalls.memory`),
so ``MAP_SHARED`` of a memfd, which is open for writing, is refused with
EACCES — a program that shares a buffer with itself through two mappings
cannot run.  And a process that holds a memfd cannot be snapshot
(``serve``, forks, snapshot files): the snapshot and the run would share
its data, so a reset could not put it back.

Reference: memfd_create(2), mm/memfd.c, fcntl(2) "File Sealing".
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import F_ADD_SEALS, F_GET_SEALS, O_RDWR
from minikvm.process.fdtable import MemFd
from minikvm.syscalls.base import PARTIAL, Syscall

if TYPE_CHECKING:
    from minikvm.process.process import Process

# include/uapi/linux/memfd.h
MFD_CLOEXEC = 0x0001
MFD_ALLOW_SEALING = 0x0002
MFD_HUGETLB = 0x0004
MFD_NOEXEC_SEAL = 0x0008
MFD_EXEC = 0x0010
#: MFD_HUGE_* sizes live in bits 26-31 (MFD_HUGE_SHIFT), valid only with MFD_HUGETLB
MFD_HUGE_MASK = 0x3F << 26
MFD_FLAGS = MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL | MFD_EXEC
#: mm/memfd.c MFD_NAME_MAX_LEN: NAME_MAX minus the "memfd:" prefix
MFD_NAME_MAX_LEN = 255 - len("memfd:")
# include/uapi/linux/fcntl.h
F_SEAL_SEAL = 0x0001
F_SEAL_SHRINK = 0x0002
F_SEAL_GROW = 0x0004
F_SEAL_WRITE = 0x0008
F_SEAL_FUTURE_WRITE = 0x0010
F_SEAL_EXEC = 0x0020
F_SEALS = (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE
           | F_SEAL_EXEC)


def memfd_bytes(proc: Process, leaving_out: MemFd | None = None) -> int:
    """The size of every memfd the process holds (each counted once, however
    many fds name it), but *leaving_out*."""
    seen: dict[int, MemFd] = {}
    for entry in proc.fds.entries.values():
        file = entry.file
        if isinstance(file, MemFd) and file is not leaving_out and file.host_fd is not None:
            seen[id(file)] = file
    return sum(os.fstat(file.host_fd).st_size for file in seen.values())


def check_memfd_size(proc: Process, file: MemFd, new_size: int) -> None:
    """ENOSPC when growing *file* to *new_size* bytes would take the
    process's memfds past its guest memory size."""
    if new_size <= os.fstat(file.host_fd).st_size:
        return
    budget = proc.machine.memory.size
    others = memfd_bytes(proc, leaving_out=file)
    if others + new_size > budget:
        raise SyscallError(errno.ENOSPC, f"memfd {file.name!r} of {new_size} bytes: the "
                           f"process's memfds may hold {budget} bytes together (its guest "
                           f"memory size, --memory), {others} are taken")


def sys_memfd_create(proc: Process, name_address: int, flags: int) -> int:
    """memfd_create(2): a host memfd for the guest.

    EINVAL for unknown flags, ``MFD_HUGETLB``, ``MFD_EXEC`` with
    ``MFD_NOEXEC_SEAL``, or a name longer than 249 bytes (EFAULT for a name
    outside the guest's memory)."""
    flags &= 0xFFFF_FFFF
    try:
        raw = proc.mm.read_cstring(name_address, MFD_NAME_MAX_LEN + 1)
    except SyscallError as error:
        if error.errno != errno.ENAMETOOLONG:
            raise
        raw = b"?" * (MFD_NAME_MAX_LEN + 1)
    if len(raw) > MFD_NAME_MAX_LEN:
        raise SyscallError(errno.EINVAL, f"memfd name longer than {MFD_NAME_MAX_LEN} bytes")
    if flags & (MFD_HUGETLB | MFD_HUGE_MASK):
        raise SyscallError(errno.EINVAL, "MFD_HUGETLB: minikvm has no huge pages to give")
    if flags & ~MFD_FLAGS:
        raise SyscallError(errno.EINVAL, f"memfd_create flags {flags:#x}")
    if flags & MFD_EXEC and flags & MFD_NOEXEC_SEAL:
        raise SyscallError(errno.EINVAL, "MFD_EXEC and MFD_NOEXEC_SEAL contradict each other")
    name = raw.decode("utf-8", "surrogateescape")
    host_flags = os.MFD_CLOEXEC
    if flags & (MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL):
        host_flags |= os.MFD_ALLOW_SEALING
    host_fd = os.memfd_create(name, host_flags)
    try:
        if flags & MFD_NOEXEC_SEAL:
            # Linux sets the file mode to 0666 & ~0111 and seals exec; the
            # host may not know F_SEAL_EXEC (before 6.3), so ask it kindly
            os.fchmod(host_fd, 0o666)
            try:
                fcntl.fcntl(host_fd, F_ADD_SEALS, F_SEAL_EXEC)
            except OSError:
                pass
        return proc.fds.install(MemFd(host_fd, name, O_RDWR),
                                cloexec=bool(flags & MFD_CLOEXEC))
    except BaseException:
        os.close(host_fd)
        raise


def memfd_fcntl(file: MemFd, command: int, argument: int) -> int:
    """``F_ADD_SEALS`` and ``F_GET_SEALS`` on a memfd, by the host kernel
    (which refuses a seal on a memfd made without ``MFD_ALLOW_SEALING``
    with EPERM, and unknown seal bits with EINVAL)."""
    if command == F_ADD_SEALS:
        if argument & ~F_SEALS & 0xFFFF_FFFF:
            raise SyscallError(errno.EINVAL, f"unknown seals {argument:#x}")
        if not file.writable():
            raise SyscallError(errno.EPERM, "seals are added through an fd open for writing")
        fcntl.fcntl(file.host_fd, F_ADD_SEALS, argument & 0xFFFF_FFFF)
        return 0
    if command == F_GET_SEALS:
        return fcntl.fcntl(file.host_fd, F_GET_SEALS)
    raise SyscallError(errno.EINVAL, f"fcntl command {command} is not for a memfd")


SYSCALLS = [
    Syscall(319, "memfd_create", sys_memfd_create, ("path", "hex"), PARTIAL,
            "a host memfd, sealing included; its mmap is a private copy (MAP_SHARED "
            "refused); the memfds together hold at most --memory bytes"),
]
