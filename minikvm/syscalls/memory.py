"""Layer 6 — memory system calls: brk, mmap, munmap, mprotect, mremap, madvise …

They check the arguments the way Linux does (alignment, ranges, flag
combinations, with Linux's errno for each) and translate the request into
the memory manager's operations (:class:`~minikvm.machine.mm.AddressSpace`), which
owns the VMAs and page tables.

Two things differ from Linux, both because the guest's memory is a fixed
pool of pages rather than an overcommitted page cache:

* A file mapping is a private *copy* of the file, made at ``mmap``: later
  writes to the file are not seen, and writes to the mapping never reach
  the file.  So ``MAP_SHARED`` is refused for writable file mappings, and
  for read-only ones of a file open for writing: a program that maps the
  file it writes with ``pwrite`` expects to read its writes back through
  the mapping (SQLite with ``PRAGMA mmap_size`` does, and read stale pages
  from a copy); refused, it falls back to ``pread``.
* Pages are allocated when mapped, not when touched.  A program that maps
  more than the guest's memory (``--memory``) gets ``ENOMEM`` from ``mmap``
  — and malloc returns NULL — instead of being killed later by an OOM
  killer.  ``PROT_NONE`` reservations are free: they get pages only when
  ``mprotect`` opens them.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat as stat_module
from typing import TYPE_CHECKING

from minikvm.cpu.layout import MMAP_MIN_ADDR, USER_SPACE_END
from minikvm.errors import SyscallError
from minikvm.linux_abi import O_PATH
from minikvm.machine.mm import (POPULATE_LIMIT, PROT_MASK, PROT_NONE, PROT_READ, PROT_WRITE,
                                page_align_up)
from minikvm.process.fdtable import DeviceFile
from minikvm.syscalls.base import PARTIAL, Syscall, signed32, signed64
from minikvm.x86 import HUGE_PAGE_SIZE, PAGE_SIZE

if TYPE_CHECKING:
    from minikvm.process.process import Process

MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_32BIT = 0x40
MAP_GROWSDOWN = 0x100
MAP_DENYWRITE = 0x800
MAP_EXECUTABLE = 0x1000
MAP_LOCKED = 0x2000
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_NONBLOCK = 0x10000
MAP_STACK = 0x20000
MAP_HUGETLB = 0x40000
MAP_SYNC = 0x80000
MAP_FIXED_NOREPLACE = 0x100000
#: Flags MAP_SHARED_VALIDATE accepts (Linux's LEGACY_MAP_MASK plus the rest
#: it knows); anything else is EOPNOTSUPP there and ignored elsewhere.
MAP_KNOWN_FLAGS = (MAP_TYPE | MAP_FIXED | MAP_ANONYMOUS | MAP_32BIT | MAP_GROWSDOWN
                   | MAP_DENYWRITE | MAP_EXECUTABLE | MAP_LOCKED | MAP_NORESERVE | MAP_POPULATE
                   | MAP_NONBLOCK | MAP_STACK | MAP_HUGETLB | MAP_FIXED_NOREPLACE)
#: MAP_32BIT: the mapping must lie in the first 2 GiB (x86-64 only).
MAP_32BIT_TOP = 0x8000_0000
MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MREMAP_DONTUNMAP = 4
# madvise advice (asm-generic/mman-common.h)
MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED, MADV_DONTNEED = 0, 1, 2, 3, 4
MADV_FREE, MADV_REMOVE = 8, 9
MADV_POPULATE_WRITE = 23
#: Advice that makes private anonymous pages read as zero again.
MADV_ZEROING = (MADV_DONTNEED, MADV_FREE, MADV_REMOVE)
#: Every other advice Linux accepts for private memory: hints, nothing to do.
MADV_HINTS = frozenset({MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED,
                        *range(10, MADV_POPULATE_WRITE + 1)})
MS_ASYNC, MS_INVALIDATE, MS_SYNC = 1, 2, 4
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
MLOCK_ONFAULT = 1
# membarrier(2) commands
MEMBARRIER_CMD_QUERY = 0
MEMBARRIER_ONE_THREAD_COMMANDS = (1 | 2 | 4 | 8 | 16)  # GLOBAL … REGISTER_PRIVATE_EXPEDITED
FILE_READ_CHUNK = 1 << 20


def _check_range(address: int, length: int, error: int = errno.EINVAL) -> int:
    """The page-aligned size of ``[address, address + length)``; *error*
    (Linux's errno for the call) when it leaves the user address space."""
    size = page_align_up(length)
    if address + size > USER_SPACE_END or size < length:
        raise SyscallError(error, f"{address:#x}+{length:#x} leaves the user address space")
    return size


def sys_brk(proc: Process, address: int) -> int:
    """Move the break; brk(0) asks where it is.  Never fails: Linux returns
    the unchanged break when it cannot move it."""
    if address == 0 or address >= USER_SPACE_END:
        return proc.mm.brk_end
    return proc.mm.set_brk(address)


def sys_mmap(proc: Process, address: int, length: int, prot: int, flags: int, fd: int,
             offset: int) -> int:
    """Anonymous and private file mappings (the file is copied in: later
    writes to the file are not seen — a documented difference).

    This is how ``ld.so`` loads each shared library (``--trace`` of any
    dynamic program shows it): one ``mmap(NULL, span, PROT_READ,
    MAP_PRIVATE|MAP_DENYWRITE, fd, 0)`` reserves the library's whole span
    (and maps its headers); then one ``MAP_FIXED`` mapping per segment
    replaces a part of that reservation at the segment's page offset —
    text ``PROT_READ|PROT_EXEC``, data ``PROT_READ|PROT_WRITE`` — and an
    anonymous ``MAP_FIXED`` one holds the ``.bss`` beyond the file's pages;
    later ``mprotect(PROT_READ)`` seals the RELRO part.  ``MAP_DENYWRITE``
    and ``MAP_EXECUTABLE`` are accepted and ignored, as Linux has ignored
    them since 5.15; ``MAP_32BIT`` places the mapping in the first 2 GiB."""
    fd, flags, offset = signed32(fd), signed32(flags) & 0xFFFF_FFFF, signed64(offset)
    kind = flags & MAP_TYPE
    if kind not in (MAP_PRIVATE, MAP_SHARED, MAP_SHARED_VALIDATE):
        raise SyscallError(errno.EINVAL, f"map type {kind:#x} is neither MAP_PRIVATE nor MAP_SHARED")
    if kind == MAP_SHARED_VALIDATE and flags & ~MAP_KNOWN_FLAGS:
        raise SyscallError(errno.EOPNOTSUPP, f"unknown flags {flags & ~MAP_KNOWN_FLAGS:#x}")
    if length == 0 or prot & ~PROT_MASK or offset % PAGE_SIZE or offset < 0:
        raise SyscallError(errno.EINVAL, "zero length, unknown protection bits or bad offset")
    fixed = bool(flags & (MAP_FIXED | MAP_FIXED_NOREPLACE))
    if fixed and address % PAGE_SIZE:
        raise SyscallError(errno.EINVAL, f"fixed address {address:#x} is not page aligned")
    size = _check_range(address if fixed else 0, length, errno.ENOMEM)
    if fixed and address < MMAP_MIN_ADDR:
        raise SyscallError(errno.EPERM, f"{address:#x} is below vm.mmap_min_addr "
                                        f"({MMAP_MIN_ADDR:#x})")
    source = None if flags & MAP_ANONYMOUS else _mappable_file(proc, fd, kind, prot)

    if flags & MAP_FIXED_NOREPLACE:
        if not proc.mm.is_free(address, address + size):
            raise SyscallError(errno.EEXIST, f"{address:#x}+{size:#x} is already mapped")
        start = address
    elif flags & MAP_FIXED:
        start = address
    else:
        start = _choose_address(proc, address, size, bool(flags & MAP_32BIT))

    # One change: if the memory limit, the page-table pool or the file's
    # copy fails, what MAP_FIXED replaced is still there, untouched.
    with proc.mm.all_or_nothing():
        if flags & MAP_FIXED and not flags & MAP_FIXED_NOREPLACE:
            proc.mm.unmap(address, size)
        if source is None:
            proc.mm.map(start, size, prot)
        else:
            # A file's contents go into pages that must exist even for
            # PROT_NONE, so map readable, fill, then apply the protection.
            vma = proc.mm.map(start, size, prot or PROT_READ, source.path)
            _copy_file(proc, source.host_fd, offset, size, vma.physical(start))
            if prot == PROT_NONE:
                proc.mm.protect(start, size, PROT_NONE)
    if source is None and prot & PROT_WRITE:
        proc.mm.advise_huge(start, size)    # a large buffer: 2 MiB host pages
        if size <= POPULATE_LIMIT:
            proc.mm.populate(start, size)   # a buffer: its pages will be written
    return start


def _mappable_file(proc: Process, fd: int, kind: int, prot: int):
    """The open file behind *fd*, if it can be mapped: a readable regular
    file (``/dev/zero`` counts as anonymous memory and returns None)."""
    source = proc.fds.get(fd)
    if isinstance(source, DeviceFile) and source.name == "zero":
        return None
    if source.host_fd is not None and fcntl.fcntl(source.host_fd, fcntl.F_GETFL) & O_PATH:
        # an O_PATH fd names a file but cannot read it: Linux's mmap finds
        # no file behind it (and its copy could not be made)
        raise SyscallError(errno.EBADF, f"fd {fd} was opened with O_PATH")
    if source.host_fd is None or not stat_module.S_ISREG(os.fstat(source.host_fd).st_mode):
        raise SyscallError(errno.ENODEV, f"fd {fd} is not a regular file")
    if not source.readable():
        raise SyscallError(errno.EACCES, f"fd {fd} is not open for reading")
    if kind != MAP_PRIVATE and prot & PROT_WRITE:
        raise SyscallError(errno.EACCES, "shared writable file mappings are not supported "
                                         "(the mapping would be a copy)")
    if kind != MAP_PRIVATE and source.writable():
        raise SyscallError(errno.EACCES, "a shared mapping of a file open for writing is "
                                         "not supported (the copy would miss later writes)")
    return source


def _choose_address(proc: Process, hint: int, size: int, low: bool) -> int:
    """The hint when it is free and usable, else the top-down search (below
    2 GiB for MAP_32BIT)."""
    hint = page_align_up(hint)
    top = MAP_32BIT_TOP if low else None
    if (hint >= MMAP_MIN_ADDR and hint + size <= (top or USER_SPACE_END)
            and proc.mm.is_free(hint, hint + size)):
        return hint
    align = HUGE_PAGE_SIZE if size >= HUGE_PAGE_SIZE and not low else PAGE_SIZE
    if top is None:
        return proc.mm.find_free(size, align)
    return proc.mm.find_free(size, align, top=top)


def _copy_file(proc: Process, host_fd: int, offset: int, length: int, phys: int) -> None:
    """Read the file into the mapping's pages, whole pages as Linux maps
    them: the last page holds the file's next bytes even past the length
    asked for (ld.so maps a segment's last page and clears the tail beyond
    ``p_filesz`` itself), and beyond the end of the file the pages stay zero,
    as Linux shows the rest of the last page of a file."""
    done = 0
    while done < length:
        chunk = os.pread(host_fd, min(FILE_READ_CHUNK, length - done), offset + done)
        if not chunk:
            break
        proc.machine.memory.write(phys + done, chunk)
        done += len(chunk)


def sys_munmap(proc: Process, address: int, length: int) -> int:
    """munmap(2): unmap a range of the guest's address space.

    EINVAL for an unaligned address or a zero length, as Linux."""
    if address % PAGE_SIZE or length == 0:
        raise SyscallError(errno.EINVAL, f"unaligned address {address:#x} or zero length")
    proc.mm.unmap(address, _check_range(address, length))
    return 0


def sys_mprotect(proc: Process, address: int, length: int, prot: int) -> int:
    """mprotect(2): change the protection of mapped pages (ENOMEM where unmapped)."""
    if address % PAGE_SIZE or prot & ~PROT_MASK:
        raise SyscallError(errno.EINVAL, f"unaligned address {address:#x} or protection {prot:#x}")
    if length:
        proc.mm.protect(address, _check_range(address, length, errno.ENOMEM), prot)
    return 0


def sys_mremap(proc: Process, old: int, old_size: int, new_size: int, flags: int,
               new_address: int) -> int:
    """mremap(2): grow, shrink or move a mapping.

    ``MREMAP_DONTUNMAP`` and an old size of 0 are EINVAL."""
    flags = signed32(flags) & 0xFFFF_FFFF
    if flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP):
        raise SyscallError(errno.EINVAL, f"unknown flags {flags:#x}")
    if flags & MREMAP_DONTUNMAP:
        raise SyscallError(errno.EINVAL, "MREMAP_DONTUNMAP is not supported")
    if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
        raise SyscallError(errno.EINVAL, "MREMAP_FIXED needs MREMAP_MAYMOVE")
    if old % PAGE_SIZE or new_size == 0:
        raise SyscallError(errno.EINVAL, f"unaligned address {old:#x} or zero new size")
    if old_size == 0:
        raise SyscallError(errno.EINVAL, "old size 0 (duplicating a shared mapping) "
                                         "is not supported")
    old_size = _check_range(old, old_size, errno.EFAULT)
    fixed = None
    if flags & MREMAP_FIXED:
        if new_address % PAGE_SIZE or new_address < MMAP_MIN_ADDR:
            raise SyscallError(errno.EINVAL, f"new address {new_address:#x}")
        fixed = new_address
    new_size = _check_range(fixed or 0, new_size, errno.EINVAL)
    return proc.mm.remap(old, old_size, new_size, bool(flags & MREMAP_MAYMOVE), fixed)


