"""Layer 5 — reading a program file: what to load where, as pure code.

This module owns the question "what does this ELF file ask for?" and nothing
else.  :func:`load_elf` reads a file (or bytes) and returns an
:class:`ElfImage`: the loadable segments with their bytes and permissions,
the entry point, where the program headers will be in memory (for
``AT_PHDR``), and the symbol table used to name addresses in crash reports
(``rip=0x401136 (main+22)``).  It touches neither KVM nor guest memory; the
loader that copies the segments into the guest is the caller.

Two readers, for two kinds of question.  What to load — the ELF header and
the program headers, a few fixed-size records — is read with
:mod:`struct`, as the kernel reads it.  The sections (``.symtab`` and its
string table) are read with pyelftools, and only when a symbol is first
asked for (:class:`SymbolTable` is read on first use; the image keeps
the file's bytes until then): most runs never need one, and importing
pyelftools took a third of ``minikvm run``'s start-up
(docs/explanation/performance.md).

What minikvm runs is what Linux's ``load_elf_binary()`` (fs/binfmt_elf.c)
runs *without an interpreter*:

* ``ET_EXEC``: a classic static executable (``cc -static``).  Its addresses
  are fixed by the linker, typically from 0x400000.
* ``ET_DYN`` without ``PT_INTERP``: a static-PIE executable
  (``cc -static-pie``).  It can run at any page-aligned address, the *load
  bias*, which is added to every address in the file; its own start-up code
  (glibc's ``_dl_relocate_static_pie``) applies its relocations.

A file with ``PT_INTERP`` needs a dynamic loader (``ld-linux-x86-64.so.2``)
that minikvm does not provide, and is refused.

Default load bias for ``ET_DYN``: :data:`minikvm.cpu.layout.PIE_LOAD_BIAS`
(0x5555_5555_4000), Linux's ``ELF_ET_DYN_BASE``: where a PIE with an
interpreter appears under ``setarch -R``, so addresses in traces look
familiar.  (Linux itself, since commit eab09532d400 "binfmt_elf: use
ELF_ET_DYN_BASE only for PIE", lets an interpreter-less ET_DYN fall into the
mmap region instead; a fixed, recognisable base keeps minikvm deterministic
and leaves the mmap region to the program.)  Like Linux, the bias is rounded
down to the largest power-of-two ``p_align`` so that aligned segments stay
aligned.

Everything read from the file is checked before it is used, and every
problem becomes one :class:`~minikvm.errors.ElfError` that says what is
wrong, the value, and what to do.  No other exception escapes, whatever
the bytes; a damaged section table — which the kernel never reads — only
leaves the program without symbols, and pyelftools' own exceptions on
garbage say why in :attr:`SymbolTable.description`.

Reference: System V ABI gABI ch. 5 "Program Loading"; the AMD64 psABI §5.
"""

from __future__ import annotations

import bisect
import io
import os
import stat
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, NamedTuple

from minikvm.cpu.layout import MMAP_MIN_ADDR, PIE_LOAD_BIAS, USER_SPACE_END
from minikvm.errors import ElfError
from minikvm.x86 import PAGE_SIZE

if TYPE_CHECKING:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

# --- e_ident (gABI "ELF Identification") ------------------------------------
ELF_MAGIC = b"\x7fELF"
EI_CLASS = 4
EI_DATA = 5
EI_NIDENT = 16
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1       # little-endian
ELFDATA2MSB = 2       # big-endian

# --- sizes of the ELF64 structures (gABI; <elf.h> Elf64_Ehdr, Elf64_Phdr, ...)
ELF64_EHDR_SIZE = 64
ELF64_PHDR_SIZE = 56
ELF64_SHDR_SIZE = 64
ELF64_SYM_SIZE = 24
#: Elf64_Ehdr: e_ident[16], e_type, e_machine (u16), e_version (u32), e_entry,
#: e_phoff, e_shoff (u64), e_flags (u32), e_ehsize, e_phentsize, e_phnum,
#: e_shentsize, e_shnum, e_shstrndx (u16).
ELF64_EHDR_FORMAT = "<16sHHIQQQIHHHHHH"
#: Elf64_Phdr: p_type, p_flags (u32), p_offset, p_vaddr, p_paddr, p_filesz,
#: p_memsz, p_align (u64).
ELF64_PHDR_FORMAT = "<IIQQQQQQ"
#: Elf64_Sym: st_name (u32), st_info, st_other (u8), st_shndx (u16), st_value, st_size (u64).
ELF64_SYM_FORMAT = "<IBBHQQ"
SHN_UNDEF = 0          # st_shndx: the symbol is not defined here
SHN_ABS = 0xFFF1       # st_shndx: an absolute value, not an address in a section

