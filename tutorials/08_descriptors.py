"""Step 08 — descriptors by hand: the TSS, the GDT and the IDT, as bytes.

Steps 04 and 06 loaded one code and one data segment, and step 03 showed
what a fault does to a CPU with an empty IDT: it shuts down.  A program at
CPL 3, in user mode, needs three tables in guest memory before it can run
and fault safely:

* a TSS (``minikvm.cpu.tss``): which stack an exception runs on (the
  *interrupt stack table*), and which I/O ports CPL 3 may use;
* a GDT (``minikvm.cpu.gdt``): kernel and user code and data segments, and
  the 16-byte descriptor of that TSS;
* an IDT (``minikvm.cpu.idt``): one gate per exception, pointing at a stub
  of a few bytes (``minikvm.cpu.guestcode``) whose ``out`` tells the host
  which exception happened.

All of them are pure functions over bytes, like the identity map of step
05: this step builds each table, prints it, decodes it back and checks
that the round trip gives what went in.  No VM exists.  Step 09 gives a
machine exactly these bytes.

Run it:  python tutorials/08_descriptors.py
"""

from __future__ import annotations

import sys

from minikvm import x86
from minikvm.cpu.gdt import TSS_SELECTOR, build_long_mode_gdt, decode_tss_descriptor
from minikvm.cpu.guestcode import EXCEPTION_STUB_SIZE, assemble, exception_stub, syscall_entry
from minikvm.cpu.idt import GATE_SIZE, Gate, build_idt, decode_gate
from minikvm.cpu.layout import (EXCEPTION_STUBS_ADDRESS, IST_STACK_TOP, SYSCALL_PORT,
                                SYSCALL_STUB_ADDRESS, TSS_ADDRESS)
from minikvm.cpu.segments import (KERNEL_CODE64, KERNEL_DATA64, USER_CODE64, USER_DATA64,
                                  decode_descriptor)
from minikvm.cpu.tss import TSS_HEADER_SIZE, Tss, decode_tss

IST = 1                     # every exception gate switches to the stack in IST1
SHOWN_VECTORS = (x86.VECTOR_UD, x86.VECTOR_GP, x86.VECTOR_PF)
SEGMENTS = {KERNEL_CODE64: "KERNEL_CODE64", KERNEL_DATA64: "KERNEL_DATA64",
            USER_DATA64: "USER_DATA64", USER_CODE64: "USER_CODE64"}


def show_code(name: str, address: int, instructions: list[tuple[bytes, str]]) -> None:
    """Print machine code the way objdump prints it: offset, bytes, mnemonic
    (a jump's target is an offset from the start, as objdump shows it)."""
    print(f"  {name} at {address:#x}:")
    offset = 0
    for code, text in instructions:
        print(f"    +{offset:<2} {code.hex(' '):<9} {' '.join(text.split())}")
        offset += len(code)


def main() -> int:
    wrong = []
    # --- step: tss ---
    tss = Tss(rsp0=IST_STACK_TOP, ist=[IST_STACK_TOP] + [0] * 6,
              user_ports=frozenset({SYSCALL_PORT}))
    tss_bytes = tss.encode()
    print(f"TSS: {len(tss_bytes)} bytes = {TSS_HEADER_SIZE} of registers, "
          f"{len(tss_bytes) - TSS_HEADER_SIZE - 1} of I/O bitmap, one terminator byte")
    print(f"  RSP0 = {tss.rsp0:#x}, IST1 = {tss.ist[0]:#x}: the top of the exception stack")
    bitmap_byte = tss_bytes[TSS_HEADER_SIZE + SYSCALL_PORT // 8]
    print(f"  I/O bitmap byte {SYSCALL_PORT // 8:#x} = {bitmap_byte:08b}: bit "
          f"{SYSCALL_PORT % 8} is clear, so CPL 3 may use port {SYSCALL_PORT:#x}, and no other")
    if decode_tss(tss_bytes) != tss:
        wrong.append("the TSS does not decode to what was encoded")
    # --- end: tss ---

    # --- step: gdt ---
    gdt = build_long_mode_gdt(TSS_ADDRESS, tss.size)
    print(f"GDT: {len(gdt)} bytes, {len(gdt) // 8} slots")
    for slot in range(TSS_SELECTOR >> 3):
        raw = gdt[8 * slot:8 * slot + 8]
        if slot == 0:
            print(f"  [{slot}] {raw.hex()}  the null descriptor")
            continue
        dpl = decode_descriptor(raw, slot << 3).dpl
        segment = decode_descriptor(raw, slot << 3 | dpl)   # a selector carries its RPL
        name = SEGMENTS.get(segment, "?")
        print(f"  [{slot}] {int.from_bytes(raw, 'little'):016x}  selector "
              f"{segment.selector:#04x}, DPL {segment.dpl}, L {segment.l}: {name}")
        if name == "?":
            wrong.append(f"GDT slot {slot} decodes to no known segment: {segment}")
    tss_segment = decode_tss_descriptor(gdt[TSS_SELECTOR:TSS_SELECTOR + 16])
    print(f"  [{TSS_SELECTOR >> 3}] 16 bytes  selector {TSS_SELECTOR:#04x}: the TSS at "
          f"{tss_segment.base:#x}, limit {tss_segment.limit} ({tss.size} bytes)")
    if (tss_segment.base, tss_segment.limit + 1) != (TSS_ADDRESS, tss.size):
        wrong.append(f"the TSS descriptor says {tss_segment}")
    # --- end: gdt ---

    # --- step: idt ---
    gates = {vector: Gate(offset=EXCEPTION_STUBS_ADDRESS + vector * EXCEPTION_STUB_SIZE,
                          selector=KERNEL_CODE64.selector, ist=IST)
             for vector in range(x86.NUM_EXCEPTION_VECTORS)}
    idt = build_idt(gates)
    print(f"IDT: {len(idt)} bytes, {len(idt) // GATE_SIZE} gates, "
          f"{len(gates)} present (the CPU's exceptions)")
    for vector in SHOWN_VECTORS:
        raw = idt[vector * GATE_SIZE:(vector + 1) * GATE_SIZE]
        gate = decode_gate(raw)
        print(f"  {vector:2} {x86.EXCEPTION_NAMES[vector][0]}: {raw.hex(' ')}")
        print(f"     -> {gate.offset:#x}, CS {gate.selector:#x}, IST {gate.ist}, "
              f"DPL {gate.dpl}, type {gate.type:#x} (interrupt gate)")
    if any(decode_gate(idt[v * GATE_SIZE:(v + 1) * GATE_SIZE]) != gate
           for v, gate in gates.items()):
        wrong.append("an IDT gate does not decode to what was encoded")
    # --- end: idt ---

    # --- step: stubs ---
    print("the code the gates and LSTAR point at:")
    show_code("syscall entry (LSTAR)", SYSCALL_STUB_ADDRESS, syscall_entry())
    for vector in (x86.VECTOR_UD, x86.VECTOR_PF):
        stub = exception_stub(vector)
        show_code(f"stub of {x86.EXCEPTION_NAMES[vector][0]}", gates[vector].offset, stub)
        if len(assemble(stub)) != EXCEPTION_STUB_SIZE:
            wrong.append(f"the stub of vector {vector} is not {EXCEPTION_STUB_SIZE} bytes")
    # --- end: stubs ---

    if wrong:
        print("wrong result: " + "; ".join(wrong))
        return 1
    print("every table decodes to what was encoded: ready for a machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
