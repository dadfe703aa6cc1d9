"""Tests of minikvm.process.elf: pure, no KVM.

Two sources of ELF files: a tiny program assembled here byte by byte
(:func:`tiny_elf`, so the checks run where there is no compiler), and the C
programs of ``tests/programs`` built with every toolchain available, checked
against ``readelf`` and ``nm``.  Malformed files are made by changing one
field of a valid file, so each test names exactly what is wrong.
"""

from __future__ import annotations

import functools
import os
import random
import re
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from minikvm.cpu.layout import MMAP_MIN_ADDR, PIE_LOAD_BIAS, USER_SPACE_END
from minikvm.errors import ElfError
from minikvm.process.elf import ElfImage, LoadSegment, default_bias, load_elf
from minikvm.process.symbols import Symbol, SymbolTable
from tests.programs.build import PROGRAMS, available_variants, program
from tests.programs.tiny_elf import (CODE_OFFSET, DATA, DATA_MEMSZ, DATA_OFFSET, EHDR,
                                     EHDR_FIELDS, EM_386, EM_AARCH64, ET_CORE, ET_DYN,
                                     ET_EXEC, ET_REL, EXIT_42, PF_R, PF_W, PF_X, PT_LOAD,
                                     PT_NULL, PT_PHDR, patched_header, patched_phdr, tiny_elf)


def check_invariants(image: ElfImage) -> None:
    """What every ElfImage that load_elf returns must satisfy."""
    assert image.elf_type in ("ET_EXEC", "ET_DYN")
    assert image.segments
    for segment in image.segments:
        assert len(segment.data) == segment.filesz <= segment.memsz
        assert MMAP_MIN_ADDR <= segment.vaddr < segment.end <= USER_SPACE_END
    for lower, upper in zip(image.segments, image.segments[1:]):
        assert lower.end <= upper.vaddr
    segment = image.segment_containing(image.entry)
    assert segment is not None and segment.executable
    assert image.interpreter is None
    # The symbols are read on first use; whatever the sections hold, that
    # never raises: a damaged table is an empty one that says why.
    assert image.symbols.description


# --- the tiny ELF ----------------------------------------------------------------

def test_tiny_elf_loads() -> None:
    image = load_elf(tiny_elf())
    check_invariants(image)
    assert image.name == "<bytes>"
    assert image.elf_type == "ET_EXEC" and not image.is_pie and image.load_bias == 0
    assert image.entry == 0x400200
    text, data = image.segments
    assert (text.vaddr, text.memsz, text.filesz, text.offset, text.permissions) == \
        (0x400000, 0x20C, 0x20C, 0, "r-x")
    assert text.data[CODE_OFFSET:] == EXIT_42
    assert (data.vaddr, data.memsz, data.filesz, data.offset, data.permissions) == \
        (0x401000, DATA_MEMSZ, len(DATA), DATA_OFFSET, "rw-")
    assert data.data == DATA and data.align == 0x1000
    assert image.phdr_address == 0x400040        # inside the first PT_LOAD, at e_phoff
    assert (image.phent, image.phnum) == (56, 3)
    assert image.stack_executable is False and image.tls is None
    assert (image.start, image.end) == (0x400000, 0x401100)


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64",
                    reason="runs an x86-64 Linux program natively")
@pytest.mark.parametrize("e_type, base", [(ET_EXEC, 0x400000), (ET_DYN, 0)])
def test_tiny_elf_is_a_real_program(tmp_path: Path, e_type: int, base: int) -> None:
    # The kernel agrees that the hand-made file is a program: it runs and exits 42.
    path = tmp_path / "tiny"
    path.write_bytes(tiny_elf(e_type, base))
    path.chmod(0o755)
    assert subprocess.run([str(path)], timeout=10, check=False).returncode == 42


