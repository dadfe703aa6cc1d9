"""Step 04 — 32-bit protected mode with flat segments.

Real mode reaches only the first MiB (segment * 16 + a 16-bit offset).
Protected mode (CR0.PE = 1) takes segments from a table, the GDT: each
8-byte *descriptor* gives a segment's base, limit, type and privilege.
Operating systems make every segment *flat* — base 0, limit 4 GiB — so a
32-bit offset simply is the address.

``minikvm.cpu.modes.setup_protected_mode`` writes such a GDT into guest memory
and loads CS and the data segments from the same
:class:`~minikvm.cpu.segments.Segment` descriptions, then sets CR0.PE.  The
guest reads a number the host left at 1 MiB, beyond real mode's reach,
and adds a 32-bit constant to it.

Run it:  python tutorials/04_protected_mode.py
"""

from __future__ import annotations

import struct
import sys

from minikvm import ioctl as k
from minikvm.kvm.exits import HltExit
from minikvm.kvm.system import Kvm
from minikvm.kvm.memory import GuestMemory
from minikvm.cpu.modes import setup_protected_mode
from minikvm.cpu.segments import KERNEL_CODE32, KERNEL_DATA32, decode_descriptor
from minikvm.x86 import CR0_PE, RFLAGS_FIXED

MEMORY_SIZE = 0x20_0000     # 2 MiB, from guest-physical 0
GDT_ADDRESS = 0x1000        # the GDT: null, code, data descriptors
CODE_ADDRESS = 0x8000
INPUT_ADDRESS = 0x10_0000   # 1 MiB: the first address real mode cannot reach
INPUT_VALUE = 1_000_000
ADDEND = 234_567
EXPECTED = INPUT_VALUE + ADDEND

# --- step: guest-code ---
CODE = (
    bytes([0xA1]) + struct.pack("<I", INPUT_ADDRESS)  # mov  0x100000,%eax
    + bytes([0x05]) + struct.pack("<I", ADDEND)       # add  $0x39447,%eax
    + bytes([0xF4])                                   # hlt
)
# --- end: guest-code ---


def describe(name: str, sregs: k.kvm_sregs) -> str:
    """One line about a segment register as KVM holds it (limit in bytes)."""
    seg = getattr(sregs, name)
    return (f"{name.upper()} = {seg.selector:#06x}: base {seg.base:#x}, "
            f"limit {seg.limit:#x}, {'32' if seg.db else '16'}-bit")


def main() -> int:
    with GuestMemory(MEMORY_SIZE) as memory, Kvm() as kvm, kvm.create_vm() as vm:
        memory.write(CODE_ADDRESS, CODE)
        memory.write(INPUT_ADDRESS, struct.pack("<I", INPUT_VALUE))
        vm.set_user_memory_region(0, memory)
        vcpu = vm.create_vcpu()
        # --- step: before ---
        sregs = vcpu.get_sregs()
        print(f"after reset: CR0 = {sregs.cr0:#010x}, PE = {sregs.cr0 & CR0_PE}: real mode")
        print(f"  {describe('cs', sregs)}")
        # --- end: before ---
        # --- step: protected-mode ---
        sregs = setup_protected_mode(vcpu, memory, GDT_ADDRESS)
        print(f"setup_protected_mode: CR0 = {sregs.cr0:#010x}, PE = {sregs.cr0 & CR0_PE}")
        print(f"  GDT at {sregs.gdt.base:#x}, limit {sregs.gdt.limit}: "
              f"{(sregs.gdt.limit + 1) // 8} descriptors of 8 bytes")
        known = {KERNEL_CODE32: "KERNEL_CODE32", KERNEL_DATA32: "KERNEL_DATA32"}
        for index in range((sregs.gdt.limit + 1) // 8):
            raw = memory.read(sregs.gdt.base + 8 * index, 8)
            segment = decode_descriptor(raw, selector=index * 8)
            name = "the null descriptor" if index == 0 else known.get(segment, "?")
            print(f"    [{index}] {int.from_bytes(raw, 'little'):016x}  {name}")
        print(f"  {describe('cs', sregs)}")
        print(f"  {describe('ds', sregs)}")
        # --- end: protected-mode ---
        # --- step: run ---
        vcpu.set_regs(k.kvm_regs(rip=CODE_ADDRESS, rflags=RFLAGS_FIXED))
        vm_exit = vcpu.run()
        eax = vcpu.get_regs().rax
        print(f"{vm_exit.name}: the guest computed EAX = {eax}")
        # --- end: run ---
    # --- step: check ---
    if not isinstance(vm_exit, HltExit):
        print(f"wrong result: the guest stopped with {vm_exit.name}, expected KVM_EXIT_HLT")
        return 1
    if eax != EXPECTED:
        print(f"wrong result: EAX is {eax}, expected {EXPECTED}")
        return 1
    print(f"EAX = {INPUT_VALUE} + {ADDEND} = {EXPECTED}, as expected")
    return 0
    # --- end: check ---


if __name__ == "__main__":
    sys.exit(main())
