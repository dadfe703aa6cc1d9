"""Step 01 — an empty virtual machine with some memory.

KVM_CREATE_VM returns a new file descriptor: the VM.  A VM starts with no
memory at all.  We give it some by *memory slots*: each slot says "this
range of guest-physical addresses is backed by that range of our own
virtual memory" (KVM_SET_USER_MEMORY_REGION).  The guest's RAM is then
just our memory: what we write, it reads, and the other way round.

minikvm's memory is a memfd — an anonymous file — mapped into this
process, so that later steps can map the same pages again (snapshots,
copy-on-write).  There is no vCPU yet, so nothing runs.

Run it:  python tutorials/01_empty_vm.py
"""

from __future__ import annotations

import os
import sys

from minikvm.errors import KvmError
from minikvm.kvm.system import Kvm
from minikvm.kvm.memory import GuestMemory

MEMORY_SIZE = 0x10000        # 64 KiB of guest RAM
GUEST_ADDRESS = 0x1000       # a guest-physical address inside it
MESSAGE = b"hello, guest"


def main() -> int:
    # --- step: create-vm ---
    # Closed in reverse order: the VM first, the memory it uses last.
    with GuestMemory(MEMORY_SIZE) as memory, Kvm() as kvm, kvm.create_vm() as vm:
        print(f"KVM_CREATE_VM: a new VM, with {len(vm.slots)} memory slots "
              f"and {len(vm.vcpus)} vCPUs")
        # --- end: create-vm ---
        # --- step: memory ---
        vm.set_user_memory_region(0, memory)  # KVM_SET_USER_MEMORY_REGION, slot 0
        backing = os.readlink(f"/proc/self/fd/{memory.fd}")
        print(f"slot 0: guest-physical [{memory.base:#x}, {memory.base + memory.size:#x}) "
              f"is backed by {backing}")
        # --- end: memory ---
        # --- step: same-bytes ---
        memory.write(GUEST_ADDRESS, MESSAGE)
        print(f"wrote {MESSAGE!r} at guest-physical {GUEST_ADDRESS:#x}")
        offset = GUEST_ADDRESS - memory.base
        in_file = os.pread(memory.fd, len(MESSAGE), offset)
        print(f"the memfd holds the same bytes at offset {offset:#x}: {in_file!r}")
        # --- end: same-bytes ---
        # --- step: overlap ---
        with GuestMemory(MEMORY_SIZE, base=MEMORY_SIZE // 2) as overlapping:
            try:
                vm.set_user_memory_region(1, overlapping)
            except KvmError as error:
                print(f"slot 1 at {overlapping.base:#x} overlaps slot 0, so KVM refuses it:")
                print(f"  {error}")
            else:
                print("wrong result: KVM accepted two overlapping memory slots")
                return 1
        # --- end: overlap ---
    if in_file != MESSAGE:
        print(f"wrong result: the memfd holds {in_file!r}, expected {MESSAGE!r}")
        return 1
    print("a VM with 64 KiB of RAM and no vCPU: nothing runs yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