# --- e_type, e_machine (gABI "ELF Header") --------------------------------
#: e_type values, by the names the gABI (and pyelftools) give them.
E_TYPE_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
EM_X86_64 = 62

# --- p_type (gABI "Segment Types"; PT_GNU_STACK from <elf.h>) ---------------
PT_LOAD = 1
PT_INTERP = 3
PT_PHDR = 6
PT_TLS = 7
PT_GNU_STACK = 0x6474E551
_PT_NAMES = {PT_LOAD: "PT_LOAD", PT_INTERP: "PT_INTERP"}   # for messages

# --- p_flags (gABI "Segment Permissions") ----------------------------------
PF_X = 0x1
PF_W = 0x2
PF_R = 0x4
SHF_EXECINSTR = 0x4   # sh_flags: the section holds instructions

#: Linux's elf_read_phdrs() refuses a program-header table above 64 KiB.
MAX_PHDR_TABLE_SIZE = 65536
#: Larger than any real program segment; a bigger p_memsz is a corrupt file
#: (Linux's own limit is TASK_SIZE, but no guest has that much memory).
MAX_SEGMENT_SIZE = 4 << 30
#: STT_GNU_IFUNC (10): the address of a resolver that picks an implementation
#: (glibc's memcpy, strlen...).  pyelftools names it after STT_LOOS.
_IFUNC_TYPES = ("STT_LOOS", "STT_GNU_IFUNC", 10)
_SYMBOL_KINDS = {"STT_FUNC": "function", "STT_OBJECT": "object",
                 **{ifunc: "ifunc" for ifunc in _IFUNC_TYPES}}

#: What reading the headers with :mod:`struct` can raise on a malformed
#: file that the checks did not already catch.
_PARSE_ERRORS = (struct.error, ValueError, IndexError, KeyError, TypeError, OverflowError,
                 UnicodeDecodeError)


def _section_parse_errors() -> tuple[type[BaseException], ...]:
    """Everything pyelftools (and the construct library under it) raises on
    a malformed file — it asserts, indexes and divides by header fields
    without checking them.  Only the code that reads sections runs under
    this net."""
    from elftools.common.exceptions import ELFError as PyElfToolsError
    from elftools.common.exceptions import ELFParseError
    from elftools.construct import ConstructError
    return (PyElfToolsError, ELFParseError, ConstructError, ZeroDivisionError, EOFError,
            AssertionError, *_PARSE_ERRORS)

_ET_DESCRIPTIONS = {
    "ET_NONE": "an ELF file of no type (ET_NONE)",
    "ET_REL": "a relocatable object file (ET_REL, a .o); link it into an executable "
              "first, e.g. cc -static file.o",
    "ET_CORE": "a core dump (ET_CORE), not a program",
}


@dataclass(frozen=True)
class LoadSegment:
    """One ``PT_LOAD`` program header: bytes to place at ``vaddr``.

    The first ``filesz`` bytes come from the file (``data``); the rest up to
    ``memsz`` is zero — that is ``.bss``.  Addresses include the load bias.
    Two segments may share a page (the end of ``.text`` and the start of
    ``.data``, say) but their byte ranges never overlap; the loader decides
    how to map a shared page, as Linux's ``elf_map()`` does.
    """

    vaddr: int
    memsz: int
    filesz: int
    offset: int
    data: bytes = field(repr=False)
    readable: bool
    writable: bool
    executable: bool
    align: int

    @property
    def end(self) -> int:
        """The first address after the segment (``vaddr + memsz``)."""
        return self.vaddr + self.memsz

    @property
    def permissions(self) -> str:
        """``"r-x"``-style flags, as in ``/proc/PID/maps``."""
        return "".join(letter if allowed else "-" for letter, allowed in
                       (("r", self.readable), ("w", self.writable), ("x", self.executable)))

    def contains(self, address: int) -> bool:
        """Whether *address* is inside ``[vaddr, vaddr + memsz)``."""
        return self.vaddr <= address < self.end


@dataclass(frozen=True)
class TlsTemplate:
    """The ``PT_TLS`` program header: the initial image of thread-local storage.

    minikvm does not set up TLS; the C library does, from this header, which
    it finds through ``AT_PHDR``.  It is kept for inspection and tests.
    """

    vaddr: int
    filesz: int
    memsz: int
    align: int