def sys_madvise(proc: Process, address: int, length: int, advice: int) -> int:
    """MADV_DONTNEED and its kin zero the pages (and return their host
    memory), as Linux does for private anonymous memory; every other
    advice is a hint and is accepted."""
    advice = signed32(advice)
    if advice not in MADV_HINTS and advice not in MADV_ZEROING:
        raise SyscallError(errno.EINVAL, f"advice {advice}")
    if address % PAGE_SIZE:
        raise SyscallError(errno.EINVAL, f"unaligned address {address:#x}")
    if length == 0:
        return 0
    size = _check_range(address, length, errno.ENOMEM)
    if advice in MADV_ZEROING:
        proc.mm.discard(address, size)
    else:
        proc.mm.check_mapped(address, size)
    return 0


def sys_msync(proc: Process, address: int, length: int, flags: int) -> int:
    """Nothing to write back: file mappings are private copies."""
    flags = signed32(flags)
    if address % PAGE_SIZE or flags & ~(MS_ASYNC | MS_INVALIDATE | MS_SYNC) or (
            flags & MS_ASYNC and flags & MS_SYNC):
        raise SyscallError(errno.EINVAL, f"unaligned address {address:#x} or flags {flags:#x}")
    if length:
        proc.mm.check_mapped(address, _check_range(address, length, errno.ENOMEM))
    return 0


