"""Layer 2 — the guest "kernel": a few instructions, written as bytes.

minikvm's guest has no kernel of its own.  Two tiny pieces of machine code
stand in for one, and both do the same thing: ``out`` to a port, which
makes KVM_RUN return to the host, where Python does the real work.

Each instruction is listed with the mnemonic beside it, as objdump prints
it (AT&T syntax); ``tests/test_guestcode.py`` disassembles the bytes with
binutils' objdump and checks every mnemonic.

The syscall entry (MSR_LSTAR points here)::

    out  %al,$0xe0      ; exit to the host, which emulates the system call
    sysretq             ; back to user mode at RCX with RFLAGS = R11

On hosts with hardware virtualization, ``syscall`` enters CPL 0 and the
``sysretq`` returns.  On PVM hosts ``syscall`` stays at CPL 3 and
``sysretq`` is not emulated, so the host performs the return itself
(RIP = RCX, RFLAGS = R11) before re-entering; ``machine.py`` tells the two
apart by the CPL at the exit.

The call-return stub, in the same user-executable page at offset
:data:`CALL_RETURN_OFFSET` (``0x4010``).  When the host calls a function of
the guest (:meth:`minikvm.snapshot.fork.Fork.call`) it pushes this address as the
return address; the function's ``ret`` lands here and the stub hands RAX to
the host through a minikvm-specific system call::

    mov  %rax,%rdi      ; the function's result becomes the first argument
    mov  $0x1f6,%eax    ; MINIKVM_SYS_CALL_RETURN (502, unused by Linux)
    syscall             ; the host sees an ordinary system call
    ud2                 ; never reached: the host does not resume it

A patched system-call site (:mod:`minikvm.machine.syscall_sites`): the
program's own ``syscall`` (``0f 05``), two bytes, rewritten in place as an
``out`` of the same length that exits on its own port::

    out  %al,$0xe1      ; exit to the host straight from the program's code

One exception stub per vector (the IDT points vector *v* at stub *v*)::

    push $0x0           ; (only for vectors without a CPU error code) so the
                        ; frame on the IST stack always has the same shape
    out  %al,$0xc0+v    ; exit to the host: the port number is the vector
    hlt                 ; never resumed; a safe place to stop
    jmp  0x4            ; ... and stay there (stub offset 4 is the hlt)
"""

from __future__ import annotations

from minikvm.cpu.layout import EXCEPTION_PORT_BASE, PATCHED_SYSCALL_PORT, SYSCALL_PORT
from minikvm.x86 import NUM_EXCEPTION_VECTORS, VECTORS_WITH_ERROR_CODE

Instruction = tuple[bytes, str]  # (encoding, objdump mnemonic with operands)

OUT_IMM8_AL = 0xE6   # OUT imm8, AL (Intel SDM Vol. 2B "OUT")

#: Size of each exception stub; the IDT gate for vector v points at v * this.
EXCEPTION_STUB_SIZE = 8


def syscall_entry() -> list[Instruction]:
    """The code at LSTAR."""
    return [
        (bytes([OUT_IMM8_AL, SYSCALL_PORT]), f"out    %al,${SYSCALL_PORT:#x}"),
        (bytes([0x48, 0x0F, 0x07]), "sysretq"),
    ]


#: The encoding of ``syscall`` (Intel SDM Vol. 2B "SYSCALL"), which a
#: patched site replaces.
SYSCALL_INSTRUCTION = bytes([0x0F, 0x05])


def patched_syscall_site() -> list[Instruction]:
    """What a patched site holds instead of ``syscall``: the same length."""
    return [(bytes([OUT_IMM8_AL, PATCHED_SYSCALL_PORT]), f"out    %al,${PATCHED_SYSCALL_PORT:#x}")]


#: Offset of the instruction after the syscall stub's ``out``: the RIP the
#: host sees when a system call exits (anything else on the syscall port is
#: not the stub).
SYSCALL_EXIT_OFFSET = 2


#: Where the call-return stub starts, from the syscall stub's address (same page).
CALL_RETURN_OFFSET = 0x10
#: The minikvm-specific system call the call-return stub makes.  Linux
#: x86-64 numbers stop well below 500 (``__NR_syscalls`` is ~460), so
#: 500-503 are free for minikvm's own calls (see :mod:`minikvm.syscalls.requests`).
MINIKVM_SYS_CALL_RETURN = 502
MOV_IMM32_EAX = 0xB8  # MOV r32, imm32 with the register in the opcode (Intel SDM Vol. 2B "MOV")


def call_return() -> list[Instruction]:
    """The code a host-called guest function returns to."""
    return [
        (bytes([0x48, 0x89, 0xC7]), "mov    %rax,%rdi"),
        (bytes([MOV_IMM32_EAX]) + MINIKVM_SYS_CALL_RETURN.to_bytes(4, "little"),
         f"mov    ${MINIKVM_SYS_CALL_RETURN:#x},%eax"),
        (bytes([0x0F, 0x05]), "syscall"),
        (bytes([0x0F, 0x0B]), "ud2"),
    ]


def exception_stub(vector: int) -> list[Instruction]:
    """The stub for one vector, padded to :data:`EXCEPTION_STUB_SIZE`."""
    if vector in VECTORS_WITH_ERROR_CODE:
        first = (bytes([0x66, 0x90]), "xchg   %ax,%ax")  # a 2-byte no-op: the CPU pushed a code
    else:
        first = (bytes([0x6A, 0x00]), "push   $0x0")
    port = EXCEPTION_PORT_BASE + vector
    return [
        first,
        (bytes([OUT_IMM8_AL, port]), f"out    %al,${port:#x}"),
        (bytes([0xF4]), "hlt"),
        (bytes([0xEB, 0xFD]), "jmp    0x4"),  # rel8 = -3: back to the hlt at stub offset 4
        (bytes([0x90]), "nop"),
    ]


def assemble(instructions: list[Instruction]) -> bytes:
    """Concatenate the encodings."""
    return b"".join(code for code, _ in instructions)


def exception_stubs() -> bytes:
    """All 32 exception stubs, back to back."""
    code = b"".join(assemble(exception_stub(v)) for v in range(NUM_EXCEPTION_VECTORS))
    assert len(code) == NUM_EXCEPTION_VECTORS * EXCEPTION_STUB_SIZE
    return code