@dataclass(frozen=True)
class Symbol:
    """A function or data object from the file's ``.symtab``."""

    name: str
    address: int
    size: int
    kind: str      # "function", "object" or "ifunc" (a resolver: glibc's memcpy...)
    binding: str   # "global", "weak" or "local"


class SymbolTable:
    """The program's functions and objects, sorted by address, for naming addresses.

    ``symbolize(0x401136)`` gives ``"main+22"``; ``address_of("main")`` the
    reverse.  A stripped program (no ``.symtab``) has an empty table, and
    ``symbolize`` returns ``None``.  ``description`` says where the table came
    from, or why it is empty.

    When several symbols share an address (glibc's ``malloc`` is also
    ``__libc_malloc``), the name shown is the one with the fewest leading
    underscores, then global before weak before local.

    A table made with :meth:`deferred` is read from the file on first use:
    :func:`load_elf` makes one, so a run that never names an address never
    parses a section (or imports pyelftools).
    """

    def __init__(self, symbols: Iterable[Symbol] = (), description: str = "") -> None:
        self._read: Callable[[], SymbolTable] | None = None
        self._index(symbols, description)

    @classmethod
    def deferred(cls, read: Callable[[], SymbolTable]) -> SymbolTable:
        """A table whose contents are ``read()``'s, called once, on first use."""
        table = cls()
        table._read = read
        return table

    def _ready(self) -> None:
        """Read a deferred table now (every public method calls this first)."""
        if self._read is not None:
            read, self._read = self._read, None
            table = read()
            self._index(table._symbols, table._description)

    def _index(self, symbols: Iterable[Symbol], description: str) -> None:
        self._symbols = tuple(sorted(symbols, key=lambda s: (s.address, _preference(s))))
        self._description = description
        best_by_name: dict[str, Symbol] = {}
        for symbol in self._symbols:
            known = best_by_name.get(symbol.name)
            if known is None or _preference(symbol) < _preference(known):
                best_by_name[symbol.name] = symbol
        self._by_name = best_by_name
        # One entry per distinct start address: the preferred symbol there.
        starts: list[int] = []
        chosen: list[Symbol] = []
        for symbol in self._symbols:
            if not starts or starts[-1] != symbol.address:
                starts.append(symbol.address)
                chosen.append(symbol)
        self._starts = starts
        self._chosen = chosen

    @property
    def description(self) -> str:
        """Where the table came from, or why it is empty."""
        self._ready()
        return self._description

    def __len__(self) -> int:
        self._ready()
        return len(self._symbols)

    def __iter__(self) -> Iterator[Symbol]:
        self._ready()
        return iter(self._symbols)

    def __repr__(self) -> str:
        return f"<SymbolTable {len(self)} symbols: {self.description}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SymbolTable):
            return NotImplemented
        return (tuple(self), self.description) == (tuple(other), other.description)

    def __hash__(self) -> int:
        return hash((tuple(self), self.description))

    def lookup(self, address: int) -> tuple[Symbol, int] | None:
        """The symbol that covers *address*, and the offset into it.

        A symbol with a size covers ``[address, address + size)``.  One
        without (hand-written assembly, such as musl's ``_start``) covers
        addresses up to the next symbol.
        """
        self._ready()
        index = bisect.bisect_right(self._starts, address) - 1
        if index < 0:
            return None
        symbol = self._chosen[index]
        offset = address - symbol.address
        if symbol.size:
            return (symbol, offset) if offset < symbol.size else None
        is_last = index + 1 == len(self._starts)
        return (symbol, offset) if offset == 0 or not is_last else None

    def symbolize(self, address: int) -> str | None:
        """``"main+22"`` (decimal offset; ``"main"`` at offset 0), or ``None``."""
        found = self.lookup(address)
        if found is None:
            return None
        symbol, offset = found
        return f"{symbol.name}+{offset}" if offset else symbol.name

    def address_of(self, name: str) -> int:
        """The address of the symbol called *name* (``KeyError`` if there is none)."""
        self._ready()
        symbol = self._by_name.get(name)
        if symbol is None:
            raise KeyError(f"no symbol {name!r} in the symbol table ({self.description})")
        return symbol.address

    def shifted(self, delta: int) -> SymbolTable:
        """The same table with every address moved by *delta* (a change of load
        bias); deferred if this one is not read yet."""
        if self._read is not None:
            def read_shifted() -> SymbolTable:
                self._ready()
                return self.shifted(delta)
            return SymbolTable.deferred(read_shifted)
        return SymbolTable((replace(s, address=s.address + delta) for s in self._symbols),
                           self._description)


