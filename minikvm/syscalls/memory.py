"""Layer 8 — memory system calls: brk, mmap, munmap, mprotect, mremap, madvise.

They translate Linux's flags into the memory manager's operations
(:class:`~minikvm.mm.AddressSpace`), which owns the VMAs and page tables.
"""

from __future__ import annotations

import errno

from minikvm.errors import SyscallError
from minikvm.layout import HUGE_PAGE_SIZE, PAGE_SIZE
from minikvm.mm import PROT_MASK, PROT_NONE, PROT_READ, PROT_WRITE, page_align_up
from minikvm.syscalls.base import PARTIAL, SUPPORTED, Syscall, signed32

MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_FIXED_NOREPLACE = 0x100000
MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MADV_DONTNEED = 4
MADV_FREE = 8
FILE_READ_CHUNK = 1 << 20


def sys_brk(proc, address: int) -> int:
    """Move the break; brk(0) asks where it is.  Never fails: Linux returns
    the unchanged break when it cannot move it."""
    if address == 0:
        return proc.mm.brk_end
    return proc.mm.set_brk(address)


def sys_mmap(proc, address: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
    """Anonymous and private file mappings (the file is copied in: later
    writes to the file are not seen — a documented difference)."""
    fd = signed32(fd)
    if length == 0 or prot & ~PROT_MASK:
        raise SyscallError(errno.EINVAL, "bad length or protection")
    if offset % PAGE_SIZE or address % PAGE_SIZE and flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
        raise SyscallError(errno.EINVAL, "unaligned offset or fixed address")
    kind = flags & MAP_TYPE
    if kind not in (MAP_PRIVATE, MAP_SHARED, MAP_SHARED_VALIDATE):
        raise SyscallError(errno.EINVAL, "neither MAP_PRIVATE nor MAP_SHARED")
    size = page_align_up(length)
    if size > proc.mm.user_pool.end:
        raise SyscallError(errno.ENOMEM, "larger than guest memory")
    anonymous = bool(flags & MAP_ANONYMOUS)
    source = None
    if not anonymous:
        source = proc.fds.get(fd)
        if source.host_fd is None or not source.readable():
            raise SyscallError(errno.EACCES if source.host_fd is not None else errno.ENODEV,
                               "cannot map this file")
        if kind != MAP_PRIVATE and prot & PROT_WRITE:
            raise SyscallError(errno.EACCES, "shared writable file mappings are not supported")
    if flags & MAP_FIXED_NOREPLACE:
        if not proc.mm.is_free(address, address + size):
            raise SyscallError(errno.EEXIST, "range in use")
        start = address
    elif flags & MAP_FIXED:
        proc.mm.unmap(address, size)
        start = address
    else:
        start = _choose_address(proc, address, size)
    vma = proc.mm.map(start, size, prot, source.path if source else "")
    if source is not None:
        _copy_file(proc, source.host_fd, offset, length, vma, start)
    return start


def _choose_address(proc, hint: int, size: int) -> int:
    """The hint when it is free and usable, else the top-down search."""
    hint = hint & ~(PAGE_SIZE - 1)
    if hint and hint >= 0x10000 and proc.mm.is_free(hint, hint + size):
        return hint
    align = HUGE_PAGE_SIZE if size >= HUGE_PAGE_SIZE else PAGE_SIZE
    return proc.mm.find_free(size, align)


def _copy_file(proc, host_fd: int, offset: int, length: int, vma, start: int) -> None:
    import os
    done = 0
    while done < length:
        chunk = os.pread(host_fd, min(FILE_READ_CHUNK, length - done), offset + done)
        if not chunk:
            break
        proc.machine.memory.write(vma.physical(start + done), chunk)
        done += len(chunk)


def sys_munmap(proc, address: int, length: int) -> int:
    if address % PAGE_SIZE or length == 0:
        raise SyscallError(errno.EINVAL, "unaligned address or zero length")
    proc.mm.unmap(address, page_align_up(length))
    return 0


def sys_mprotect(proc, address: int, length: int, prot: int) -> int:
    if address % PAGE_SIZE or prot & ~PROT_MASK:
        raise SyscallError(errno.EINVAL, "unaligned address or bad protection")
    if length:
        proc.mm.protect(address, page_align_up(length), prot)
    return 0


def sys_mremap(proc, old: int, old_size: int, new_size: int, flags: int, new_address: int) -> int:
    if old % PAGE_SIZE or new_size == 0 or flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED):
        raise SyscallError(errno.EINVAL, "bad arguments")
    fixed = new_address if flags & MREMAP_FIXED else None
    return proc.mm.remap(old, page_align_up(old_size), page_align_up(new_size),
                         bool(flags & MREMAP_MAYMOVE), fixed)


def sys_madvise(proc, address: int, length: int, advice: int) -> int:
    """MADV_DONTNEED/MADV_FREE zero the pages of private anonymous memory,
    as Linux does; every other advice is a hint and is accepted."""
    if address % PAGE_SIZE:
        raise SyscallError(errno.EINVAL, "unaligned address")
    if advice in (MADV_DONTNEED, MADV_FREE):
        for chunk in proc.mm.views(address, page_align_up(length)):
            chunk[:] = bytes(len(chunk))
    return 0


SYSCALLS = [
    Syscall(12, "brk", sys_brk, ("ptr",)),
    Syscall(9, "mmap", sys_mmap, ("ptr", "uint", "prot", "mapflags", "fd", "hex"), PARTIAL,
            "file mappings are private copies; MAP_SHARED of a file is refused for writing"),
    Syscall(11, "munmap", sys_munmap, ("ptr", "uint")),
    Syscall(10, "mprotect", sys_mprotect, ("ptr", "uint", "prot")),
    Syscall(25, "mremap", sys_mremap, ("ptr", "uint", "uint", "int", "ptr")),
    Syscall(28, "madvise", sys_madvise, ("ptr", "uint", "int"), PARTIAL,
            "only MADV_DONTNEED/MADV_FREE act (they zero); others are accepted hints"),
]
