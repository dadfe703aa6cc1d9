"""The guest "kernel" of ``minikvm/cpu/guestcode.py``: bytes that say what they are.

Each stub lists its instructions as (encoding, objdump text).  Here binutils'
``objdump`` disassembles the encodings on their own — the syscall entry, the
call-return stub, then every exception stub separately — and each
instruction it prints must match the documented bytes *and* mnemonic with
operands.  So the comment beside a byte can never lie.  The pure layout
checks (stub size, the port per vector, the jump target) need no objdump.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from minikvm.cpu.guestcode import (CALL_RETURN_OFFSET, EXCEPTION_STUB_SIZE, OUT_IMM8_AL,
                                   SYSCALL_INSTRUCTION, patched_syscall_site,
                                   SYSCALL_EXIT_OFFSET, Instruction, assemble, call_return,
                                   exception_stub, exception_stubs, syscall_entry)
from minikvm.cpu.layout import EXCEPTION_PORT_BASE, PATCHED_SYSCALL_PORT, SYSCALL_PORT
from minikvm.process import vdso_code
from minikvm.x86 import NUM_EXCEPTION_VECTORS, VECTORS_WITH_ERROR_CODE

OBJDUMP = shutil.which("objdump")
needs_objdump = pytest.mark.skipif(
    OBJDUMP is None, reason="objdump (GNU binutils) is not installed, so the stubs cannot be "
                            "disassembled: apt-get install binutils")
#: ``   0:\te6 e0                \tout    %al,$0xe0`` → offset, hex bytes, text.
OBJDUMP_LINE = re.compile(r"^\s*([0-9a-f]+):\t([0-9a-f ]+?)\s*\t(.*)$")
HLT = 0xF4


def disassemble(code: bytes, tmp_path: Path) -> list[tuple[int, bytes, str]]:
    """objdump's reading of *code* as raw x86-64: (offset, bytes, text) per
    instruction, text with runs of blanks collapsed."""
    path = tmp_path / "code.bin"
    path.write_bytes(code)
    # --insn-width: a long instruction on one line, not its tail on the next.
    result = subprocess.run([OBJDUMP, "-D", "--insn-width=15", "-b", "binary", "-m",
                             "i386:x86-64", str(path)],
                            capture_output=True, text=True, timeout=30, check=True)
    found = []
    for line in result.stdout.splitlines():
        if match := OBJDUMP_LINE.match(line):
            offset, hex_bytes, text = match.groups()
            found.append((int(offset, 16), bytes.fromhex(hex_bytes), normalise(text)))
    return found


def normalise(text: str) -> str:
    return " ".join(text.split())


def documented(instructions: list[Instruction]) -> list[tuple[int, bytes, str]]:
    """The same triples from the stub's own listing."""
    result, offset = [], 0
    for code, text in instructions:
        result.append((offset, code, normalise(text)))
        offset += len(code)
    return result


@needs_objdump
def test_syscall_entry_disassembles_as_documented(tmp_path: Path) -> None:
    stub = syscall_entry()
    assert disassemble(assemble(stub), tmp_path) == documented(stub)


@needs_objdump
def test_patched_syscall_site_disassembles_as_documented(tmp_path: Path) -> None:
    site = patched_syscall_site()
    assert disassemble(assemble(site), tmp_path) == documented(site)


def test_a_patched_site_is_as_long_as_the_syscall_it_replaces() -> None:
    assert len(assemble(patched_syscall_site())) == len(SYSCALL_INSTRUCTION) == 2


@needs_objdump
def test_call_return_disassembles_as_documented(tmp_path: Path) -> None:
    stub = call_return()
    assert disassemble(assemble(stub), tmp_path) == documented(stub)


@needs_objdump
@pytest.mark.parametrize("vector", range(NUM_EXCEPTION_VECTORS))
def test_exception_stub_disassembles_as_documented(vector: int, tmp_path: Path) -> None:
    stub = exception_stub(vector)
    assert disassemble(assemble(stub), tmp_path) == documented(stub)


@needs_objdump
def test_vdso_code_disassembles_as_documented(tmp_path: Path) -> None:
    """All the vDSO's routines as one blob: their jump and call targets are
    offsets from its start, as the listings write them."""
    listing = vdso_code.read_clock() + [i for f in vdso_code.FUNCTIONS.values() for i in f()]
    assert disassemble(vdso_code.code(), tmp_path) == documented(listing)