def _preference(symbol: Symbol) -> tuple[int, int, int, str]:
    """Sort key: which of several names for one address to show (smaller wins).

    Fewest leading underscores first: the name the programmer called
    (``malloc``, not ``__libc_malloc``) — whose binding may well be local, as
    the linker turns hidden globals into locals in a static-PIE.
    """
    underscores = len(symbol.name) - len(symbol.name.lstrip("_"))
    rank = {"global": 0, "weak": 1, "local": 2}.get(symbol.binding, 3)
    return (underscores, rank, len(symbol.name), symbol.name)


@dataclass(frozen=True)
class ElfImage:
    """What a program file asks the loader to do; every address includes ``load_bias``.

    ``segments`` are the ``PT_LOAD`` headers sorted by address.
    ``phdr_address`` is where the program headers are once the segments are
    loaded (for ``AT_PHDR``), or ``None`` if no segment contains them.
    ``stack_executable`` comes from ``PT_GNU_STACK``; without one it is
    ``False``, as on x86-64 Linux since 5.8.  ``interpreter`` is the
    ``PT_INTERP`` path (only ever set with ``allow_interpreter=True``).
    """

    name: str
    elf_type: str                # "ET_EXEC" or "ET_DYN"
    load_bias: int
    entry: int
    segments: tuple[LoadSegment, ...]
    phdr_address: int | None
    phent: int
    phnum: int
    stack_executable: bool
    tls: TlsTemplate | None
    interpreter: str | None
    symbols: SymbolTable = field(repr=False)

    @property
    def is_pie(self) -> bool:
        """Whether the program can be loaded at any address (``ET_DYN``)."""
        return self.elf_type == "ET_DYN"

    @property
    def start(self) -> int:
        """The lowest address of any segment."""
        return self.segments[0].vaddr

    @property
    def end(self) -> int:
        """The first address after the highest segment: the heap (``brk``) starts
        at the next page boundary."""
        return max(segment.end for segment in self.segments)

    def segment_containing(self, address: int) -> LoadSegment | None:
        """The segment whose memory range contains *address*."""
        for segment in self.segments:
            if segment.contains(address):
                return segment
        return None

    def with_bias(self, bias: int) -> ElfImage:
        """This image loaded at *bias* instead of ``load_bias``.

        Only a PIE (``ET_DYN``) can move; ``bias`` must be page-aligned.  The
        result is checked like any image: every segment must land between
        ``MMAP_MIN_ADDR`` and the end of the user half.
        """
        if bias % PAGE_SIZE:
            raise ValueError(f"load bias {bias:#x} is not a multiple of the page size "
                             f"({PAGE_SIZE:#x})")
        if bias == self.load_bias:
            return self
        if not self.is_pie:
            raise ElfError(f"{self.name}: cannot load at bias {bias:#x}: an ET_EXEC program "
                           f"runs only at the addresses it was linked for (build it with "
                           f"-static-pie to make it relocatable)")
        delta = bias - self.load_bias
        moved = replace(
            self,
            load_bias=bias,
            entry=self.entry + delta,
            segments=tuple(replace(s, vaddr=s.vaddr + delta) for s in self.segments),
            phdr_address=None if self.phdr_address is None else self.phdr_address + delta,
            tls=None if self.tls is None else replace(self.tls, vaddr=self.tls.vaddr + delta),
            symbols=self.symbols.shifted(delta),
        )
        _check_placement(moved)
        return moved


# --- the entry point -----------------------------------------------------------

