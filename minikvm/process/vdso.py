"""Layer 5 — the vDSO: a small shared object the host maps into every process.

Linux maps a tiny ELF shared object, the vDSO, into every process and
names it in the auxiliary vector (``AT_SYSINFO_EHDR``); the C library looks
``__vdso_clock_gettime`` and its siblings up in it and calls them instead
of making system calls.  minikvm does the same, for the same reason more
sharply: a system call costs a VM exit (~40 µs on PVM), reading the clock
from the vDSO costs ~30 ns.  The functions' code and the data page they
read are in :mod:`minikvm.process.vdso_code`; the host's side of the clock
is :mod:`minikvm.machine.guest_clock`.

This module owns the ELF image (:func:`build_image`, pure code over bytes,
tested with pyelftools and by glibc and musl themselves finding their
symbols), mapping it, and writing the data page (:func:`map_vdso`,
:func:`write_data_page`).

The image, one page, loaded at any page-aligned address (all offsets are
virtual addresses from its start, as in Linux's vDSO)::

    0x000  ELF header          ET_DYN, x86-64
    0x040  program headers     PT_LOAD (all of it, R+X), PT_DYNAMIC
           .hash               SysV hash (musl looks symbols up with it)
           .gnu.hash           GNU hash (glibc prefers it)
           .dynsym             the ten symbols, sorted by GNU-hash bucket
           .dynstr
           .gnu.version        every symbol at version 2, LINUX_2.6
           .gnu.version_d      version 1: linux-vdso.so.1 (the base); 2: LINUX_2.6
           .dynamic            SONAME, HASH, GNU_HASH, STRTAB, SYMTAB, …, VERDEF
    0x600  .text               the code (CODE_OFFSET)
           .shstrtab, section headers (for readelf, objdump and gdb)

Exported, as Linux's x86-64 vDSO: ``__vdso_clock_gettime``,
``__vdso_gettimeofday``, ``__vdso_time``, ``__vdso_getcpu``,
``__vdso_clock_getres`` (global) and each without the prefix (weak), all
at version ``LINUX_2.6`` — the version glibc (``dl_vdso_vsym``) and musl
(``__vdsosym``) ask for.

Memory: ``[vvar]`` (the data page, read-only) at
:data:`~minikvm.cpu.layout.VVAR_ADDRESS` and ``[vdso]`` right above it, as
``/proc/self/maps`` names them on Linux.  The guest may unmap them (then the
host stops writing the page; it writes only into the area still named
``[vvar]`` at its address, never into memory the guest reused).
"""

from __future__ import annotations

import functools
import struct
from typing import TYPE_CHECKING

from minikvm.cpu.layout import PAGE_SIZE, VDSO_ADDRESS, VVAR_ADDRESS
from minikvm.machine.guest_clock import MODE_SYSCALL, MODE_TSC, GuestClock
from minikvm.machine.mm import PROT_EXEC, PROT_READ
from minikvm.process import vdso_code
from minikvm.process.vdso_code import (CODE_OFFSET, DATA_FORMAT, FUNCTIONS, MODE_SYSCALL as
                                       DATA_MODE_SYSCALL, MODE_TSC as DATA_MODE_TSC)

if TYPE_CHECKING:
    from minikvm.process.process import Process

#: The names ``/proc/self/maps`` gives the two areas.
VDSO_NAME = "[vdso]"
VVAR_NAME = "[vvar]"
#: The vDSO's ``DT_SONAME``, and its one version (Linux's, arch/x86/entry/vdso/vdso.lds.S).
SONAME = b"linux-vdso.so.1"
VERSION = b"LINUX_2.6"
#: The process's choices for its vDSO (``minikvm run --vdso``): the clock from
#: the TSC when the host offers one, always the system call, or no vDSO at all.
VDSO_AUTO, VDSO_SYSCALL, VDSO_OFF = "auto", "syscall", "off"
VDSO_MODES = (VDSO_AUTO, VDSO_SYSCALL, VDSO_OFF)