def test_tiny_elf_symbols() -> None:
    symbols = load_elf(tiny_elf()).symbols
    assert len(symbols) == 3
    assert symbols.address_of("_start") == 0x400200
    assert symbols.address_of("answer") == 0x401000
    assert symbols.symbolize(0x400200) == "_start"
    assert symbols.symbolize(0x400205) == "_start+5"
    # A label inside _start: the nearest symbol below the address wins.
    assert symbols.symbolize(0x40020A) == "do_syscall"
    assert symbols.symbolize(0x40020B) == "do_syscall+1"
    assert symbols.symbolize(0x40100F) == "answer+15"
    assert symbols.symbolize(0x401010) is None      # past the end of answer
    assert symbols.symbolize(0x3FFFFF) is None
    with pytest.raises(KeyError, match="no symbol 'main'"):
        symbols.address_of("main")


def test_accepts_a_path_bytes_bytearray_and_memoryview(tmp_path: Path) -> None:
    data = tiny_elf()
    path = tmp_path / "tiny"
    path.write_bytes(data)
    images = [load_elf(path), load_elf(str(path)), load_elf(data), load_elf(bytearray(data)),
              load_elf(memoryview(data))]
    assert images[0].name == str(path)
    assert len({(image.entry, image.segments) for image in images}) == 1


def test_pt_gnu_stack_executable() -> None:
    data = patched_phdr(tiny_elf(), 2, p_flags=PF_R | PF_W | PF_X)
    assert load_elf(data).stack_executable is True


def test_pt_phdr_gives_phdr_address() -> None:
    data = patched_phdr(tiny_elf(), 2, p_type=PT_PHDR, p_vaddr=0x400040, p_offset=64,
                        p_filesz=3 * 56, p_memsz=3 * 56)
    assert load_elf(data).phdr_address == 0x400040


def test_phdr_address_none_when_headers_are_not_loaded() -> None:
    data = patched_phdr(tiny_elf(), 0, p_offset=CODE_OFFSET, p_vaddr=0x400200,
                        p_filesz=len(EXIT_42), p_memsz=len(EXIT_42))
    assert load_elf(data).phdr_address is None


def test_empty_pt_load_is_ignored() -> None:
    # Linux's elf_map() maps nothing for a zero-sized segment.
    data = patched_phdr(tiny_elf(), 2, p_type=PT_LOAD, p_vaddr=0, p_memsz=0)
    assert len(load_elf(data).segments) == 2


# --- PIE and the load bias -------------------------------------------------------

def test_static_pie_gets_the_default_bias() -> None:
    image = load_elf(tiny_elf(ET_DYN, base=0))
    check_invariants(image)
    assert image.is_pie and image.load_bias == PIE_LOAD_BIAS == 0x5555_5555_4000
    assert image.entry == PIE_LOAD_BIAS + CODE_OFFSET
    assert image.segments[0].vaddr == PIE_LOAD_BIAS
    assert image.phdr_address == PIE_LOAD_BIAS + 64
    assert image.symbols.address_of("_start") == image.entry
    assert image.symbols.symbolize(image.entry + 3) == "_start+3"


def test_static_pie_at_a_chosen_bias() -> None:
    image = load_elf(tiny_elf(ET_DYN, base=0), bias=0x10_0000)
    assert image.entry == 0x10_0200 and image.load_bias == 0x10_0000
    moved = image.with_bias(0x7000_0000_0000)
    check_invariants(moved)
    assert moved.entry == 0x7000_0000_0200
    assert moved.symbols.address_of("answer") == 0x7000_0000_1000
    assert moved.with_bias(0x10_0000) == image


def test_default_bias_honours_large_alignment() -> None:
    image = load_elf(tiny_elf(ET_DYN, base=0, align=0x20_0000))
    assert image.load_bias == PIE_LOAD_BIAS & ~0x1F_FFFF == 0x5555_5540_0000
    assert default_bias(image) == image.load_bias


