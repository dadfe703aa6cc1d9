"""Layer 7 — symbol tables of the shared libraries a dynamic program mapped.

A dynamic program spends its time in libc.so.6, libm, ld.so, libpython…,
whose addresses its own ``.symtab`` does not cover.  The process's record
of mappings (:class:`~minikvm.machine.mm.Vma`, named after the file that
``mmap`` copied, or the interpreter minikvm loaded itself) says which file
is where; each file's table (``.symtab``, else ``.dynsym``: Debian strips
its libraries down to that) is read once, at the end of the run, through
the sandbox's view (the libraries are in the read-only system view, so
this works after Landlock's walls went up) and moved by the load bias.

The bias: ld.so maps a library's first ``PT_LOAD`` segment (the lowest
``p_vaddr``) at file offset 0, the start of the library's span, so the
lowest mapping named after a file is ``bias + page_down(lowest p_vaddr)``.
A file that cannot be opened or parsed gives no table: its frames stay
``[unknown]``, never a traceback.
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.machine.mm import page_align_down
from minikvm.process.symbols import PARSE_ERRORS, SymbolTable, read_symbols

if TYPE_CHECKING:
    from minikvm.process.process import Process

#: The largest file read for its symbols: libpython is ~6 MiB; a larger file
#: is left unnamed rather than read whole into the host's memory.
MAX_LIBRARY_SIZE = 256 << 20

# Elf64_Ehdr: e_phoff (u64) at 32, e_phentsize and e_phnum (u16) at 54 (gABI ch. 4).
_EHDR_PHOFF = struct.Struct("<Q")
_EHDR_PHENT_PHNUM = struct.Struct("<HH")
# Elf64_Phdr: p_type, p_flags (u32), p_offset, p_vaddr (u64) ... (gABI ch. 5).
_PHDR_TYPE_VADDR = struct.Struct("<IIQQ")
PT_LOAD = 1


def lowest_load_vaddr(data: bytes) -> int | None:
    """The lowest ``p_vaddr`` of the file's ``PT_LOAD`` segments, or None."""
    try:
        if data[:4] != b"\x7fELF":
            return None
        (phoff,) = _EHDR_PHOFF.unpack_from(data, 32)
        phent, phnum = _EHDR_PHENT_PHNUM.unpack_from(data, 54)
        vaddrs = [vaddr for index in range(min(phnum, 256))
                  for p_type, _flags, _offset, vaddr in
                  [_PHDR_TYPE_VADDR.unpack_from(data, phoff + index * phent)]
                  if p_type == PT_LOAD]
    except (struct.error, OverflowError):   # a header pointing outside the file
        return None
    return min(vaddrs, default=None)


def _read_file(proc: Process, path: str) -> bytes | None:
    """The file at guest *path*, read through the sandbox's view, or None."""
    try:
        fd = proc.policy.open(path, os.O_RDONLY, 0, "/", syscall="openat")
    except (OSError, SyscallError):
        return None
    try:
        if os.fstat(fd).st_size > MAX_LIBRARY_SIZE:
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def library_tables(proc: Process) -> list[SymbolTable]:
    """A table per file mapped into *proc* other than the program itself,
    its addresses where the file is mapped now."""
    lowest: dict[str, int] = {}
    for vma in proc.mm.vmas:
        if vma.name.startswith("/") and vma.name != proc.image.name:
            lowest[vma.name] = min(vma.start, lowest.get(vma.name, vma.start))
    tables = []
    for path, start in lowest.items():
        data = _read_file(proc, path)
        first = None if data is None else lowest_load_vaddr(data)
        if data is None or first is None:
            continue
        try:
            table = read_symbols(data, path, dynamic=True)
            tables.append(table.shifted(start - page_align_down(first)))
        except PARSE_ERRORS:
            continue
    return tables