def sys_mincore(proc: Process, address: int, length: int, vector: int) -> int:
    """Every page that has memory is resident (nothing is ever swapped).
    Filled one VMA at a time: a reservation of terabytes is a few VMAs, and
    the vector must fit in guest memory before anything is written."""
    if address % PAGE_SIZE:
        raise SyscallError(errno.EINVAL, f"unaligned address {address:#x}")
    size = _check_range(address, length, errno.ENOMEM)
    proc.mm.check_mapped(address, size)
    proc.mm.views(vector, size // PAGE_SIZE, write=True)  # EFAULT before any work
    end = address + size
    for vma in proc.mm.find_all(address, end):
        low, high = max(vma.start, address), min(vma.end, end)
        resident = b"\1" if vma.phys is not None else b"\0"
        offset, count = (low - address) // PAGE_SIZE, (high - low) // PAGE_SIZE
        while count:
            piece = min(count, FILE_READ_CHUNK)
            proc.mm.write(vector + offset, resident * piece)
            offset, count = offset + piece, count - piece
    return 0


def sys_mlock(proc: Process, address: int, length: int) -> int:
    """Every guest page is always resident: locking only checks the range."""
    start = address & ~(PAGE_SIZE - 1)
    size = _check_range(start, length + address - start, errno.ENOMEM)
    if size:
        proc.mm.check_mapped(start, size)
    return 0


def sys_mlock2(proc: Process, address: int, length: int, flags: int) -> int:
    """mlock2(2): guest pages are always resident: the range is checked, then
    the call succeeds."""
    if signed32(flags) & ~MLOCK_ONFAULT:
        raise SyscallError(errno.EINVAL, f"flags {flags:#x}")
    return sys_mlock(proc, address, length)


def sys_mlockall(proc: Process, flags: int) -> int:
    """mlockall(2): guest pages are always resident: the flags are checked, then
    the call succeeds."""
    flags = signed32(flags)
    if not flags or flags & ~(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) or flags == MCL_ONFAULT:
        raise SyscallError(errno.EINVAL, f"flags {flags:#x}")
    return 0


def sys_munlockall(proc: Process) -> int:
    """munlockall(2): nothing to undo (guest pages are always resident)."""
    return 0


def sys_membarrier(proc: Process, command: int, flags: int, cpu: int) -> int:
    """With one vCPU every memory barrier is already in place — threads
    take turns on it, and each switch passes through the host — so every
    command but the query is a no-op; the query lists them."""
    command = signed32(command)
    if signed32(flags):
        raise SyscallError(errno.EINVAL, f"flags {flags:#x}")
    if command == MEMBARRIER_CMD_QUERY:
        return MEMBARRIER_ONE_THREAD_COMMANDS
    if command & MEMBARRIER_ONE_THREAD_COMMANDS and not command & (command - 1):
        return 0
    raise SyscallError(errno.EINVAL, f"membarrier command {command}")


ALWAYS_RESIDENT = "guest pages are always resident: checks the range, then succeeds"

SYSCALLS = [
    Syscall(12, "brk", sys_brk, ("ptr",)),
    Syscall(9, "mmap", sys_mmap, ("ptr", "uint", "prot", "mapflags", "fd", "hex"), PARTIAL,
            "file mappings are private copies; MAP_SHARED of a file is refused for writing "
            "and of a file open for writing; "
            "pages are allocated at mmap (ENOMEM at the memory limit)"),
    Syscall(11, "munmap", sys_munmap, ("ptr", "uint")),
    Syscall(10, "mprotect", sys_mprotect, ("ptr", "uint", "prot")),
    Syscall(25, "mremap", sys_mremap, ("ptr", "uint", "uint", "hex", "ptr"), PARTIAL,
            "no MREMAP_DONTUNMAP, no old size 0"),
    Syscall(28, "madvise", sys_madvise, ("ptr", "uint", "int"), PARTIAL,
            "MADV_DONTNEED/FREE/REMOVE zero the pages; other advice is accepted as a hint"),
    Syscall(26, "msync", sys_msync, ("ptr", "uint", "hex"), PARTIAL,
            "nothing to write back: file mappings are copies"),
    Syscall(27, "mincore", sys_mincore, ("ptr", "uint", "ptr")),
    Syscall(149, "mlock", sys_mlock, ("ptr", "uint"), PARTIAL, ALWAYS_RESIDENT),
    Syscall(150, "munlock", sys_mlock, ("ptr", "uint"), PARTIAL, ALWAYS_RESIDENT),
    Syscall(325, "mlock2", sys_mlock2, ("ptr", "uint", "hex"), PARTIAL, ALWAYS_RESIDENT),
    Syscall(151, "mlockall", sys_mlockall, ("hex",), PARTIAL, ALWAYS_RESIDENT),
    Syscall(152, "munlockall", sys_munlockall, (), PARTIAL, ALWAYS_RESIDENT),
    Syscall(324, "membarrier", sys_membarrier, ("int", "hex", "int"), PARTIAL,
            "one vCPU: every command is already satisfied"),
]