def load_elf(source: str | os.PathLike[str] | bytes | bytearray | memoryview, *,
             bias: int | None = None, name: str | None = None,
             allow_interpreter: bool = False) -> ElfImage:
    """Read and check a program file; return what to load where.

    *source* is a path, or the file's bytes.  *bias* is where to load a PIE
    (``ET_DYN``); by default :func:`default_bias`.  An ``ET_EXEC`` program
    accepts only ``bias=0`` (or ``None``).  *name* is used in messages
    (default: the path, or ``"<bytes>"``).

    Raises :class:`~minikvm.errors.ElfError` when the file is not a
    static x86-64 Linux executable minikvm can load, including when it needs
    a dynamic loader (``PT_INTERP``) unless *allow_interpreter* is set (for
    tools that only inspect a file).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = name or "<bytes>"
    else:
        name = name or os.fspath(source)
        data = read_program(source, name)
    image = _parse(data, name)
    if image.interpreter is not None and not allow_interpreter:
        raise ElfError(f"{name}: dynamically linked (needs {image.interpreter}): not "
                       f"supported yet, link with -static (or -static-pie)")
    if bias is None:
        bias = default_bias(image)
    if bias == 0:
        _check_placement(image)
        return image
    return image.with_bias(bias)


def default_bias(image: ElfImage) -> int:
    """Where minikvm loads *image* when the caller does not say: 0 for ET_EXEC,
    :data:`~minikvm.cpu.layout.PIE_LOAD_BIAS` for ET_DYN, rounded down to the
    largest power-of-two segment alignment (as Linux's
    ``maximum_alignment()`` does in fs/binfmt_elf.c)."""
    if not image.is_pie:
        return 0
    alignment = PAGE_SIZE
    for segment in image.segments:
        if segment.align > alignment and segment.align & (segment.align - 1) == 0:
            alignment = segment.align
    return PIE_LOAD_BIAS & ~(alignment - 1)


def read_program(path: str | os.PathLike[str], name: str | None = None) -> bytes:
    """The file's bytes; like execve(2), only a regular file will do.

    Reading is separate from parsing so that a caller can read the file
    before it confines itself and parse it after (``minikvm run``: a
    malformed or malicious ELF is parsed inside the walls).  Raises
    :class:`~minikvm.errors.ElfError` when the file cannot be read."""
    name = name or os.fspath(path)
    try:
        with open(path, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise ElfError(f"{name}: not a regular file (execve would fail with EACCES)")
            return file.read()
    except OSError as error:
        raise ElfError(f"cannot read program {name}: {error.strerror or error}") from error


# --- parsing -------------------------------------------------------------------

def _parse(data: bytes, name: str) -> ElfImage:
    """Check the identification bytes (for clear messages), then read the
    headers; any exception that escapes the checks means a malformed file."""
    _check_identification(data, name)
    try:
        return _parse_elf64(data, name)
    except ElfError:
        raise
    except _PARSE_ERRORS as error:
        raise ElfError(f"{name}: malformed ELF file ({type(error).__name__}: {error}); "
                       f"is it damaged or truncated?") from error


def _check_identification(data: bytes, name: str) -> None:
    """``e_ident``: magic, class and byte order, checked before anything is parsed."""
    if not data:
        raise ElfError(f"{name}: empty file, not an ELF program")
    if data[:4] != ELF_MAGIC:
        if data[:2] == b"#!":
            script = data[:80].split(b"\n")[0].decode("utf-8", "replace")
            raise ElfError(f"{name}: a script ({script!r}), not an ELF program: run its "
                           f"interpreter with minikvm instead")
        raise ElfError(f"{name}: not an ELF file: it starts with {data[:4]!r} instead of "
                       f"{ELF_MAGIC!r} (minikvm runs static x86-64 Linux executables)")
    if len(data) < EI_NIDENT:
        raise ElfError(f"{name}: truncated: {len(data)} bytes, shorter than the "
                       f"{EI_NIDENT}-byte ELF identification")
    elf_class, byte_order = data[EI_CLASS], data[EI_DATA]
    if elf_class == ELFCLASS32:
        raise ElfError(f"{name}: a 32-bit ELF file (ELFCLASS32): minikvm runs only 64-bit "
                       f"x86-64 programs (build without -m32)")
    if elf_class != ELFCLASS64:
        raise ElfError(f"{name}: unknown ELF class {elf_class} in e_ident[EI_CLASS] "
                       f"(expected ELFCLASS64 = {ELFCLASS64})")
    if byte_order == ELFDATA2MSB:
        raise ElfError(f"{name}: a big-endian ELF file (ELFDATA2MSB): x86-64 programs are "
                       f"little-endian, so this was built for another machine")
    if byte_order != ELFDATA2LSB:
        raise ElfError(f"{name}: unknown byte order {byte_order} in e_ident[EI_DATA] "
                       f"(expected ELFDATA2LSB = {ELFDATA2LSB})")
    if len(data) < ELF64_EHDR_SIZE:
        raise ElfError(f"{name}: truncated: {len(data)} bytes, shorter than the "
                       f"{ELF64_EHDR_SIZE}-byte ELF64 header")


class Elf64Ehdr(NamedTuple):
    """The ELF header (``Elf64_Ehdr`` in <elf.h>), as :data:`ELF64_EHDR_FORMAT` reads it."""
    e_ident: bytes
    e_type: int
    e_machine: int
    e_version: int
    e_entry: int
    e_phoff: int
    e_shoff: int
    e_flags: int
    e_ehsize: int
    e_phentsize: int
    e_phnum: int
    e_shentsize: int
    e_shnum: int
    e_shstrndx: int


class Elf64Phdr(NamedTuple):
    """One program header (``Elf64_Phdr`` in <elf.h>)."""
    p_type: int
    p_flags: int
    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_align: int


def _machine_name(machine: int) -> str:
    """``EM_AARCH64`` for 183: pyelftools' name for an ``e_machine`` value
    (imported here: only a refused file needs it)."""
    try:
        from elftools.elf.enums import ENUM_E_MACHINE
    except ImportError:
        return f"machine {machine}"
    names = {value: name for name, value in ENUM_E_MACHINE.items() if isinstance(value, int)}
    return names.get(machine, f"machine {machine}")


def _parse_elf64(data: bytes, name: str) -> ElfImage:
    """The checks of Linux's load_elf_binary() and elf_read_phdrs(), and then some."""
    header = Elf64Ehdr._make(struct.unpack_from(ELF64_EHDR_FORMAT, data))
    if header.e_machine != EM_X86_64:
        raise ElfError(f"{name}: built for {_machine_name(header.e_machine)}, not x86-64 "
                       f"(EM_X86_64): rebuild it for x86-64")
    elf_type = E_TYPE_NAMES.get(header.e_type, header.e_type)
    if elf_type not in ("ET_EXEC", "ET_DYN"):
        what = _ET_DESCRIPTIONS.get(elf_type, f"an ELF file of type {elf_type}")
        raise ElfError(f"{name}: {what}; minikvm runs executables (ET_EXEC, or ET_DYN "
                       f"built with -static-pie)")

    phent, phnum, phoff = header.e_phentsize, header.e_phnum, header.e_phoff
    if phent != ELF64_PHDR_SIZE:
        raise ElfError(f"{name}: program header entries are {phent} bytes (e_phentsize), "
                       f"expected {ELF64_PHDR_SIZE}: the file is corrupt")
    if phnum == 0:
        raise ElfError(f"{name}: no program headers (e_phnum = 0): nothing to load; is "
                       f"it a linked executable?")
    if phnum * phent > MAX_PHDR_TABLE_SIZE:
        raise ElfError(f"{name}: {phnum} program headers (e_phnum) is more than Linux "
                       f"accepts ({MAX_PHDR_TABLE_SIZE // phent}): the file is corrupt")
    if phoff + phnum * phent > len(data):
        raise ElfError(f"{name}: truncated: the program headers end at byte "
                       f"{phoff + phnum * phent:#x} (e_phoff {phoff:#x}) but the file has "
                       f"only {len(data):#x} bytes")

    segments: list[LoadSegment] = []
    phdr_address: int | None = None
    interpreter: str | None = None
    tls: TlsTemplate | None = None
    stack_executable = False
    for index in range(phnum):
        ph = Elf64Phdr._make(struct.unpack_from(ELF64_PHDR_FORMAT, data, phoff + index * phent))
        kind = ph.p_type
        if kind == PT_LOAD:
            segment = _load_segment(ph, index, data, name)
            if segment.memsz:       # elf_map() maps nothing for an empty segment
                segments.append(segment)
        elif kind == PT_INTERP:
            interpreter = _file_range(data, ph, index, name).split(b"\0")[0].decode(
                "utf-8", "replace")
        elif kind == PT_PHDR:
            phdr_address = ph.p_vaddr
        elif kind == PT_TLS:
            tls = TlsTemplate(ph.p_vaddr, ph.p_filesz, ph.p_memsz, ph.p_align)
        elif kind == PT_GNU_STACK:
            stack_executable = bool(ph.p_flags & PF_X)

    if not segments:
        raise ElfError(f"{name}: no loadable segment (no PT_LOAD with a non-zero size): "
                       f"nothing to run")
    segments.sort(key=lambda s: s.vaddr)
    for lower, upper in zip(segments, segments[1:]):
        if upper.vaddr < lower.end:
            raise ElfError(f"{name}: PT_LOAD segments overlap: [{lower.vaddr:#x}, "
                           f"{lower.end:#x}) and [{upper.vaddr:#x}, {upper.end:#x}): the "
                           f"file is corrupt")
    if phdr_address is None:
        phdr_address = _phdr_address_from_segments(segments, phoff, phnum * phent)

    entry = header.e_entry
    if not any(s.executable and s.contains(entry) for s in segments):
        ranges = ", ".join(f"[{s.vaddr:#x}, {s.end:#x})" for s in segments if s.executable)
        raise ElfError(f"{name}: entry point {entry:#x} (e_entry) is not inside any "
                       f"executable PT_LOAD segment ({ranges or 'there are none'}): the "
                       f"file is corrupt")

    return ElfImage(name=name, elf_type=elf_type, load_bias=0, entry=entry,
                    segments=tuple(segments), phdr_address=phdr_address, phent=phent,
                    phnum=phnum, stack_executable=stack_executable, tls=tls,
                    interpreter=interpreter,
                    symbols=SymbolTable.deferred(lambda: _read_symbols(data, name)))


