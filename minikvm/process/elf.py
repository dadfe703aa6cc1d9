"""Layer 5 — reading a program file: what to load where, as pure code.

This module owns the question "what does this ELF file ask for?" and nothing
else.  :func:`load_elf` reads a file (or bytes) and returns an
:class:`ElfImage`: the loadable segments with their bytes and permissions,
the entry point, where the program headers will be in memory (for
``AT_PHDR``), and the symbol table used to name addresses in crash reports
(``rip=0x401136 (main+22)``), which :mod:`minikvm.process.symbols` reads.  It touches neither KVM nor guest memory; the
loader that copies the segments into the guest is the caller.

Two readers, for two kinds of question.  What to load — the ELF header and
the program headers, a few fixed-size records — is read with
:mod:`struct`, as the kernel reads it.  The sections (``.symtab`` and its
string table) are read by :mod:`minikvm.process.symbols`, with pyelftools,
and only when a symbol is first asked for (the image keeps the file's
bytes until then): most runs never need one, and importing pyelftools took
a third of ``minikvm run``'s start-up (docs/explanation/performance.md).

What minikvm runs is what Linux's ``load_elf_binary()`` (fs/binfmt_elf.c)
runs:

* ``ET_EXEC``: a classic executable, its addresses fixed by the linker
  (typically from 0x400000): ``cc -static``, or ``cc -no-pie``.
* ``ET_DYN`` without ``PT_INTERP``: a static-PIE executable
  (``cc -static-pie``).  It can run at any page-aligned address, the *load
  bias*, which is added to every address in the file; its own start-up code
  (glibc's ``_dl_relocate_static_pie``) applies its relocations.
* Either kind *with* ``PT_INTERP``: a dynamically linked program — every
  program in ``/usr/bin``.  ``PT_INTERP`` names its *interpreter*, the
  dynamic loader (``/lib64/ld-linux-x86-64.so.2``), itself an ELF file
  loaded the same way.  Linux maps both and starts the interpreter, which
  finds the program through the auxiliary vector (``AT_PHDR``, ``AT_ENTRY``,
  ``AT_BASE`` = where the interpreter itself went), opens and maps the
  shared libraries with ``openat``/``mmap``, relocates everything and jumps
  to ``AT_ENTRY``.  This module reads the path (:attr:`ElfImage.interpreter`,
  checked as Linux checks it: NUL-terminated, at most ``PATH_MAX`` bytes)
  and checks the interpreter's own file (:func:`check_interpreter`: an
  executable that needs no interpreter itself); *reading* that file is the
  sandbox's business — the guest's view decides what exists
  (:mod:`minikvm.process.interpreter`) — and placing both is the loader's
  (:meth:`minikvm.process.process.Process.spawn`).

Default load bias for ``ET_DYN``: :data:`minikvm.cpu.layout.PIE_LOAD_BIAS`
(0x5555_5555_4000), Linux's ``ELF_ET_DYN_BASE``: where a PIE with an
interpreter appears under ``setarch -R``, so addresses in traces look
familiar.  (Linux itself, since commit eab09532d400 "binfmt_elf: use
ELF_ET_DYN_BASE only for PIE", lets an interpreter-less ET_DYN fall into the
mmap region instead; a fixed, recognisable base keeps minikvm deterministic
and leaves the mmap region to the program.)  Like Linux, the bias is rounded
down to the largest power-of-two ``p_align`` so that aligned segments stay
aligned.  The interpreter goes where Linux puts it: in the mmap region,
top down (:func:`span`, its size, is what the loader asks room for).

Everything read from the file is checked before it is used, and every
problem becomes one :class:`~minikvm.errors.ElfError` that says what is
wrong, the value, and what to do.  No other exception escapes, whatever
the bytes; a damaged section table — which the kernel never reads — only
leaves the program without symbols, and pyelftools' own exceptions on
garbage say why in :attr:`~minikvm.process.symbols.SymbolTable.description`.

Reference: System V ABI gABI ch. 5 "Program Loading"; the AMD64 psABI §5.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from minikvm.cpu.layout import MMAP_MIN_ADDR, PIE_LOAD_BIAS, USER_SPACE_END
from minikvm.errors import ElfError
from minikvm.linux_abi import PATH_MAX
from minikvm.process.symbols import PARSE_ERRORS, SymbolTable, read_symbols
from minikvm.x86 import PAGE_SIZE


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
#: Elf64_Ehdr: e_ident[16], e_type, e_machine (u16), e_version (u32), e_entry,
#: e_phoff, e_shoff (u64), e_flags (u32), e_ehsize, e_phentsize, e_phnum,
#: e_shentsize, e_shnum, e_shstrndx (u16).
ELF64_EHDR_FORMAT = "<16sHHIQQQIHHHHHH"
#: Elf64_Phdr: p_type, p_flags (u32), p_offset, p_vaddr, p_paddr, p_filesz,
#: p_memsz, p_align (u64).
ELF64_PHDR_FORMAT = "<IIQQQQQQ"

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

#: Linux's elf_read_phdrs() refuses a program-header table above 64 KiB.
MAX_PHDR_TABLE_SIZE = 65536
#: Larger than any real program segment; a bigger p_memsz is a corrupt file
#: (Linux's own limit is TASK_SIZE, but no guest has that much memory).
MAX_SEGMENT_SIZE = 4 << 30


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
class ElfImage:
    """What a program file asks the loader to do; every address includes ``load_bias``.

    ``segments`` are the ``PT_LOAD`` headers sorted by address.
    ``phdr_address`` is where the program headers are once the segments are
    loaded (for ``AT_PHDR``), or ``None`` if no segment contains them.
    ``stack_executable`` comes from ``PT_GNU_STACK``; without one it is
    ``False``, as on x86-64 Linux since 5.8.  ``interpreter`` is the
    ``PT_INTERP`` path (decoded as ``os.fsdecode`` does), or ``None`` for a
    static program.
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
             bias: int | None = None, name: str | None = None) -> ElfImage:
    """Read and check a program file; return what to load where.

    *source* is a path, or the file's bytes.  *bias* is where to load a PIE
    (``ET_DYN``); by default :func:`default_bias`.  An ``ET_EXEC`` program
    accepts only ``bias=0`` (or ``None``).  *name* is used in messages
    (default: the path, or ``"<bytes>"``).

    Raises :class:`~minikvm.errors.ElfError` when the file is not an
    x86-64 Linux executable minikvm can load.  A dynamically linked program
    loads like any other: its :attr:`~ElfImage.interpreter` says which
    dynamic loader must be loaded beside it.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = name or "<bytes>"
    else:
        name = name or os.fspath(source)
        data = read_program(source, name)
    image = _parse(data, name)
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


def check_interpreter(interpreter: ElfImage, program: str) -> None:
    """Refuse an interpreter Linux's ``load_elf_interp()`` would not start.

    It must be an executable (checked by :func:`load_elf` already) that
    needs no interpreter itself: the dynamic loader is what resolves the
    others, so a ``PT_INTERP`` in it is a program naming another program —
    or itself — as its loader.  (Linux does not look, and fails later, or
    loops; a message now is kinder.)"""
    if interpreter.interpreter is not None:
        raise ElfError(f"{program}: its interpreter {interpreter.name} (PT_INTERP) is "
                       f"itself dynamically linked (it names {interpreter.interpreter} as "
                       f"its interpreter): an interpreter must be a self-contained "
                       f"dynamic loader such as ld-linux-x86-64.so.2")


def span(image: ElfImage) -> int:
    """The page-aligned size of the address range *image* occupies, from its
    first segment's page to its last one's end (Linux's
    ``total_mapping_size()``): the room an interpreter is placed in."""
    return _page_up(image.end) - (image.start & ~(PAGE_SIZE - 1))


def _page_up(value: int) -> int:
    return (value + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


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
    except PARSE_ERRORS as error:
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
                       f"{ELF_MAGIC!r} (minikvm runs x86-64 Linux executables)")
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
        elif kind == PT_INTERP and interpreter is None:   # Linux reads the first
            interpreter = _interpreter_path(ph, index, data, name)
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
                    symbols=SymbolTable.deferred(lambda: read_symbols(data, name)))


def _interpreter_path(ph: Elf64Phdr, index: int, data: bytes, name: str) -> str:
    """The path in ``PT_INTERP``, checked as load_elf_binary() checks it:
    between 2 and ``PATH_MAX`` bytes, the last one a NUL.  What follows a
    NUL inside it is ignored, as the kernel's open of the path ignores it."""
    if not 2 <= ph.p_filesz <= PATH_MAX:
        raise ElfError(f"{name}: PT_INTERP (program header {index}) is {ph.p_filesz} bytes: "
                       f"an interpreter path has 2 to {PATH_MAX} (PATH_MAX) bytes with its "
                       f"NUL, so the file is corrupt (execve fails with ENOEXEC)")
    raw = _file_range(data, ph, index, name)
    if raw[-1] != 0:
        raise ElfError(f"{name}: PT_INTERP (program header {index}) is not NUL-terminated "
                       f"({raw[:40]!r}...): the file is corrupt (execve fails with ENOEXEC)")
    path = raw.split(b"\0")[0]
    if not path:
        raise ElfError(f"{name}: PT_INTERP (program header {index}) is an empty path: the "
                       f"file is corrupt (execve fails with ENOENT)")
    return os.fsdecode(path)


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