# <elf.h>
ET_DYN, EM_X86_64, EV_CURRENT = 3, 62, 1
PT_LOAD, PT_DYNAMIC = 1, 2
PF_X, PF_W, PF_R = 1, 2, 4
SHT_PROGBITS, SHT_STRTAB, SHT_HASH, SHT_DYNAMIC, SHT_DYNSYM = 1, 3, 5, 6, 11
SHT_GNU_HASH, SHT_GNU_VERDEF, SHT_GNU_VERSYM = 0x6FFF_FFF6, 0x6FFF_FFFD, 0x6FFF_FFFF
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
STB_GLOBAL, STB_WEAK, STT_FUNC = 1, 2, 2
DT_NULL, DT_HASH, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT, DT_SONAME = 0, 4, 5, 6, 10, 11, 14
DT_GNU_HASH, DT_VERSYM, DT_VERDEF, DT_VERDEFNUM = 0x6FFF_FEF5, 0x6FFF_FFF0, 0x6FFF_FFFC, 0x6FFF_FFFD
VER_FLG_BASE = 1
EHDR_SIZE, PHDR_SIZE, SHDR_SIZE, SYM_SIZE, DYN_SIZE = 64, 56, 64, 24, 16
VERDEF_SIZE, VERDAUX_SIZE = 20, 8
#: The buckets of both hash tables: a handful, for ten symbols.
HASH_BUCKETS = 3
#: The GNU hash's Bloom filter: one 64-bit word, the second bit from hash >> 6.
BLOOM_WORDS, BLOOM_SHIFT = 1, 6
#: The version index every exported symbol has (1 is the base, the file itself).
VERSION_INDEX = 2


def elf_hash(name: bytes) -> int:
    """The SysV ELF hash (``DT_HASH``, and a ``Verdef``'s ``vd_hash``)."""
    h = 0
    for byte in name:
        h = ((h << 4) + byte) & 0xFFFF_FFFF
        high = h & 0xF000_0000
        if high:
            h ^= high >> 24
        h &= ~high & 0xFFFF_FFFF
    return h


def gnu_hash(name: bytes) -> int:
    """The GNU hash (``DT_GNU_HASH``): Bernstein's h*33 + c, from 5381."""
    h = 5381
    for byte in name:
        h = (h * 33 + byte) & 0xFFFF_FFFF
    return h


def exported_symbols() -> list[tuple[bytes, int, int]]:
    """(name, binding, function) for every exported symbol, before sorting."""
    symbols = []
    for function in FUNCTIONS:
        symbols.append((b"__vdso_" + function.encode(), STB_GLOBAL, function))
        symbols.append((function.encode(), STB_WEAK, function))
    return symbols  # type: ignore[return-value]


class _Strings:
    """A string table being built: offset of each string, NUL-terminated."""

    def __init__(self) -> None:
        self.data = bytearray(b"\0")
        self.offsets: dict[bytes, int] = {}

    def add(self, string: bytes) -> int:
        if string not in self.offsets:
            self.offsets[string] = len(self.data)
            self.data += string + b"\0"
        return self.offsets[string]


