"""Step 11 — the first real system calls: write and exit_group.

The "hello" of every Linux program, with no C library: put the
arguments in registers and execute ``syscall``::

    write(1, "hello\\n", 6)      rax = 1,   rdi = 1, rsi = the bytes, rdx = 6
    exit_group(0)               rax = 231, rdi = 0

The host side is a table from system call number to a Python function —
the same shape as minikvm's ``syscalls`` package, in ten lines.  ``write``
is the first handler that follows a *guest pointer*: it copies the bytes
in with ``mm.read``, which translates through the memory manager's own
record of the mappings and raises EFAULT for any address the program has
not mapped.  The program's third call passes a bad pointer on purpose.

Run it:  python tutorials/11_first_syscalls.py
"""

from __future__ import annotations

import errno
import os
import struct
import sys
from typing import Callable

from minikvm import ioctl as k
from minikvm.errors import SyscallError
from minikvm.cpu.layout import PAGE_SIZE, STACK_TOP
from minikvm.machine.machine import Machine
from minikvm.machine.mm import PROT_EXEC, PROT_READ, PROT_WRITE

MEMORY_SIZE = 16 << 20
CODE_ADDRESS = 0x40_0000
NR_WRITE = 1             # asm/unistd_64.h
NR_EXIT_GROUP = 231
STDOUT = 1
MESSAGE = b"hello\n"
BAD_POINTER = 0x10       # below the lowest address a program may map


def mov_imm32(opcode: int, value: int) -> bytes:
    """``mov $value,%r32`` (B8+r id); writing a 32-bit register clears the top half."""
    return bytes([opcode]) + struct.pack("<I", value)


# --- step: program ---
MOV_EAX, MOV_EDX, MOV_ESI, MOV_EDI = 0xB8, 0xBA, 0xBE, 0xBF
SYSCALL = bytes([0x0F, 0x05])
LEA_RSI_RIP = bytes([0x48, 0x8D, 0x35])        # lea  disp32(%rip),%rsi
CODE = (mov_imm32(MOV_EAX, NR_WRITE)            # mov  $1,%eax
        + mov_imm32(MOV_EDI, STDOUT)            # mov  $1,%edi
        + LEA_RSI_RIP + b"MSG?"                 # lea  message(%rip),%rsi   (patched below)
        + mov_imm32(MOV_EDX, len(MESSAGE))      # mov  $6,%edx
        + SYSCALL                               # syscall  -> write(1, "hello\n", 6)
        + mov_imm32(MOV_EAX, NR_WRITE)          # mov  $1,%eax
        + mov_imm32(MOV_ESI, BAD_POINTER)       # mov  $0x10,%esi
        + SYSCALL                               # syscall  -> write(1, 0x10, 6): EFAULT
        + mov_imm32(MOV_EAX, NR_EXIT_GROUP)     # mov  $231,%eax
        + bytes([0x31, 0xFF])                   # xor  %edi,%edi
        + SYSCALL)                              # syscall  -> exit_group(0)
# lea's displacement counts from the end of the lea; the message follows the code.
LEA_END = CODE.index(b"MSG?") + 4
CODE = CODE.replace(b"MSG?", struct.pack("<i", len(CODE) - LEA_END)) + MESSAGE
# --- end: program ---


class ExitGroup(Exception):
    """exit_group ends the run with a status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def main() -> int:
    with Machine(MEMORY_SIZE) as machine:
        mm = machine.mm
        mm.map(CODE_ADDRESS, PAGE_SIZE, PROT_READ | PROT_EXEC, "code")
        machine.memory.write(mm.find(CODE_ADDRESS).physical(CODE_ADDRESS), CODE)
        mm.map(STACK_TOP - PAGE_SIZE, PAGE_SIZE, PROT_READ | PROT_WRITE, "[stack]")
        machine.set_entry(CODE_ADDRESS, STACK_TOP)
        written = bytearray()

        # --- step: handlers ---
        def sys_write(fd: int, buffer: int, count: int) -> int:
            if fd != STDOUT:
                raise SyscallError(errno.EBADF)
            data = mm.read(buffer, count)    # EFAULT unless every byte is mapped
            sys.stdout.flush()
            os.write(STDOUT, data)           # straight through, like a pass-through fd
            written.extend(data)
            return len(data)

        def sys_exit_group(status: int) -> int:
            raise ExitGroup(status)

        # number -> (name, handler, how many arguments it takes)
        handlers: dict[int, tuple[str, Callable[..., int], int]] = {
            NR_WRITE: ("write", sys_write, 3),
            NR_EXIT_GROUP: ("exit_group", sys_exit_group, 1),
        }
        # --- end: handlers ---

        # --- step: dispatch ---
        def on_syscall(regs: k.kvm_regs) -> None:
            name, handler, count = handlers.get(regs.rax, (f"syscall_{regs.rax}", None, 0))
            args = (regs.rdi, regs.rsi, regs.rdx)[:count]
            shown = f"{name}({', '.join(hex(a) if a > 9 else str(a) for a in args)})"
            try:
                if handler is None:
                    raise SyscallError(errno.ENOSYS)
                result = handler(*args)
                print(f"  {shown} = {result}", flush=True)
            except SyscallError as error:
                print(f"  {shown} = -1 {errno.errorcode[error.errno]}", flush=True)
                result = -error.errno
            except ExitGroup:
                print(f"  {shown} = ?", flush=True)
                raise
            regs.rax = result & 0xFFFF_FFFF_FFFF_FFFF  # -errno as the guest reads it
        # --- end: dispatch ---

        try:
            stop = machine.run(on_syscall, timeout=10)
            print(f"wrong result: the guest stopped with {stop.message}")
            return 1
        except ExitGroup as done:
            status = done.status
    if bytes(written) != MESSAGE or status != 0:
        print(f"wrong result: wrote {bytes(written)!r} and exited {status}, "
              f"expected {MESSAGE!r} and 0")
        return 1
    print(f"the program wrote {len(written)} bytes and exited with status {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
