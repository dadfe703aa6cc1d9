"""Step 03 — a typed exit loop: port I/O both ways, MMIO, HLT, a triple fault.

A guest runs until it does something only the host can do; then KVM_RUN
returns and ``kvm_run.exit_reason`` says what.  minikvm turns each reason
into a small object (:mod:`minikvm.kvm.exits`) whose docstring says what the
host must do before it calls KVM_RUN again.  This guest, again 16-bit
real-mode code, provokes one exit of each common kind:

* ``in``  from port 0x10      -> IoExit (read):   we answer 20 with set_io_data
* a load from 0x8000          -> MmioExit (read): no memory slot covers that
                                 address, so we answer 22 with set_mmio_data
* a store to 0x8000           -> MmioExit (write): the sum, 42
* ``out`` to port 0x3f8       -> IoExit (write):  the sum again
* ``hlt``                     -> HltExit: re-entering resumes after it
* ``ud2`` with an empty IDT   -> ShutdownExit: the invalid-opcode exception
                                 (#UD) cannot be delivered, so the CPU
                                 raises #GP, which cannot be delivered
                                 either, so a double fault (#DF), which
                                 fails too: a *triple fault*.  It resets a
                                 real PC; for KVM it ends the vCPU.

Run it:  python tutorials/03_exit_loop.py
"""

from __future__ import annotations

import sys

from minikvm import ioctl as k
from minikvm.kvm.exits import HltExit, IoExit, MmioExit, ShutdownExit
from minikvm.kvm.system import Kvm
from minikvm.kvm.memory import GuestMemory
from minikvm.cpu.modes import setup_real_mode
from minikvm.kvm.vcpu import Vcpu
from minikvm.x86 import RFLAGS_FIXED

GUEST_ADDRESS = 0x1000   # code, as in step 02
MEMORY_SIZE = 0x1000     # one page: [0x1000, 0x2000)
EMPTY_IDTR = 0x1100      # six zero bytes inside that page: IDT base 0, limit 0
INPUT_PORT = 0x10        # a made-up input device: `in` reads a number from it
SERIAL_PORT = 0x3F8      # COM1
MMIO_ADDRESS = 0x8000    # outside every memory slot: each access exits to us
INPUT_VALUE = 20
MMIO_VALUE = 22
EXPECTED = INPUT_VALUE + MMIO_VALUE

# --- step: guest-code ---
CODE = bytes([
    0xE4, INPUT_PORT,         # in    $0x10,%al      -> IoExit, read
    0x88, 0xC3,               # mov   %al,%bl
    0xA0, 0x00, 0x80,         # mov   0x8000,%al     -> MmioExit, read
    0x00, 0xD8,               # add   %bl,%al
    0xA2, 0x00, 0x80,         # mov   %al,0x8000     -> MmioExit, write
    0xBA, 0xF8, 0x03,         # mov   $0x3f8,%dx
    0xEE,                     # out   %al,(%dx)      -> IoExit, write
    0xF4,                     # hlt                  -> HltExit
    0x0F, 0x01, 0x1E, 0x00, 0x11,  # lidtw 0x1100    load an empty IDT (limit 0)
    0x0F, 0x0B,               # ud2                  -> #UD, #GP, #DF: ShutdownExit
])
# --- end: guest-code ---


# --- step: exit-loop ---
def run(vcpu: Vcpu) -> list[int]:
    """Run the guest until it shuts down; return the values it wrote out."""
    written = []
    while True:
        vm_exit = vcpu.run()  # KVM_RUN, then decode kvm_run into an object
        match vm_exit:
            case IoExit(is_write=False, port=port):
                print(f"{vm_exit.name}: in from port {port:#x}; we answer {INPUT_VALUE}")
                vcpu.set_io_data(bytes([INPUT_VALUE]))
            case IoExit(is_write=True, port=port, data=data):
                print(f"{vm_exit.name}: out {data[0]} to port {port:#x}")
                written.append(data[0])
            case MmioExit(is_write=False, phys_addr=address, length=length):
                print(f"{vm_exit.name}: {length}-byte read at {address:#x}; "
                      f"we answer {MMIO_VALUE}")
                vcpu.set_mmio_data(bytes([MMIO_VALUE]))
            case MmioExit(is_write=True, phys_addr=address, data=data):
                print(f"{vm_exit.name}: {len(data)}-byte write of {data[0]} at {address:#x}")
                written.append(data[0])
            case HltExit():
                print(f"{vm_exit.name}: the guest halted; run it again to go on")
            case ShutdownExit():
                print(f"{vm_exit.name}: triple fault, the vCPU is finished")
                return written
            case _:
                raise SystemExit(f"unexpected exit: {vm_exit}")
# --- end: exit-loop ---


def main() -> int:
    with GuestMemory(MEMORY_SIZE, base=GUEST_ADDRESS) as memory, Kvm() as kvm, \
            kvm.create_vm() as vm:
        # --- step: setup ---
        memory.write(GUEST_ADDRESS, CODE)
        vm.set_user_memory_region(0, memory)
        vcpu = vm.create_vcpu()
        setup_real_mode(vcpu)  # what step 02 did by hand: CS base 0, selector 0
        vcpu.set_regs(k.kvm_regs(rip=GUEST_ADDRESS, rflags=RFLAGS_FIXED))
        # --- end: setup ---
        written = run(vcpu)
    # --- step: check ---
    if written != [EXPECTED, EXPECTED]:
        print(f"wrong result: the guest wrote {written}, expected [{EXPECTED}, {EXPECTED}]")
        return 1
    print(f"the guest computed {INPUT_VALUE} + {MMIO_VALUE} = {EXPECTED}, as expected")
    return 0
    # --- end: check ---


if __name__ == "__main__":
    sys.exit(main())
