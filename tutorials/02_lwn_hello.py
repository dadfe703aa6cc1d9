"""Step 02 — the LWN program: real mode, 2 + 2, one character out.

This is the program of the LWN article "Using the KVM API" (Josh
Triplett, 2015), in Python, issuing the same ioctls in the same order:

    open /dev/kvm, KVM_GET_API_VERSION, KVM_CHECK_EXTENSION(KVM_CAP_USER_MEMORY),
    KVM_CREATE_VM, KVM_SET_USER_MEMORY_REGION, KVM_CREATE_VCPU,
    KVM_GET_VCPU_MMAP_SIZE + mmap(kvm_run), KVM_GET_SREGS, KVM_SET_SREGS,
    KVM_SET_REGS, then KVM_RUN in a loop until KVM_EXIT_HLT.

The guest is 12 bytes of 16-bit real-mode code.  It adds RAX and RBX
(both 2), turns the sum into an ASCII digit and writes it with ``out`` to
port 0x3f8 (the PC's first serial port), then a newline, then halts.
Every ``out`` stops the guest: KVM_RUN returns with KVM_EXIT_IO, and the
details are in ``kvm_run``, the page we share with the kernel.  Like the
article, this step reads that page directly; step 03 wraps it in types.

Run it:  python tutorials/02_lwn_hello.py
"""

from __future__ import annotations

import ctypes
import sys

from minikvm import ioctl as k
from minikvm.kvm.system import Kvm
from minikvm.kvm.memory import GuestMemory
from minikvm.kvm.vcpu import Vcpu
from minikvm.x86 import RFLAGS_FIXED

GUEST_ADDRESS = 0x1000  # where the code goes, as in the article
MEMORY_SIZE = 0x1000    # one page
SERIAL_PORT = 0x3F8     # COM1: where the guest writes its characters

# --- step: guest-code ---
CODE = bytes([
    0xBA, 0xF8, 0x03,  # mov  $0x3f8,%dx
    0x00, 0xD8,        # add  %bl,%al
    0x04, ord("0"),    # add  $'0',%al
    0xEE,              # out  %al,(%dx)
    0xB0, ord("\n"),   # mov  $'\n',%al
    0xEE,              # out  %al,(%dx)
    0xF4,              # hlt
])
# --- end: guest-code ---


# --- step: run-loop ---
def run_until_hlt(vcpu: Vcpu) -> bytes:
    """KVM_RUN until the guest halts; return what it wrote to the serial port."""
    run = vcpu.run_state  # the kvm_run page, shared with the kernel
    output = b""
    while True:
        if vcpu.run_once() < 0:  # KVM_RUN; -1 means a signal interrupted it
            continue
        if run.exit_reason == k.KVM_EXIT_HLT:
            print("KVM_RUN -> KVM_EXIT_HLT")
            return output
        if (run.exit_reason == k.KVM_EXIT_IO and run.io.direction == k.KVM_EXIT_IO_OUT
                and run.io.size == 1 and run.io.port == SERIAL_PORT and run.io.count == 1):
            # The byte the guest wrote sits inside kvm_run, data_offset bytes in.
            byte = ctypes.string_at(ctypes.addressof(run) + run.io.data_offset, 1)
            print(f"KVM_RUN -> KVM_EXIT_IO: out {byte!r} to port {run.io.port:#x}")
            output += byte
            continue
        raise SystemExit(f"unexpected exit: {k.exit_reason_name(run.exit_reason)}")
# --- end: run-loop ---


def main() -> int:
    # --- step: open ---
    kvm = Kvm()  # open("/dev/kvm"), then KVM_GET_API_VERSION
    print(f"KVM_GET_API_VERSION -> {kvm.api_version()}")
    print(f"KVM_CHECK_EXTENSION(KVM_CAP_USER_MEMORY) -> "
          f"{kvm.check_extension(k.KVM_CAP_USER_MEMORY)}")
    # --- end: open ---
    # --- step: vm-and-memory ---
    vm = kvm.create_vm()
    print("KVM_CREATE_VM -> a VM fd")
    memory = GuestMemory(MEMORY_SIZE, base=GUEST_ADDRESS)
    memory.write(GUEST_ADDRESS, CODE)
    vm.set_user_memory_region(0, memory)
    print(f"KVM_SET_USER_MEMORY_REGION: slot 0, guest-physical {GUEST_ADDRESS:#x}, "
          f"{MEMORY_SIZE:#x} bytes holding {len(CODE)} bytes of code")
    # --- end: vm-and-memory ---
    # --- step: vcpu ---
    vcpu = vm.create_vcpu()  # KVM_CREATE_VCPU, KVM_GET_VCPU_MMAP_SIZE, mmap(kvm_run)
    print("KVM_CREATE_VCPU -> a vCPU fd; KVM_GET_VCPU_MMAP_SIZE; mmap the kvm_run page")
    # --- end: vcpu ---
    # --- step: registers ---
    sregs = vcpu.get_sregs()
    sregs.cs.base = 0      # after reset CS.base is 0xffff0000 (the firmware);
    sregs.cs.selector = 0  # we have none, so: code segment = address 0
    vcpu.set_sregs(sregs)
    print("KVM_GET_SREGS, KVM_SET_SREGS: CS base 0, selector 0")
    regs = k.kvm_regs(rip=GUEST_ADDRESS, rax=2, rbx=2, rflags=RFLAGS_FIXED)
    vcpu.set_regs(regs)
    print(f"KVM_SET_REGS: RIP {regs.rip:#x}, RAX {regs.rax}, RBX {regs.rbx}, "
          f"RFLAGS {regs.rflags:#x} (bit 1 must be set)")
    # --- end: registers ---
    # --- step: run ---
    output = run_until_hlt(vcpu)
    # --- end: run ---
    vm.close()  # closes the vCPU too
    memory.close()
    kvm.close()
    # --- step: check ---
    if output != b"4\n":
        print(f"wrong result: the guest wrote {output!r}, expected b'4\\n'")
        return 1
    print(f"the guest wrote {output!r}: 2 + 2 = 4, as expected")
    return 0
    # --- end: check ---


if __name__ == "__main__":
    sys.exit(main())