# --- layout: no objdump needed --------------------------------------------------------

def test_syscall_exit_offset_is_after_the_out() -> None:
    """The RIP the host sees at a syscall exit: right after the stub's ``out``."""
    first_code, _ = syscall_entry()[0]
    assert first_code == bytes([OUT_IMM8_AL, SYSCALL_PORT])
    assert SYSCALL_EXIT_OFFSET == len(first_code)


@pytest.mark.parametrize("vector", range(NUM_EXCEPTION_VECTORS))
def test_exception_stub_shape(vector: int) -> None:
    stub = exception_stub(vector)
    code = assemble(stub)
    assert len(code) == EXCEPTION_STUB_SIZE
    # a pushed zero exactly when the CPU pushes no error code
    pushes_zero = stub[0][0] == bytes([0x6A, 0x00])
    assert pushes_zero == (vector not in VECTORS_WITH_ERROR_CODE)
    # the out names the vector: port 0xC0 + v
    assert stub[1][0] == bytes([OUT_IMM8_AL, EXCEPTION_PORT_BASE + vector])
    # the jmp lands on the hlt
    jump_offset = len(assemble(stub[:3]))
    target = jump_offset + 2 + int.from_bytes(stub[3][0][1:], "little", signed=True)
    assert code[target] == HLT


def test_call_return_fits_after_the_syscall_stub() -> None:
    """Both live in the one user-executable page; they must not overlap."""
    assert len(assemble(syscall_entry())) <= CALL_RETURN_OFFSET
    assert CALL_RETURN_OFFSET + len(assemble(call_return())) <= 0x1000


def test_exception_stubs_are_back_to_back() -> None:
    """The IDT gate for vector v points at stubs + v * EXCEPTION_STUB_SIZE."""
    code = exception_stubs()
    assert len(code) == NUM_EXCEPTION_VECTORS * EXCEPTION_STUB_SIZE
    for vector in range(NUM_EXCEPTION_VECTORS):
        start = vector * EXCEPTION_STUB_SIZE
        assert code[start:start + EXCEPTION_STUB_SIZE] == assemble(exception_stub(vector))


def test_ports_do_not_collide() -> None:
    """No exception port is the syscall port, so an exit says what it is."""
    exception_ports = range(EXCEPTION_PORT_BASE, EXCEPTION_PORT_BASE + NUM_EXCEPTION_VECTORS)
    assert SYSCALL_PORT not in exception_ports
    assert PATCHED_SYSCALL_PORT not in exception_ports and PATCHED_SYSCALL_PORT != SYSCALL_PORT


def test_vdso_functions_reach_the_data_page() -> None:
    """Each exported function starts with ``lea disp(%rip),%r8``: the data page
    one page below the image, wherever the function sits in the code."""
    for name, (offset, _) in vdso_code.layout().items():
        if name == "read_clock":
            continue
        first = vdso_code.FUNCTIONS[name]()[0][0]
        assert first[:3] == bytes([0x4C, 0x8D, 0x05]), name      # lea disp32(%rip),%r8
        displacement = int.from_bytes(first[3:7], "little", signed=True)
        assert offset + len(first) + displacement == vdso_code.DATA_PAGE_FROM_CODE, name


def test_vdso_code_uses_the_data_page_layout() -> None:
    """The displacements the code reads are the documented field offsets."""
    import struct
    code = vdso_code.assemble(vdso_code.read_clock())
    assert bytes([0x49, 0x2B, 0x40, vdso_code.DATA_TSC_BASE]) in code     # sub tsc_base
    assert bytes([0x49, 0xF7, 0x60, vdso_code.DATA_MULT]) in code         # mulq mult
    assert bytes([0x41, 0x8B, 0x48, vdso_code.DATA_SHIFT]) in code        # mov shift,%ecx
    clock = vdso_code.assemble(vdso_code.clock_gettime())
    for field in (vdso_code.DATA_REALTIME, vdso_code.DATA_MONOTONIC, vdso_code.DATA_BOOTTIME):
        assert bytes([0x41, 0xB9, field, 0, 0, 0]) in clock               # mov $field,%r9d
    assert bytes([0x41, 0x83, 0x78, vdso_code.DATA_MODE, 0]) in clock     # cmpl $0,mode
    assert struct.calcsize(vdso_code.DATA_FORMAT) == vdso_code.DATA_NODE + 4