def _load_segment(ph: Elf64Phdr, index: int, data: bytes, name: str) -> LoadSegment:
    """One PT_LOAD, checked as load_elf_binary() checks it (plus a size limit)."""
    vaddr, memsz, filesz = ph.p_vaddr, ph.p_memsz, ph.p_filesz
    where = f"PT_LOAD segment {index} at {vaddr:#x}"
    if filesz > memsz:
        raise ElfError(f"{name}: {where}: p_filesz {filesz:#x} is larger than p_memsz "
                       f"{memsz:#x} (a segment cannot hold more file bytes than memory): "
                       f"the file is corrupt")
    if memsz > MAX_SEGMENT_SIZE:
        raise ElfError(f"{name}: {where}: absurd size p_memsz {memsz:#x} (more than "
                       f"{MAX_SEGMENT_SIZE >> 30} GiB): the file is corrupt")
    flags = ph.p_flags
    return LoadSegment(vaddr=vaddr, memsz=memsz, filesz=filesz, offset=ph.p_offset,
                       data=_file_range(data, ph, index, name), readable=bool(flags & PF_R),
                       writable=bool(flags & PF_W), executable=bool(flags & PF_X),
                       align=ph.p_align)


def _file_range(data: bytes, ph: Elf64Phdr, index: int, name: str) -> bytes:
    """The segment's bytes in the file, ``[p_offset, p_offset + p_filesz)``."""
    offset, filesz = ph.p_offset, ph.p_filesz
    if offset + filesz > len(data):
        kind = _PT_NAMES.get(ph.p_type, f"type {ph.p_type:#x}")
        raise ElfError(f"{name}: truncated: segment {index} ({kind}) needs file "
                       f"bytes [{offset:#x}, {offset + filesz:#x}) but the file has only "
                       f"{len(data):#x} bytes")
    return data[offset:offset + filesz]


