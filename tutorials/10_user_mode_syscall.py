"""Step 10 — the syscall path: from a user-mode ``syscall`` to Python and back.

A Linux program asks the kernel for everything with the ``syscall``
instruction: the number in RAX, up to six arguments in RDI, RSI, RDX, R10,
R8 and R9, the result back in RAX.  The CPU saves the return address in
RCX and RFLAGS in R11, and jumps to the address in the LSTAR register.

minikvm's guest has no kernel there — only a two-instruction stub
(``minikvm.cpu.guestcode.syscall_entry``): ``out %al,$0xe0``, which exits to
the host, and ``sysretq``.  ``Machine.run`` sees the exit on port 0xE0 with
RIP right after the ``out``, hands the synced registers to a Python
handler, and resumes the guest after its ``syscall`` with the handler's
RAX.

How the guest gets back depends on the host, and this step shows which
one you have by the CS register at the exit (its low bits are the CPL):

* hardware VMX/SVM: ``syscall`` entered ring 0 (CS = 0x8) and the stub's
  ``sysretq`` returns;
* PVM: ``syscall`` stayed at CPL 3 (CS = 0x23) — the ``out`` is allowed
  there only because the TSS I/O bitmap opens port 0xE0 — and PVM does not
  emulate ``sysretq``, so the host sets RIP = RCX and RFLAGS = R11 itself.

Run it:  python tutorials/10_user_mode_syscall.py
"""

from __future__ import annotations

import struct
import sys

from minikvm import ioctl as k
from minikvm.cpu.layout import PAGE_SIZE, STACK_TOP, SYSCALL_STUB_ADDRESS
from minikvm.machine.machine import Machine
from minikvm.machine.mm import PROT_EXEC, PROT_READ, PROT_WRITE

MEMORY_SIZE = 16 << 20
CODE_ADDRESS = 0x40_0000
NR_GETPID = 39           # asm/unistd_64.h
NR_EXIT = 60
ARGUMENTS = {"rdi": 0x11, "rsi": 0x22, "rdx": 0x33, "r10": 0x44, "r8": 0x55, "r9": 0x66}
PID = 1000               # what our "kernel" answers to getpid
SELECTOR_RPL_MASK = 3    # the low two bits of CS: the current privilege level


def movabs(register: int, rex: int, value: int) -> bytes:
    """``movabs $value,%reg``: REX.W (+B for r8-r15), B8+r, imm64."""
    return bytes([rex, 0xB8 + register]) + struct.pack("<Q", value)


# --- step: program ---
REGISTER = {"rax": (0, 0x48), "rdx": (2, 0x48), "rsi": (6, 0x48), "rdi": (7, 0x48),
            "r8": (0, 0x49), "r9": (1, 0x49), "r10": (2, 0x49)}
CODE = b"".join(movabs(*REGISTER[name], value) for name, value in ARGUMENTS.items())
CODE += movabs(*REGISTER["rax"], NR_GETPID)   # movabs $39,%rax
CODE += bytes([0x0F, 0x05])                   # syscall         -> getpid(0x11, 0x22, ...)
RETURN_ADDRESS = CODE_ADDRESS + len(CODE)
CODE += bytes([0x48, 0x89, 0xC7])             # mov  %rax,%rdi  (the pid it got)
CODE += movabs(*REGISTER["rax"], NR_EXIT)     # movabs $60,%rax
CODE += bytes([0x0F, 0x05])                   # syscall         -> exit(pid)
# --- end: program ---


class Exited(Exception):
    """The guest called exit: ends Machine.run."""

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
        seen: dict[str, int] = {}

        # --- step: handler ---
        def on_syscall(regs: k.kvm_regs) -> None:
            cs = machine.vcpu.synced_sregs.cs
            args = ", ".join(f"{getattr(regs, name):#x}" for name in ARGUMENTS)
            print(f"exit on port 0xe0 at rip={regs.rip:#x} (the stub at "
                  f"{SYSCALL_STUB_ADDRESS:#x}, after its out)")
            print(f"  syscall {regs.rax}({args})")
            print(f"  return address in RCX = {regs.rcx:#x} (RFLAGS is saved in R11)")
            print(f"  CS = {cs.selector:#x}: CPL {cs.selector & SELECTOR_RPL_MASK} at the exit")
            if regs.rax == NR_EXIT:
                raise Exited(regs.rdi)
            seen.update(rcx=regs.rcx, cpl=cs.selector & SELECTOR_RPL_MASK)
            regs.rax = PID
            print(f"  -> returns {PID}")
        # --- end: handler ---

        # --- step: run ---
        try:
            stop = machine.run(on_syscall, timeout=10)
            print(f"wrong result: the guest stopped with {stop.message}")
            return 1
        except Exited as done:
            status = done.status
        # --- end: run ---
    # --- step: check ---
    if seen["cpl"] == 3:
        print("syscall stayed at CPL 3 (PVM): the host returned the guest to RCX itself")
    else:
        print("syscall entered ring 0 (VMX/SVM): the stub's sysretq returned the guest")
    if seen["rcx"] != RETURN_ADDRESS:
        print(f"wrong result: RCX was {seen['rcx']:#x}, expected {RETURN_ADDRESS:#x}")
        return 1
    if status != PID:
        print(f"wrong result: the guest exited with {status}, expected {PID}")
        return 1
    print(f"the guest got {PID} back in RAX and passed it to exit: exit({status})")
    return 0
    # --- end: check ---


if __name__ == "__main__":
    sys.exit(main())
