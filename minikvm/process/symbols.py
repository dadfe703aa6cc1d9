"""Layer 5 — a program's symbol table: names for addresses, read lazily.

``symbolize(0x401136)`` → ``"main+22"``: crash reports, ``--trace`` and the
tutorials name guest addresses through a :class:`SymbolTable`, which this
module reads from the file's ``.symtab`` — with pyelftools for the section
headers, and :mod:`struct` for the ~2000 ``Elf64_Sym`` entries of a static
glibc program (pyelftools' per-entry parse was the slowest step of
``minikvm run``; docs/explanation/performance.md).  :mod:`minikvm.process.elf`
makes a *deferred* table for every image, so a run that never names an
address never reads a section nor imports pyelftools.

The kernel never reads sections, so a damaged section table must not stop
a program that would run: it gives an empty table whose ``description``
says why; no exception of pyelftools escapes.

Reference: System V ABI gABI ch. 4 "Sections" and "Symbol Table".
"""

from __future__ import annotations

import bisect
import io
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

# --- sizes and fields of the ELF64 section structures (gABI; <elf.h>) -----------
ELF64_SHDR_SIZE = 64
ELF64_SYM_SIZE = 24
#: Elf64_Sym: st_name (u32), st_info, st_other (u8), st_shndx (u16), st_value, st_size (u64).
ELF64_SYM_FORMAT = "<IBBHQQ"
SHN_UNDEF = 0          # st_shndx: the symbol is not defined here
SHN_ABS = 0xFFF1       # st_shndx: an absolute value, not an address in a section
SHF_EXECINSTR = 0x4    # sh_flags: the section holds instructions

#: STT_GNU_IFUNC (10): the address of a resolver that picks an implementation
#: (glibc's memcpy, strlen...).  pyelftools names it after STT_LOOS.
_IFUNC_TYPES = ("STT_LOOS", "STT_GNU_IFUNC", 10)
_SYMBOL_KINDS = {"STT_FUNC": "function", "STT_OBJECT": "object",
                 **{ifunc: "ifunc" for ifunc in _IFUNC_TYPES}}

#: What reading the headers with :mod:`struct` can raise on a malformed
#: file that the checks did not already catch.
PARSE_ERRORS = (struct.error, ValueError, IndexError, KeyError, TypeError, OverflowError,
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
            AssertionError, *PARSE_ERRORS)


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


def read_symbols(data: bytes, name: str, *, dynamic: bool = False) -> SymbolTable:
    """Functions and objects from ``.symtab`` (the section headers read with
    pyelftools, imported here: see the module docstring).

    With *dynamic*, a file without ``.symtab`` gives its ``.dynsym`` instead:
    the exported functions, all a distribution's stripped shared library
    keeps (Debian's libc.so.6), which is enough to name a profile's frames.

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
        section_name = ".symtab"
        if found is None and dynamic:
            found, section_name = _find_symtab(elf, data, "SHT_DYNSYM"), ".dynsym"
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
        return SymbolTable(symbols, f"{section_name} of {name}")
    except parse_errors as error:
        return SymbolTable(description=f"no symbols: the symbol table is malformed "
                                       f"({type(error).__name__}: {error})")


def _find_symtab(elf: ELFFile, data: bytes, kind: str = "SHT_SYMTAB",
                 ) -> tuple[SymbolTableSection, set[int]] | None:
    """The symbol table section of type *kind* (SHT_SYMTAB or SHT_DYNSYM)
    and the indexes of the sections holding code.

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
        if sh["sh_type"] != kind:
            continue
        if sh["sh_entsize"] != ELF64_SYM_SIZE or sh["sh_offset"] + sh["sh_size"] > len(data):
            raise ValueError(f"section {index} ({kind}) is not inside the file")
        link = sh["sh_link"]
        if link >= shnum:
            raise ValueError(f"section {index} ({kind}) links to section {link}, "
                             f"of {shnum}")
        strtab = headers[link]
        if strtab["sh_offset"] + strtab["sh_size"] > len(data):
            raise ValueError(f"string table {link} is not inside the file")
        section = elf.get_section(index)
        if not isinstance(section, SymbolTableSection):
            raise ValueError(f"section {index} is not a symbol table")
        return section, code_sections
    return None