def _phdr_address_from_segments(segments: list[LoadSegment], phoff: int,
                                size: int) -> int | None:
    """Where the program headers are in memory when there is no PT_PHDR.

    The PT_LOAD whose file bytes contain them maps them; this is how Linux
    computes AT_PHDR since 5.18 (commit 0da1d5002745, "fs/binfmt_elf: Fix
    AT_PHDR for unusual ELF files").
    """
    for segment in segments:
        if segment.offset <= phoff and phoff + size <= segment.offset + segment.filesz:
            return segment.vaddr + (phoff - segment.offset)
    return None


def _check_placement(image: ElfImage) -> None:
    """Every segment must lie in the program's half of the address space.

    Below ``MMAP_MIN_ADDR`` (64 KiB) are the null guard and minikvm's kernel
    area; above ``USER_SPACE_END`` the 47-bit user half ends (Linux's
    TASK_SIZE).  A PIE loaded at bias 0 fails here: that is why it gets one.
    """
    for segment in image.segments:
        if segment.vaddr < MMAP_MIN_ADDR:
            hint = (f"load it at a higher bias than {image.load_bias:#x}" if image.is_pie
                    else "the lowest address a program may use is "
                         f"{MMAP_MIN_ADDR:#x} (vm.mmap_min_addr)")
            raise ElfError(f"{image.name}: segment at {segment.vaddr:#x} is below "
                           f"{MMAP_MIN_ADDR:#x}: {hint}")
        if segment.end > USER_SPACE_END:
            raise ElfError(f"{image.name}: segment [{segment.vaddr:#x}, {segment.end:#x}) "
                           f"goes beyond the end of the user address space "
                           f"({USER_SPACE_END:#x}, 47 bits): the file is corrupt or the "
                           f"load bias {image.load_bias:#x} is too high")


