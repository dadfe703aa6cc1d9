"""Step 08 — user mode, and what happens when a program faults.

From here on the guest program runs at CPL 3, in user mode, like a Linux
process.  ``minikvm.machine.machine.Machine`` builds everything a CPU needs for
that (see layout.py for where each piece lives):

* a GDT with kernel and user code and data segments, and the TSS
  descriptor (``minikvm.cpu.gdt``);
* an IDT whose 32 exception gates point at tiny stubs (``minikvm.cpu.idt``,
  ``minikvm.cpu.guestcode``), each switching to a known-good stack from the
  TSS's *interrupt stack table* (``minikvm.cpu.tss``) and then ``out``-ing the
  vector number to the host;
* page tables, now owned by a memory manager (``minikvm.machine.mm``), that map
  the kernel area for CPL 0 only.

This step prints those tables from guest memory, then boots three tiny
programs that fault — an invalid opcode (#UD), a privileged instruction
(#GP), a write to the GDT (#PF) — and prints the crash report minikvm
builds from the frame the CPU pushed (``minikvm.machine.crash``).

Run it:  python tutorials/08_exceptions.py
"""

from __future__ import annotations

import sys

from minikvm import x86
from minikvm.machine.crash import CrashReport
from minikvm.cpu.gdt import TSS_SELECTOR, decode_tss_descriptor
from minikvm.cpu.guestcode import exception_stub
from minikvm.cpu.idt import GATE_SIZE, decode_gate
from minikvm.cpu.layout import GDT_ADDRESS, IDT_ADDRESS, PAGE_SIZE, STACK_TOP, TSS_ADDRESS
from minikvm.machine.machine import Machine
from minikvm.machine.mm import PROT_EXEC, PROT_READ, PROT_WRITE
from minikvm.cpu.segments import decode_descriptor
from minikvm.cpu.tss import decode_tss

MEMORY_SIZE = 16 << 20
CODE_ADDRESS = 0x40_0000
SEGMENT_SLOTS = {1: "kernel code", 2: "kernel data", 3: "user data", 4: "user code"}
SHOWN_VECTORS = (x86.VECTOR_UD, x86.VECTOR_GP, x86.VECTOR_PF)

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


def show_kernel_area(machine: Machine) -> None:
    memory = machine.memory
    # --- step: tables ---
    print("GDT:")
    for slot, name in SEGMENT_SLOTS.items():
        segment = decode_descriptor(memory.read(GDT_ADDRESS + 8 * slot, 8), slot << 3)
        print(f"  {slot << 3 | segment.dpl:#04x} {name:<11} DPL {segment.dpl} "
              f"L {segment.l} type {segment.type:#x}")
    tss_segment = decode_tss_descriptor(memory.read(GDT_ADDRESS + TSS_SELECTOR, 16))
    print(f"  {TSS_SELECTOR:#04x} TSS at {tss_segment.base:#x}, {tss_segment.limit + 1} bytes")
    tss = decode_tss(memory.read(TSS_ADDRESS, tss_segment.limit + 1))
    print(f"TSS: IST1 = {tss.ist[0]:#x}; ports CPL 3 may use: "
          f"{', '.join(hex(port) for port in sorted(tss.user_ports))}")
    print("IDT:")
    for vector in SHOWN_VECTORS:
        gate = decode_gate(memory.read(IDT_ADDRESS + vector * GATE_SIZE, GATE_SIZE))
        stub = "; ".join(" ".join(text.split()) for _, text in exception_stub(vector))
        print(f"  {vector:2} {x86.EXCEPTION_NAMES[vector][0]}: {gate.offset:#x}, "
              f"CS {gate.selector:#x}, IST {gate.ist}, DPL {gate.dpl}:  {stub}")
    # --- end: tables ---


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
        show_kernel_area(machine)
    wrong = []
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