def _align(value: int, alignment: int = 8) -> int:
    return -(-value // alignment) * alignment


@functools.cache
def build_image() -> bytes:
    """The vDSO's ELF image: one page (see the module docstring)."""
    code = vdso_code.code()
    places = vdso_code.layout()
    # .dynsym: the null symbol, then the exports sorted by GNU-hash bucket
    # (the GNU hash table requires it; SysV's does not care).
    exports = sorted(exported_symbols(), key=lambda s: gnu_hash(s[0]) % HASH_BUCKETS)
    dynstr = _Strings()
    soname = dynstr.add(SONAME)
    version_name = dynstr.add(VERSION)
    names = [dynstr.add(name) for name, _, _ in exports]
    symbol_count = 1 + len(exports)

    offset = EHDR_SIZE + 2 * PHDR_SIZE
    sections: dict[str, tuple[int, int]] = {}   # name -> (offset, size)

    def place(name: str, size: int, alignment: int = 8) -> int:
        nonlocal offset
        offset = _align(offset, alignment)
        sections[name] = (offset, size)
        offset += size
        return sections[name][0]

    hash_table = _sysv_hash([name for name, _, _ in exports])
    gnu_table = _gnu_hash([name for name, _, _ in exports])
    place(".hash", len(hash_table))
    place(".gnu.hash", len(gnu_table))
    place(".dynsym", symbol_count * SYM_SIZE)
    place(".dynstr", len(dynstr.data), 1)
    place(".gnu.version", symbol_count * 2, 2)
    place(".gnu.version_d", 2 * (VERDEF_SIZE + VERDAUX_SIZE), 4)
    dynamic_entries = 11
    place(".dynamic", dynamic_entries * DYN_SIZE)
    if offset > CODE_OFFSET:
        raise AssertionError(f"the vDSO's tables end at {offset:#x}, past its code at "
                             f"{CODE_OFFSET:#x}: move CODE_OFFSET (and the code's lea) up")
    offset = CODE_OFFSET
    place(".text", len(code), 1)
    section_order = [".hash", ".gnu.hash", ".dynsym", ".dynstr", ".gnu.version",
                     ".gnu.version_d", ".dynamic", ".text"]
    index = {name: i + 1 for i, name in enumerate(section_order)}
    shstrtab = _Strings()
    section_names = {name: shstrtab.add(name.encode()) for name in section_order + [".shstrtab"]}
    place(".shstrtab", len(shstrtab.data), 1)
    section_headers_at = _align(offset, 8)
    section_count = 1 + len(section_order) + 1
    end = section_headers_at + section_count * SHDR_SIZE
    if end > PAGE_SIZE:
        raise AssertionError(f"the vDSO image is {end} bytes: more than the one page it is given")

    image = bytearray(end)

    def put(name: str, data: bytes) -> None:
        start, size = sections[name]
        assert len(data) == size, name
        image[start:start + size] = data

    # ELF header (e_entry 0: the vDSO is no program).
    image[0:EHDR_SIZE] = struct.pack(
        "<4sBBBBB7xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, ET_DYN, EM_X86_64, EV_CURRENT,
        0, EHDR_SIZE, section_headers_at, 0, EHDR_SIZE, PHDR_SIZE, 2, SHDR_SIZE,
        section_count, section_count - 1)   # .shstrtab is the last section
    dynamic_at, dynamic_size = sections[".dynamic"]
    image[EHDR_SIZE:EHDR_SIZE + 2 * PHDR_SIZE] = (
        struct.pack("<IIQQQQQQ", PT_LOAD, PF_R | PF_X, 0, 0, 0, end, end, PAGE_SIZE)
        + struct.pack("<IIQQQQQQ", PT_DYNAMIC, PF_R, dynamic_at, dynamic_at, dynamic_at,
                      dynamic_size, dynamic_size, 8))
    put(".hash", hash_table)
    put(".gnu.hash", gnu_table)
    symbols = bytearray(SYM_SIZE)                      # the null symbol
    for (name, binding, function), name_offset in zip(exports, names):
        function_offset, size = places[function]
        symbols += struct.pack("<IBBHQQ", name_offset, binding << 4 | STT_FUNC, 0, index[".text"],
                               CODE_OFFSET + function_offset, size)
    put(".dynsym", bytes(symbols))
    put(".dynstr", bytes(dynstr.data))
    put(".gnu.version", struct.pack(f"<{symbol_count}H", 0, *[VERSION_INDEX] * len(exports)))
    verdef = b""
    for number, (flags, name, string) in enumerate(
            [(VER_FLG_BASE, SONAME, soname), (0, VERSION, version_name)], start=1):
        next_offset = VERDEF_SIZE + VERDAUX_SIZE if number == 1 else 0
        verdef += struct.pack("<HHHHIII", 1, flags, number, 1, elf_hash(name), VERDEF_SIZE,
                              next_offset)
        verdef += struct.pack("<II", string, 0)
    put(".gnu.version_d", verdef)
    dynamic = [(DT_SONAME, soname), (DT_HASH, sections[".hash"][0]),
               (DT_GNU_HASH, sections[".gnu.hash"][0]), (DT_STRTAB, sections[".dynstr"][0]),
               (DT_SYMTAB, sections[".dynsym"][0]), (DT_STRSZ, len(dynstr.data)),
               (DT_SYMENT, SYM_SIZE), (DT_VERSYM, sections[".gnu.version"][0]),
               (DT_VERDEF, sections[".gnu.version_d"][0]), (DT_VERDEFNUM, 2), (DT_NULL, 0)]
    assert len(dynamic) == dynamic_entries
    put(".dynamic", b"".join(struct.pack("<qQ", tag, value) for tag, value in dynamic))
    put(".text", code)
    put(".shstrtab", bytes(shstrtab.data))

    dynsym_index, dynstr_index = index[".dynsym"], index[".dynstr"]
    headers = bytearray(SHDR_SIZE)                     # the null section
    described = {
        ".hash": (SHT_HASH, SHF_ALLOC, dynsym_index, 0, 8, 4),
        ".gnu.hash": (SHT_GNU_HASH, SHF_ALLOC, dynsym_index, 0, 8, 0),
        ".dynsym": (SHT_DYNSYM, SHF_ALLOC, dynstr_index, 1, 8, SYM_SIZE),
        ".dynstr": (SHT_STRTAB, SHF_ALLOC, 0, 0, 1, 0),
        ".gnu.version": (SHT_GNU_VERSYM, SHF_ALLOC, dynsym_index, 0, 2, 2),
        ".gnu.version_d": (SHT_GNU_VERDEF, SHF_ALLOC, dynstr_index, 2, 4, 0),
        ".dynamic": (SHT_DYNAMIC, SHF_ALLOC | SHF_WRITE, dynstr_index, 0, 8, DYN_SIZE),
        ".text": (SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, 0, 0, 16, 0),
        ".shstrtab": (SHT_STRTAB, 0, 0, 0, 1, 0),
    }
    for name in section_order + [".shstrtab"]:
        kind, flags, link, info, alignment, entry_size = described[name]
        start, size = sections[name]
        address = start if flags & SHF_ALLOC else 0
        headers += struct.pack("<IIQQQQIIQQ", section_names[name], kind, flags, address, start,
                               size, link, info, alignment, entry_size)
    image[section_headers_at:end] = headers
    return bytes(image)


def _sysv_hash(names: list[bytes]) -> bytes:
    """``DT_HASH``: nbucket, nchain, buckets, chains; symbol i is names[i-1]."""
    buckets = [0] * HASH_BUCKETS
    chains = [0] * (len(names) + 1)
    for symbol, name in enumerate(names, start=1):
        bucket = elf_hash(name) % HASH_BUCKETS
        chains[symbol] = buckets[bucket]    # push onto the bucket's chain
        buckets[bucket] = symbol
    return struct.pack(f"<II{HASH_BUCKETS}I{len(chains)}I", HASH_BUCKETS, len(chains),
                       *buckets, *chains)


def _gnu_hash(names: list[bytes]) -> bytes:
    """``DT_GNU_HASH`` over symbols 1..n (*names*, already sorted by bucket):
    nbuckets, symoffset, bloom size, bloom shift, the Bloom filter, the
    buckets (first symbol of each) and the chain (hash with bit 0 marking
    the last symbol of a bucket)."""
    hashes = [gnu_hash(name) for name in names]
    bloom = 0
    for h in hashes:
        bloom |= 1 << (h % 64) | 1 << ((h >> BLOOM_SHIFT) % 64)
    buckets = [0] * HASH_BUCKETS
    chain = []
    for position, h in enumerate(hashes):
        bucket = h % HASH_BUCKETS
        if buckets[bucket] == 0:
            buckets[bucket] = position + 1
        last = position + 1 == len(hashes) or hashes[position + 1] % HASH_BUCKETS != bucket
        chain.append(h & ~1 | int(last))
    assert [h % HASH_BUCKETS for h in hashes] == sorted(h % HASH_BUCKETS for h in hashes)
    return struct.pack(f"<IIIIQ{HASH_BUCKETS}I{len(chain)}I", HASH_BUCKETS, 1, BLOOM_WORDS,
                       BLOOM_SHIFT, bloom, *buckets, *chain)


def symbol_addresses(base: int = VDSO_ADDRESS) -> dict[str, int]:
    """Where each exported function is once the image is at *base*."""
    places = vdso_code.layout()
    return {name.decode(): base + CODE_OFFSET + places[function][0]
            for name, _, function in exported_symbols()}


# -- in a process -----------------------------------------------------------------
def map_vdso(proc: Process) -> int | None:
    """Map ``[vvar]`` and ``[vdso]`` into *proc* and write the data page; the
    address for ``AT_SYSINFO_EHDR``, or None when the process has no vDSO
    (``proc.vdso == "off"``)."""
    if proc.vdso == VDSO_OFF:
        return None
    proc.mm.map(VVAR_ADDRESS, PAGE_SIZE, PROT_READ, VVAR_NAME)
    proc.mm.map(VDSO_ADDRESS, PAGE_SIZE, PROT_READ | PROT_EXEC, VDSO_NAME)
    proc.poke(VDSO_ADDRESS, build_image())
    write_data_page(proc)
    return VDSO_ADDRESS


def guest_clock(proc: Process) -> GuestClock:
    """The machine's clock line, made (and measured) the first time."""
    machine = proc.machine
    if machine.guest_clock is None:
        machine.guest_clock = GuestClock(machine.vcpu, machine.kvm.get_supported_cpuid(),
                                         force_syscall=proc.vdso == VDSO_SYSCALL)
    return machine.guest_clock


def data_page(clock: GuestClock, seq: int) -> bytes:
    """The data page's bytes for *clock*'s current line."""
    line = clock.line
    if clock.mode != MODE_TSC or line is None:
        return struct.pack(DATA_FORMAT, seq, DATA_MODE_SYSCALL, 0, 0, 0, 0, 0, 0, 0, 0)
    return struct.pack(DATA_FORMAT, seq, DATA_MODE_TSC, line.tsc_base, line.mult, line.shift,
                       line.monotonic, line.realtime, line.boottime, 0, 0)


def write_data_page(proc: Process) -> None:
    """Write the clock's current line into the process's ``[vvar]``.

    The vCPU is stopped while the host writes, so the guest sees the page
    change at once; the sequence count still advances by two per write, as
    Linux's does, so that a reader that cached it sees the change.  Nothing
    is written if ``[vvar]`` is no longer at its address (the guest
    unmapped it: the page it had may now be other memory)."""
    if proc.vdso == VDSO_OFF:
        return
    vma = proc.mm.find(VVAR_ADDRESS)
    if vma is None or vma.name != VVAR_NAME or vma.phys is None:
        return
    clock = guest_clock(proc)
    proc.vdso_seq = (proc.vdso_seq + 2) & 0xFFFF_FFFE
    proc.machine.memory.write(vma.physical(VVAR_ADDRESS), data_page(clock, proc.vdso_seq))


def refresh_if_due(proc: Process, now_ns: int) -> None:
    """Measure the clock line again once it is :data:`~minikvm.machine.guest_clock.REFRESH_INTERVAL_NS`
    old, and write it (the dispatcher calls this after system calls)."""
    clock = proc.machine.guest_clock
    if clock is not None and clock.mode == MODE_TSC and now_ns >= clock.refresh_due:
        clock.refresh()
        write_data_page(proc)


def after_restore(proc: Process) -> None:
    """The guest's memory was just put back (a snapshot's fork made or reset):
    its data page holds the line of the moment of the snapshot, perhaps from
    another machine.  Write the current one, so that the restored program
    reads the time of now, never a time before what it reads later."""
    write_data_page(proc)


__all__ = ["MODE_SYSCALL", "MODE_TSC", "VDSO_MODES", "build_image", "map_vdso",
           "write_data_page", "refresh_if_due", "after_restore", "symbol_addresses"]