def _read_symbols(data: bytes, name: str) -> SymbolTable:
    """Functions and objects from ``.symtab`` (the section headers read with
    pyelftools, imported here: see the module docstring).

    The kernel never reads sections, so a damaged section table must not stop
    a program that would run: it gives an empty table whose ``description``
    says why.
    """
    try:
        parse_errors = _section_parse_errors()
        from elftools.elf.elffile import ELFFile
        from elftools.elf.enums import ENUM_ST_INFO_BIND, ENUM_ST_INFO_TYPE
    except ImportError as error:   # read late, e.g. inside Landlock's walls
        return SymbolTable(description=f"no symbols: pyelftools could not be imported "
                                       f"({error})")
    # st_info's type (low 4 bits) and binding (high 4 bits), named as pyelftools names them.
    type_names = {value: key for key, value in ENUM_ST_INFO_TYPE.items() if isinstance(value, int)}
    binding_names = {value: key for key, value in ENUM_ST_INFO_BIND.items()
                     if isinstance(value, int)}
    try:
        elf = ELFFile(io.BytesIO(data))
        found = _find_symtab(elf, data)
        if found is None:
            return SymbolTable(description="no .symtab: the program is stripped")
        section, code_sections = found
        strings = elf.get_section(section["sh_link"])["sh_offset"]
        start = section["sh_offset"]
        end = start + section["sh_size"] // ELF64_SYM_SIZE * ELF64_SYM_SIZE
        symbols = []
        # Elf64_Sym unpacked with struct, not pyelftools: a static glibc
        # program has ~2000 symbols, and construct's per-entry parse made
        # this the slowest step of `minikvm run` (docs/explanation/performance.md).
        for name_offset, info, _other, shndx, value, size in struct.iter_unpack(
                ELF64_SYM_FORMAT, data[start:end]):
            kind_name = type_names.get(info & 0xF, info & 0xF)
            kind = _SYMBOL_KINDS.get(kind_name)
            if kind_name == "STT_NOTYPE" and shndx in code_sections:
                kind = "function"   # a label in hand-written assembly: musl's _start
            if kind is None or shndx in (SHN_UNDEF, SHN_ABS):
                continue
            first = strings + name_offset
            last = data.find(b"\0", first)
            symbol_name = data[first:last if last >= 0 else len(data)].decode("utf-8", "replace")
            if not symbol_name:
                continue
            binding = binding_names.get(info >> 4, f"STB_{info >> 4}")
            symbols.append(Symbol(name=symbol_name, address=value, size=size, kind=kind,
                                  binding=binding.removeprefix("STB_").lower()))
        return SymbolTable(symbols, f".symtab of {name}")
    except parse_errors as error:
        return SymbolTable(description=f"no symbols: .symtab is malformed "
                                       f"({type(error).__name__}: {error})")


def _find_symtab(elf: ELFFile, data: bytes) -> tuple[SymbolTableSection, set[int]] | None:
    """The SHT_SYMTAB section and the indexes of the sections holding code.

    Bounds are checked first — the symbol table's and its string table's
    bytes must be inside the file — so a corrupt size cannot make us read
    forever.
    """
    shoff, shnum, shentsize = elf["e_shoff"], elf["e_shnum"], elf["e_shentsize"]
    if shoff == 0 or shnum == 0:
        return None
    if shentsize != ELF64_SHDR_SIZE or shoff + shnum * shentsize > len(data):
        raise ValueError(f"section header table [{shoff:#x}, +{shnum}*{shentsize}) "
                         f"is not inside the file")
    from elftools.common.utils import struct_parse
    from elftools.elf.sections import SymbolTableSection
    headers = [struct_parse(elf.structs.Elf_Shdr, elf.stream,
                            stream_pos=shoff + index * shentsize) for index in range(shnum)]
    code_sections = {index for index, sh in enumerate(headers)
                     if sh["sh_flags"] & SHF_EXECINSTR}
    for index, sh in enumerate(headers):
        if sh["sh_type"] != "SHT_SYMTAB":
            continue
        if sh["sh_entsize"] != ELF64_SYM_SIZE or sh["sh_offset"] + sh["sh_size"] > len(data):
            raise ValueError(f"section {index} (SHT_SYMTAB) is not inside the file")
        link = sh["sh_link"]
        if link >= shnum:
            raise ValueError(f"section {index} (SHT_SYMTAB) links to section {link}, "
                             f"of {shnum}")
        strtab = headers[link]
        if strtab["sh_offset"] + strtab["sh_size"] > len(data):
            raise ValueError(f"string table {link} is not inside the file")
        section = elf.get_section(index)
        if not isinstance(section, SymbolTableSection):
            raise ValueError(f"section {index} is not a symbol table")
        return section, code_sections
    return None
