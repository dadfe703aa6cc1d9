"""Step 09 — a machine: user mode, and what happens when a program faults.

Step 08 built the tables a user-mode CPU needs as bytes.
``minikvm.machine.machine.Machine`` puts them to work: it creates a VM and
its guest memory, writes step 08's GDT, IDT, TSS and stubs into the
kernel area of ``minikvm.cpu.layout``, maps that area for CPL 0 only in
page tables owned by a memory manager (``minikvm.machine.mm``), and loads
a vCPU in 64-bit user mode: CS = the user code segment, TR = the TSS,
LSTAR = the syscall stub.

This step checks that the machine's kernel area holds exactly the bytes
of step 08, prints the registers it loaded, then boots three tiny
programs that fault — an invalid opcode (#UD), a privileged instruction
(#GP), a write to the GDT (#PF) — and prints the crash report minikvm
builds from the frame the CPU pushed on the IST stack
(``minikvm.machine.crash``).

Run it:  python tutorials/09_exceptions.py
"""

from __future__ import annotations

import sys

from minikvm import x86
from minikvm.cpu.gdt import build_long_mode_gdt
from minikvm.cpu.guestcode import (EXCEPTION_STUB_SIZE, assemble, exception_stubs,
                                   syscall_entry)
from minikvm.cpu.idt import Gate, build_idt
from minikvm.cpu.layout import (EXCEPTION_STUBS_ADDRESS, GDT_ADDRESS, IDT_ADDRESS,
                                IST_STACK_TOP, PAGE_SIZE, PATCHED_SYSCALL_PORT, STACK_TOP,
                                SYSCALL_PORT, SYSCALL_STUB_ADDRESS, TSS_ADDRESS)
from minikvm.cpu.segments import KERNEL_CODE64
from minikvm.cpu.tss import Tss
from minikvm.machine.crash import CrashReport
from minikvm.machine.machine import Machine
from minikvm.machine.mm import PROT_EXEC, PROT_READ, PROT_WRITE

MEMORY_SIZE = 16 << 20
CODE_ADDRESS = 0x40_0000

# --- step: programs ---
PROGRAMS = {
    "ud2": (bytes([0x0F, 0x0B]), "SIGILL"),                # ud2: "undefined instruction"
    "hlt": (bytes([0xF4]), "SIGSEGV"),                     # hlt: only CPL 0 may halt
    "write the GDT": (bytes([0x48, 0xC7, 0xC0]) + GDT_ADDRESS.to_bytes(4, "little")
                      # mov $0x1000,%rax
                      + bytes([0x48, 0x89, 0x08]),         # mov %rcx,(%rax)
                      "SIGSEGV"),
}
# --- end: programs ---


def step_08_tables() -> dict[str, tuple[int, bytes]]:
    """The kernel area as step 08 built it: name -> (address, bytes).  One
    difference is expected: the library's TSS also opens the port of a
    patched system-call site (:mod:`minikvm.machine.syscall_sites`, a speed-up
    of later steps), so it is compared with that port added."""
    tss = Tss(rsp0=IST_STACK_TOP, ist=[IST_STACK_TOP] + [0] * 6,
              user_ports=frozenset({SYSCALL_PORT, PATCHED_SYSCALL_PORT}))
    gates = {vector: Gate(offset=EXCEPTION_STUBS_ADDRESS + vector * EXCEPTION_STUB_SIZE,
                          selector=KERNEL_CODE64.selector, ist=1)
             for vector in range(x86.NUM_EXCEPTION_VECTORS)}
    return {"GDT": (GDT_ADDRESS, build_long_mode_gdt(TSS_ADDRESS, tss.size)),
            "IDT": (IDT_ADDRESS, build_idt(gates)),
            "TSS": (TSS_ADDRESS, tss.encode()),
            "syscall stub": (SYSCALL_STUB_ADDRESS, assemble(syscall_entry())),
            "exception stubs": (EXCEPTION_STUBS_ADDRESS, exception_stubs())}


def show_machine(machine: Machine) -> list[str]:
    """Compare the machine's kernel area with step 08; print its registers.
    Returns what differs."""
    different = []
    # --- step: kernel-area ---
    for name, (address, expected) in step_08_tables().items():
        found = machine.memory.read(address, len(expected))
        same = "the same bytes as step 08" if found == expected else "DIFFERENT from step 08"
        print(f"{name:15} at {address:#06x}: {len(expected):4} bytes, {same}")
        if found != expected:
            different.append(name)
    sregs = machine.vcpu.get_sregs()
    lstar = machine.vcpu.get_msrs([x86.MSR_LSTAR])[x86.MSR_LSTAR]
    print(f"CS = {sregs.cs.selector:#x} (DPL {sregs.cs.dpl}, L {sregs.cs.l}), "
          f"SS = {sregs.ss.selector:#x}, TR = {sregs.tr.selector:#x} (base {sregs.tr.base:#x})")
    print(f"GDTR = {sregs.gdt.base:#x}/{sregs.gdt.limit}, IDTR = {sregs.idt.base:#x}/"
          f"{sregs.idt.limit}, CR3 = {sregs.cr3:#x}, LSTAR = {lstar:#x}")
    # --- end: kernel-area ---
    return different


def run_program(code: bytes) -> tuple[CrashReport | None, bool]:
    """Boot *code* at CPL 3; return the crash report (None if it did not
    crash) and whether the GDT is unchanged afterwards."""
    # --- step: boot ---
    with Machine(MEMORY_SIZE) as machine:
        mm = machine.mm
        mm.map(CODE_ADDRESS, PAGE_SIZE, PROT_READ | PROT_EXEC, "code")
        machine.memory.write(mm.find(CODE_ADDRESS).physical(CODE_ADDRESS), code)
        mm.map(STACK_TOP - PAGE_SIZE, PAGE_SIZE, PROT_READ | PROT_WRITE, "[stack]")
        machine.set_entry(CODE_ADDRESS, STACK_TOP)
        gdt_before = machine.memory.read(GDT_ADDRESS, PAGE_SIZE)
        stop = machine.run(on_syscall=lambda regs: None, timeout=10)
        gdt_intact = machine.memory.read(GDT_ADDRESS, PAGE_SIZE) == gdt_before
    # --- end: boot ---
    return stop.crash, gdt_intact


def main() -> int:
    with Machine(MEMORY_SIZE) as machine:
        wrong = [f"the machine's {name} differs from step 08" for name in show_machine(machine)]
    for name, (code, expected_signal) in PROGRAMS.items():
        crash, gdt_intact = run_program(code)
        if not gdt_intact:
            wrong.append(f"{name} changed the GDT")
        if crash is None:
            wrong.append(f"{name} did not crash")
            continue
        # --- step: report ---
        frame = crash.frame
        print(f"{name}: {crash.one_line()}")
        print(f"  vector {frame.vector}, error code {frame.error_code:#x}, "
              f"CS {frame.cs:#x} (from CPL {frame.cs & 3}), RSP {frame.rsp:#x}, "
              f"CR2 {frame.cr2:#x}")
        # --- end: report ---
        if crash.signal.name != expected_signal:
            wrong.append(f"{name}: {crash.signal.name}, expected {expected_signal}")
    if wrong:
        print("wrong result: " + "; ".join(wrong))
        return 1
    print("each fault became a report; the GDT is still intact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
