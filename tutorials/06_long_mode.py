"""Step 06 — 64-bit long mode: compute a value and check it.

``minikvm.cpu.modes.setup_long_mode`` does everything the earlier steps did
and the rest long mode asks for: the identity map of step 05 in CR3,
CR4.PAE, EFER.LME and EFER.LMA, CR0.PG, and a code segment with L = 1.
The guest is 64-bit code: it loads a number the host left at 2 MiB (the
second huge page of the map), adds 2, stores the sum, and halts.  The
script checks the result in RAX and in memory, like dpw/kvm-hello-world:
"RAX = 42, as expected" — or "wrong result: ..." and exit status 1.

Run it:  python tutorials/06_long_mode.py
"""

from __future__ import annotations

import struct
import sys

from minikvm import ioctl as k
from minikvm.kvm.exits import HltExit
from minikvm.kvm.system import Kvm
from minikvm.kvm.memory import GuestMemory
from minikvm.cpu.modes import setup_long_mode
from minikvm.x86 import EFER_LMA, RFLAGS_FIXED

MEMORY_SIZE = 0x40_0000        # 4 MiB from guest-physical 0, all identity-mapped
GDT_ADDRESS = 0x1000
PAGE_TABLE_ADDRESS = 0x2000    # PML4, PDPT, PD: three pages
CODE_ADDRESS = 0x8000
RESULT_ADDRESS = 0x9000        # where the guest stores its answer
INPUT_ADDRESS = 0x20_0000      # 2 MiB: inside the second 2 MiB page
INPUT_VALUE = 40
EXPECTED = 42

# --- step: guest-code ---
CODE = (
    bytes([0x48, 0x8B, 0x04, 0x25]) + struct.pack("<I", INPUT_ADDRESS)   # mov  0x200000,%rax
    + bytes([0x48, 0x83, 0xC0, 0x02])                                    # add  $0x2,%rax
    + bytes([0x48, 0x89, 0x04, 0x25]) + struct.pack("<I", RESULT_ADDRESS)  # mov  %rax,0x9000
    + bytes([0xF4])                                                      # hlt
)
# --- end: guest-code ---


def main() -> int:
    with GuestMemory(MEMORY_SIZE) as memory, Kvm() as kvm, kvm.create_vm() as vm:
        # --- step: setup ---
        memory.write(CODE_ADDRESS, CODE)
        memory.write_u64(INPUT_ADDRESS, INPUT_VALUE)
        vm.set_user_memory_region(0, memory)
        vcpu = vm.create_vcpu()
        sregs = setup_long_mode(vcpu, memory, GDT_ADDRESS, PAGE_TABLE_ADDRESS)
        print(f"setup_long_mode: CR0 = {sregs.cr0:#x}, CR4 = {sregs.cr4:#x}, "
              f"EFER = {sregs.efer:#x}, CR3 = {sregs.cr3:#x}")
        print(f"  CS = {sregs.cs.selector:#x}, L = {sregs.cs.l}: 64-bit code")
        vcpu.set_regs(k.kvm_regs(rip=CODE_ADDRESS, rflags=RFLAGS_FIXED))
        # --- end: setup ---
        # --- step: run ---
        vm_exit = vcpu.run()
        rax = vcpu.get_regs().rax
        stored = memory.read_u64(RESULT_ADDRESS)
        in_long_mode = bool(vcpu.get_sregs().efer & EFER_LMA)
        print(f"{vm_exit.name}; EFER.LMA = {int(in_long_mode)}: the guest ran in long mode")
        print(f"  the guest stored {stored} at {RESULT_ADDRESS:#x}")
        # --- end: run ---
    # --- step: check ---
    if not isinstance(vm_exit, HltExit):
        print(f"wrong result: the guest stopped with {vm_exit.name}, expected KVM_EXIT_HLT")
        return 1
    if not in_long_mode:
        print("wrong result: EFER.LMA is 0, expected 1 (the vCPU left long mode)")
        return 1
    if rax != EXPECTED:
        print(f"wrong result: RAX is {rax}, expected {EXPECTED}")
        return 1
    if stored != EXPECTED:
        print(f"wrong result: memory at {RESULT_ADDRESS:#x} holds {stored}, expected {EXPECTED}")
        return 1
    print(f"RAX = {rax}, as expected")
    return 0
    # --- end: check ---


if __name__ == "__main__":
    sys.exit(main())