def test_static_pie_at_bias_zero_is_refused() -> None:
    with pytest.raises(ElfError, match=r"segment at 0x0 is below 0x10000: load it at a "
                                       r"higher bias"):
        load_elf(tiny_elf(ET_DYN, base=0), bias=0)


def test_bias_too_high_is_refused() -> None:
    with pytest.raises(ElfError, match="beyond the end of the user address space"):
        load_elf(tiny_elf(ET_DYN, base=0), bias=USER_SPACE_END - 0x1000)


def test_et_exec_cannot_move() -> None:
    image = load_elf(tiny_elf())
    assert image.with_bias(0) is image
    with pytest.raises(ElfError, match="ET_EXEC program runs only at the addresses it was "
                                       "linked for"):
        image.with_bias(0x10_0000)
    with pytest.raises(ElfError, match="ET_EXEC"):
        load_elf(tiny_elf(), bias=0x10_0000)


def test_unaligned_bias_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="not a multiple of the page size"):
        load_elf(tiny_elf(ET_DYN, base=0), bias=0x10_0800)


# --- refusals: one wrong field each -----------------------------------------------

MALFORMED = {
    "empty": (lambda: b"", r"empty file"),
    "bad magic": (lambda: b"MZ\x90\x00" + bytes(100),
                  r"not an ELF file: it starts with b'MZ\\x90\\x00' instead of "
                  r"b'\\x7fELF'"),
    "script": (lambda: b"#!/bin/sh\necho hi\n", r"a script \('#!/bin/sh'\)"),
    "short identification": (lambda: b"\x7fELF\x02", r"truncated: 5 bytes"),
    "32-bit": (lambda: tiny_elf()[:4] + b"\x01" + tiny_elf()[5:],
               r"32-bit ELF file \(ELFCLASS32\)"),
    "unknown class": (lambda: tiny_elf()[:4] + b"\x07" + tiny_elf()[5:],
                      r"unknown ELF class 7"),
    "big-endian": (lambda: tiny_elf()[:5] + b"\x02" + tiny_elf()[6:],
                   r"big-endian ELF file \(ELFDATA2MSB\)"),
    "truncated header": (lambda: tiny_elf()[:40], r"truncated: 40 bytes, shorter than the "
                                                  r"64-byte ELF64 header"),
    "aarch64": (lambda: patched_header(tiny_elf(), e_machine=EM_AARCH64),
                r"built for EM_AARCH64, not x86-64 \(EM_X86_64\)"),
    "i386": (lambda: patched_header(tiny_elf(), e_machine=EM_386), r"built for EM_386"),
    "relocatable": (lambda: patched_header(tiny_elf(), e_type=ET_REL),
                    r"relocatable object file \(ET_REL, a \.o\); link it"),
    "core": (lambda: patched_header(tiny_elf(), e_type=ET_CORE), r"core dump \(ET_CORE\)"),
    "phentsize": (lambda: patched_header(tiny_elf(), e_phentsize=32),
                  r"program header entries are 32 bytes \(e_phentsize\), expected 56"),
    "no program headers": (lambda: patched_header(tiny_elf(), e_phnum=0),
                           r"no program headers \(e_phnum = 0\)"),
    "too many program headers": (lambda: patched_header(tiny_elf(), e_phnum=2000),
                                 r"2000 program headers \(e_phnum\) is more than Linux "
                                 r"accepts \(1170\)"),
    "program headers beyond the file": (lambda: patched_header(tiny_elf(), e_phoff=0x10000),
                                        r"truncated: the program headers end at byte "
                                        r"0x100a8 \(e_phoff 0x10000\)"),
    "truncated in the program headers": (lambda: tiny_elf()[:100],
                                         r"truncated: the program headers end at byte 0xe8"),
    "truncated in a segment": (lambda: tiny_elf()[:0x1008],
                               r"truncated: segment 1 \(PT_LOAD\) needs file bytes "
                               r"\[0x1000, 0x1010\) but the file has only 0x1008 bytes"),
    "segment beyond the file": (lambda: patched_phdr(tiny_elf(), 1, p_offset=1 << 40),
                                r"truncated: segment 1 \(PT_LOAD\)"),
    "filesz > memsz": (lambda: patched_phdr(tiny_elf(), 1, p_filesz=0x200),
                       r"PT_LOAD segment 1 at 0x401000: p_filesz 0x200 is larger than "
                       r"p_memsz 0x100"),
    "absurd size": (lambda: patched_phdr(tiny_elf(), 1, p_memsz=8 << 30),
                    r"PT_LOAD segment 1 at 0x401000: absurd size p_memsz 0x200000000 "
                    r"\(more than 4 GiB\)"),
    "beyond the user half": (lambda: patched_phdr(tiny_elf(), 1, p_vaddr=USER_SPACE_END - 0x80),
                             r"segment \[0x7fffffffef80, 0x7ffffffff080\) goes beyond the "
                             r"end of the user address space \(0x7ffffffff000, 47 bits\)"),
    "64-bit wrap-around": (lambda: patched_phdr(tiny_elf(), 1, p_vaddr=(1 << 64) - 0x80),
                           r"goes beyond the end of the user address space"),
    "below mmap_min_addr": (lambda: patched_phdr(tiny_elf(), 1, p_vaddr=0x1000),
                            r"segment at 0x1000 is below 0x10000: the lowest address a "
                            r"program may use is 0x10000 \(vm.mmap_min_addr\)"),
    "overlapping segments": (lambda: patched_phdr(tiny_elf(), 1, p_vaddr=0x400080),
                             r"PT_LOAD segments overlap: \[0x400000, 0x40020c\) and "
                             r"\[0x400080, 0x400180\)"),
    "no PT_LOAD": (lambda: patched_phdr(patched_phdr(tiny_elf(), 0, p_type=PT_NULL), 1,
                                        p_type=PT_NULL),
                   r"no loadable segment \(no PT_LOAD with a non-zero size\)"),
    "entry outside": (lambda: patched_header(tiny_elf(), e_entry=0x500000),
                      r"entry point 0x500000 \(e_entry\) is not inside any executable "
                      r"PT_LOAD segment \(\[0x400000, 0x40020c\)\)"),
    "entry in data": (lambda: patched_header(tiny_elf(), e_entry=0x401000),
                      r"entry point 0x401000 \(e_entry\) is not inside any executable"),
    "no executable segment": (lambda: patched_phdr(tiny_elf(), 0, p_flags=PF_R),
                              r"executable PT_LOAD segment \(there are none\)"),
    # PT_INTERP is checked as load_elf_binary() checks it (execve's ENOEXEC)
    "interpreter too long": (lambda: patched_phdr(tiny_elf(interpreter=b"/lib/ld.so"),
                                                  INTERP_INDEX, p_filesz=4097),
                             r"^<bytes>: PT_INTERP \(program header 3\) is 4097 bytes: an "
                             r"interpreter path has 2 to 4096 \(PATH_MAX\) bytes"),
    "interpreter empty": (lambda: tiny_elf(interpreter=b""),
                          r"PT_INTERP \(program header 3\) is 1 bytes: an interpreter path"),
    "interpreter not NUL-terminated": (
        lambda: patched_phdr(tiny_elf(interpreter=b"/lib/ld.so"), INTERP_INDEX, p_filesz=10),
        r"PT_INTERP \(program header 3\) is not NUL-terminated \(b'/lib/ld.so'"),
    "interpreter outside the file": (
        lambda: patched_phdr(tiny_elf(interpreter=b"/lib/ld.so"), INTERP_INDEX,
                             p_offset=1 << 40),
        r"truncated: segment 3 \(PT_INTERP\) needs file bytes"),
    "interpreter starts with NUL": (lambda: tiny_elf(interpreter=b"\0garbage"),
                                    r"PT_INTERP \(program header 3\) is an empty path"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_file_is_refused(case: str) -> None:
    make, message = MALFORMED[case]
    with pytest.raises(ElfError, match=message):
        load_elf(make())


def test_every_message_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "prog"
    path.write_bytes(patched_header(tiny_elf(), e_machine=EM_AARCH64))
    with pytest.raises(ElfError, match=f"^{re.escape(str(path))}: built for EM_AARCH64"):
        load_elf(path)


#: Where tiny_elf() puts its PT_INTERP header: after the two PT_LOADs and PT_GNU_STACK.
INTERP_INDEX = 3


def test_interpreter_path_is_read() -> None:
    image = load_elf(tiny_elf(interpreter=b"/lib/ld-musl-x86_64.so.1"))
    assert image.interpreter == "/lib/ld-musl-x86_64.so.1"


def test_interpreter_path_is_bytes_as_the_kernel_reads_them() -> None:
    """Not UTF-8 is still a path (os.fsdecode keeps the bytes)."""
    image = load_elf(tiny_elf(interpreter=b"/lib/\xff\xfe"))
    assert os.fsencode(image.interpreter) == b"/lib/\xff\xfe"


@pytest.mark.parametrize("target, message", [
    ("missing", r"cannot read program .*missing: No such file or directory"),
    ("directory", r"cannot read program .*: Is a directory"),
    ("/dev/null", r"/dev/null: not a regular file \(execve would fail with EACCES\)"),
])
def test_unreadable_files(tmp_path: Path, target: str, message: str) -> None:
    path = {"missing": tmp_path / "missing", "directory": tmp_path}.get(target, Path(target))
    with pytest.raises(ElfError, match=message):
        load_elf(path)


def test_damaged_section_table_only_loses_the_symbols() -> None:
    # The kernel never reads sections: a program with a broken section table
    # runs, so minikvm loads it too, without symbols, and says why.
    data = patched_header(tiny_elf(), e_shoff=1 << 40)
    image = load_elf(data)
    check_invariants(image)
    assert len(image.symbols) == 0 and image.symbols.symbolize(image.entry) is None
    assert "malformed" in image.symbols.description


def test_stripped_program_has_no_symbols() -> None:
    image = load_elf(patched_header(tiny_elf(), e_shoff=0, e_shnum=0, e_shstrndx=0))
    assert len(image.symbols) == 0
    assert image.symbols.description == "no .symtab: the program is stripped"


# --- fuzzing: whatever the bytes, ElfError or a valid image ---------------------------

INTERESTING_VALUES = [0, 1, 0x38, 0x40, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 47,
                      (1 << 63), (1 << 64) - 1]


def mutations(data: bytes, count: int, seed: int, hot_size: int) -> list[bytes]:
    """*count* damaged copies of *data*: random bytes flipped (mostly in the first
    *hot_size* bytes, where the headers are), fields set to boundary values,
    truncations, and slices duplicated over other offsets."""
    rng = random.Random(seed)
    results = []
    for _ in range(count):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            kind = rng.randrange(5)
            limit = hot_size if rng.random() < 0.8 else len(damaged)
            position = rng.randrange(max(1, min(limit, len(damaged))))
            if kind == 0:
                damaged[position] = rng.randrange(256)
            elif kind == 1 and position + 8 <= len(damaged):
                value = rng.choice(INTERESTING_VALUES)
                width = rng.choice([2, 4, 8])
                damaged[position:position + width] = (value % (1 << 8 * width)).to_bytes(
                    width, "little")
            elif kind == 2:
                del damaged[rng.randrange(len(damaged) + 1):]
            elif kind == 3:
                damaged[position] ^= 1 << rng.randrange(8)
            else:
                source = rng.randrange(max(1, len(damaged)))
                chunk = damaged[source:source + rng.randint(1, 64)]
                damaged[position:position + len(chunk)] = chunk
            if not damaged:
                break
        results.append(bytes(damaged))
    return results


def fuzz(data: bytes, count: int, seed: int, hot_size: int) -> tuple[int, int]:
    loaded = refused = 0
    for damaged in mutations(data, count, seed, hot_size):
        try:
            image = load_elf(damaged)
        except ElfError as error:
            assert str(error), "an ElfError must say what is wrong"
            refused += 1
        else:
            check_invariants(image)
            loaded += 1
    return loaded, refused


def test_fuzz_tiny_elf() -> None:
    loaded, refused = fuzz(tiny_elf(), count=3000, seed=20240601, hot_size=0x200)
    assert loaded > 100 and refused > 100      # both paths were exercised


def test_fuzz_tiny_static_pie() -> None:
    loaded, refused = fuzz(tiny_elf(ET_DYN, base=0), count=1000, seed=7, hot_size=0x200)
    assert loaded > 50 and refused > 50


def test_fuzz_real_program() -> None:
    variant = "musl-static" if "musl-static" in available_variants() else "glibc-static"
    data = program("hello", variant).read_bytes()
    loaded, refused = fuzz(data, count=300 if variant == "musl-static" else 60,
                           seed=1234, hot_size=0x400)
    assert loaded and refused


# --- SymbolTable on its own -----------------------------------------------------------

def test_symbol_aliases_prefer_the_plain_name() -> None:
    table = SymbolTable([
        Symbol("__libc_malloc", 0x1000, 0x40, "function", "global"),
        Symbol("malloc", 0x1000, 0x40, "function", "local"),
        Symbol("__malloc", 0x1000, 0x40, "function", "global"),
        Symbol("free", 0x1040, 0x20, "function", "weak"),
    ], "test")
    assert table.symbolize(0x1010) == "malloc+16"
    assert table.symbolize(0x1040) == "free"
    assert table.symbolize(0x1060) is None
    assert table.address_of("__libc_malloc") == 0x1000
    assert table.lookup(0x1041) == (Symbol("free", 0x1040, 0x20, "function", "weak"), 1)
    assert [s.name for s in table.shifted(0x100)][:1] == ["malloc"]
    assert table.shifted(0x100).symbolize(0x1110) == "malloc+16"


def test_empty_symbol_table() -> None:
    table = SymbolTable(description="stripped")
    assert len(table) == 0 and table.symbolize(0x401000) is None
    with pytest.raises(KeyError):
        table.address_of("main")


# --- real programs -----------------------------------------------------------------

VARIANTS = ("glibc-static", "glibc-static-pie", "musl-static")


@functools.cache
def load_program(name: str, variant: str) -> ElfImage:
    return load_elf(program(name, variant))


def readelf_loads(path: Path) -> list[tuple[int, int, int, int, str]]:
    """(offset, vaddr, filesz, memsz, flags) of each PT_LOAD, as readelf sees them."""
    output = subprocess.run(["readelf", "-lW", str(path)], capture_output=True, text=True,
                            check=True).stdout
    loads = []
    for line in output.splitlines():
        match = re.match(r"\s*LOAD\s+(0x\w+)\s+(0x\w+)\s+0x\w+\s+(0x\w+)\s+(0x\w+)\s+"
                         r"([RWE ]+?)\s+0x\w+$", line)
        if match:
            offset, vaddr, filesz, memsz = (int(match[i], 16) for i in range(1, 5))
            if memsz:
                loads.append((offset, vaddr, filesz, memsz, match[5].replace(" ", "")))
    return loads


def memory_at(image: ElfImage, address: int, size: int) -> bytes:
    """*size* bytes at *address* once the segments are loaded."""
    segment = image.segment_containing(address)
    assert segment is not None and segment.contains(address + size - 1)
    start = address - segment.vaddr
    loaded = segment.data + bytes(segment.memsz - segment.filesz)
    return loaded[start:start + size]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", PROGRAMS)
def test_real_program_loads(name: str, variant: str) -> None:
    path = program(name, variant)
    image = load_program(name, variant)
    check_invariants(image)
    if variant == "glibc-static-pie":
        assert image.elf_type == "ET_DYN" and image.load_bias == PIE_LOAD_BIAS
    else:
        assert image.elf_type == "ET_EXEC" and image.load_bias == 0
    permissions = [segment.permissions for segment in image.segments]
    assert "r-x" in permissions and "rw-" in permissions
    assert not any(s.writable and s.executable for s in image.segments)
    assert image.stack_executable is False
    raw = path.read_bytes()
    for segment in image.segments:
        assert segment.data == raw[segment.offset:segment.offset + segment.filesz]
    # AT_PHDR must point at a copy of the file's program headers.
    e_phoff = EHDR.unpack_from(raw)[EHDR_FIELDS.index("e_phoff")]
    headers = raw[e_phoff:e_phoff + image.phnum * image.phent]
    assert image.phdr_address is not None
    assert memory_at(image, image.phdr_address, len(headers)) == headers
    if variant.startswith("glibc"):
        assert image.tls is not None and image.segment_containing(image.tls.vaddr)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", PROGRAMS)
def test_real_program_symbols(name: str, variant: str) -> None:
    image = load_program(name, variant)
    symbols = image.symbols
    main = symbols.address_of("main")
    assert image.segment_containing(main).executable
    assert symbols.symbolize(main) == "main"
    assert symbols.symbolize(main + 5) == "main+5"
    assert symbols.symbolize(image.entry) == "_start"


@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf (binutils) not found")
@pytest.mark.parametrize("variant", VARIANTS)
def test_segments_match_readelf(variant: str) -> None:
    path = program("args", variant)
    image = load_program("args", variant)
    ours = [(s.offset, s.vaddr - image.load_bias, s.filesz, s.memsz,
             ("R" if s.readable else "") + ("W" if s.writable else "") +
             ("E" if s.executable else "")) for s in image.segments]
    assert ours == readelf_loads(path)


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm (binutils) not found")
@pytest.mark.parametrize("variant", VARIANTS)
def test_symbols_match_nm(variant: str) -> None:
    path = program("args", variant)
    image = load_program("args", variant)
    output = subprocess.run(["nm", str(path)], capture_output=True, text=True,
                            check=True).stdout
    nm = {fields[2]: int(fields[0], 16) for fields in map(str.split, output.splitlines())
          if len(fields) == 3 and fields[1] in "TtDdBbRrWwVv"}
    for name in ("main", "_start", "malloc", "qsort", "environ"):
        assert image.symbols.address_of(name) == nm[name] + image.load_bias, name


def test_dynamically_linked_program_names_its_interpreter() -> None:
    path = program("hello", "glibc-dynamic")
    image = load_elf(path)
    assert image.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert image.is_pie and image.load_bias == PIE_LOAD_BIAS


BUSYBOX = Path("/bin/busybox")


@pytest.mark.skipif(not BUSYBOX.exists(), reason="/bin/busybox not installed "
                                                  "(apt-get install busybox-static)")
def test_busybox_loads() -> None:
    image = load_elf(BUSYBOX)
    if image.interpreter is not None:
        pytest.skip("/bin/busybox is dynamically linked: install busybox-static")
    check_invariants(image)
    assert any(s.executable for s in image.segments)
    assert image.phdr_address is not None
    if len(image.symbols) == 0:         # Debian's busybox is stripped
        assert "stripped" in image.symbols.description
        assert image.symbols.symbolize(image.entry) is None


def test_load_segment_helpers() -> None:
    segment = LoadSegment(vaddr=0x1000, memsz=0x20, filesz=0x10, offset=0, data=bytes(16),
                          readable=True, writable=False, executable=True, align=0x1000)
    assert segment.end == 0x1020 and segment.permissions == "r-x"
    assert segment.contains(0x101F) and not segment.contains(0x1020)
