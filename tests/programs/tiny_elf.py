"""A tiny static x86-64 program, assembled byte by byte: no compiler needed.

:func:`tiny_elf` returns a complete ELF executable that exits with status 42
(``mov edi, 42; mov eax, 60; syscall``), with a ``.symtab``; it is what the
ELF tests mutate field by field (:func:`patched_header`,
:func:`patched_phdr`) to make each malformed file, and a program a loader
test can run where no C compiler is installed.  Structures from <elf.h>.
"""

from __future__ import annotations

import struct

ET_REL, ET_EXEC, ET_DYN, ET_CORE = 1, 2, 3, 4
EM_386, EM_X86_64, EM_AARCH64 = 3, 62, 183
PT_NULL, PT_LOAD, PT_INTERP, PT_PHDR, PT_TLS = 0, 1, 3, 6, 7
PT_GNU_STACK = 0x6474E551
PF_X, PF_W, PF_R = 1, 2, 4
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB = 1, 2, 3
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
STB_LOCAL, STB_GLOBAL = 0, 1
STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
EHDR_FIELDS = ("e_ident", "e_type", "e_machine", "e_version", "e_entry", "e_phoff",
               "e_shoff", "e_flags", "e_ehsize", "e_phentsize", "e_phnum", "e_shentsize",
               "e_shnum", "e_shstrndx")
PHDR = struct.Struct("<IIQQQQQQ")
PHDR_FIELDS = ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr", "p_filesz",
               "p_memsz", "p_align")
SHDR = struct.Struct("<IIQQQQIIQQ")
SYM = struct.Struct("<IBBHQQ")
E_IDENT = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)   # ELFCLASS64, little-endian, v1

#: exit(42): mov edi, 42; mov eax, 60 (SYS_exit); syscall
EXIT_42 = bytes.fromhex("bf2a000000" "b83c000000" "0f05")
CODE_OFFSET = 0x200          # after the ELF header and up to 8 program headers
DATA_OFFSET = 0x1000
DATA = b"minikvm's data!\n"
DATA_MEMSZ = 0x100


def tiny_elf(e_type: int = ET_EXEC, base: int = 0x400000, interpreter: bytes | None = None,
             align: int = 0x1000) -> bytes:
    """A complete static program that exits with status 42, with a .symtab.

    Memory: [base, +0x20c) r-x holds the headers and the code (entry at
    base+0x200); [base+0x1000, +0x100) rw- holds 16 bytes of data and .bss.
    Symbols: ``_start`` (function), ``answer`` (object), ``do_syscall`` (an
    assembly label without type or size, at the ``syscall`` instruction).
    """
    entry = base + CODE_OFFSET
    strtab = b"\0_start\0answer\0do_syscall\0"
    shstrtab = b"\0.text\0.data\0.symtab\0.strtab\0.shstrtab\0"
    symbols = b"".join([
        SYM.pack(0, 0, 0, 0, 0, 0),
        SYM.pack(strtab.index(b"do_syscall"), (STB_LOCAL << 4) | STT_NOTYPE, 0, 1,
                 entry + 10, 0),
        SYM.pack(strtab.index(b"_start"), (STB_GLOBAL << 4) | STT_FUNC, 0, 1, entry,
                 len(EXIT_42)),
        SYM.pack(strtab.index(b"answer"), (STB_GLOBAL << 4) | STT_OBJECT, 0, 2,
                 base + DATA_OFFSET, len(DATA)),
    ])
    interp_offset = CODE_OFFSET + 0x40       # in the file only: PT_INTERP need not be loaded
    phdrs = [
        (PT_LOAD, PF_R | PF_X, 0, base, base, CODE_OFFSET + len(EXIT_42),
         CODE_OFFSET + len(EXIT_42), align),
        (PT_LOAD, PF_R | PF_W, DATA_OFFSET, base + DATA_OFFSET, base + DATA_OFFSET, len(DATA),
         DATA_MEMSZ, align),
        (PT_GNU_STACK, PF_R | PF_W, 0, 0, 0, 0, 0, 16),
    ]
    if interpreter is not None:
        phdrs.append((PT_INTERP, PF_R, interp_offset, base + interp_offset,
                      base + interp_offset, len(interpreter) + 1, len(interpreter) + 1, 1))
    symtab_offset = DATA_OFFSET + len(DATA)
    strtab_offset = symtab_offset + len(symbols)
    shstrtab_offset = strtab_offset + len(strtab)
    shoff = (shstrtab_offset + len(shstrtab) + 7) & ~7
    sections = [
        SHDR.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        SHDR.pack(shstrtab.index(b".text"), SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, entry,
                  CODE_OFFSET, len(EXIT_42), 0, 0, 16, 0),
        SHDR.pack(shstrtab.index(b".data"), SHT_PROGBITS, SHF_ALLOC | SHF_WRITE,
                  base + DATA_OFFSET, DATA_OFFSET, len(DATA), 0, 0, 8, 0),
        SHDR.pack(shstrtab.index(b".symtab"), SHT_SYMTAB, 0, 0, symtab_offset, len(symbols),
                  4, 2, 8, SYM.size),
        SHDR.pack(shstrtab.index(b".strtab"), SHT_STRTAB, 0, 0, strtab_offset, len(strtab),
                  0, 0, 1, 0),
        SHDR.pack(shstrtab.index(b".shstrtab"), SHT_STRTAB, 0, 0, shstrtab_offset,
                  len(shstrtab), 0, 0, 1, 0),
    ]
    image = bytearray(shoff + len(sections) * SHDR.size)
    image[0:EHDR.size] = EHDR.pack(E_IDENT, e_type, EM_X86_64, 1, entry, EHDR.size, shoff,
                                   0, EHDR.size, PHDR.size, len(phdrs), SHDR.size,
                                   len(sections), 5)
    for index, phdr in enumerate(phdrs):
        PHDR.pack_into(image, EHDR.size + index * PHDR.size, *phdr)
    image[CODE_OFFSET:CODE_OFFSET + len(EXIT_42)] = EXIT_42
    if interpreter is not None:
        image[interp_offset:interp_offset + len(interpreter) + 1] = interpreter + b"\0"
    image[DATA_OFFSET:DATA_OFFSET + len(DATA)] = DATA
    image[symtab_offset:strtab_offset] = symbols
    image[strtab_offset:shstrtab_offset] = strtab
    image[shstrtab_offset:shstrtab_offset + len(shstrtab)] = shstrtab
    image[shoff:] = b"".join(sections)
    return bytes(image)


def patched_header(data: bytes, **fields: int | bytes) -> bytes:
    """*data* with some ELF header fields replaced (``e_machine=EM_AARCH64``)."""
    values = dict(zip(EHDR_FIELDS, EHDR.unpack_from(data)))
    values.update(fields)
    return EHDR.pack(*(values[name] for name in EHDR_FIELDS)) + data[EHDR.size:]


def patched_phdr(data: bytes, index: int, **fields: int) -> bytes:
    """*data* with some fields of program header *index* replaced."""
    e_phoff = EHDR.unpack_from(data)[EHDR_FIELDS.index("e_phoff")]
    offset = e_phoff + index * PHDR.size
    values = dict(zip(PHDR_FIELDS, PHDR.unpack_from(data, offset)))
    values.update(fields)
    patched = bytearray(data)
    PHDR.pack_into(patched, offset, *(values[name] for name in PHDR_FIELDS))
    return bytes(patched)
