"""Layer 6 — the legacy vsyscall page, emulated as Linux's ``vsyscall=emulate``/``xonly``.

Before the vDSO, x86-64 Linux had a page of code at a fixed address in the
kernel's half, ``0xffff_ffff_ff60_0000``, with three functions programs
called directly: ``gettimeofday`` at +0x0, ``time`` at +0x400, ``getcpu``
at +0x800.  Old static C libraries (dietlibc among them) still call them.
A fixed executable page is a gift to an exploit, so Linux no longer maps
real code there: in its ``emulate`` and ``xonly`` modes
(``arch/x86/entry/vsyscall/vsyscall_64.c``) an instruction fetch in the
page faults, and the fault handler performs the call and returns to the
caller as if the function had run ``ret``.

minikvm does the same, with the page never mapped at all (as ``xonly``:
reading it is a SIGSEGV too; nothing else lies in the upper half, see
:mod:`minikvm.cpu.layout`).  At a page fault from CPL 3 whose address is
the instruction pointer inside the page, :func:`emulate_vsyscall`:

* refuses (the fault becomes the SIGSEGV it is) any address but the three
  entries — Linux's "misaligned vsyscall" — and a stack from which the
  return address cannot be read;
* checks every pointer argument is writable guest memory first, as Linux's
  ``write_ok_or_segv``; a bad one is a SIGSEGV at the entry, not an
  ``EFAULT`` (the return is not emulated, as on Linux);
* otherwise pops the return address, and runs the call through the
  dispatcher with the system call's number, so ``--trace`` and
  ``--summary`` show it and a signal due on return is delivered as after
  any system call; the result is in RAX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from minikvm import ioctl as k, x86
from minikvm.cpu.layout import VSYSCALL_ADDRESS
from minikvm.errors import SyscallError
from minikvm.machine.crash import ExceptionFrame
from minikvm.machine.machine import USER_RFLAGS_MASK
from minikvm.x86 import PAGE_SIZE

if TYPE_CHECKING:
    from minikvm.syscalls.dispatch import Dispatcher

#: System call numbers of the three entries (asm/unistd_64.h).
SYS_GETTIMEOFDAY, SYS_TIME, SYS_GETCPU = 96, 201, 309
#: entry address -> (system call number, sizes of the pointer arguments it
#: writes, in argument order: 0 for an argument that is not a pointer).
VSYSCALL_ENTRIES: dict[int, tuple[int, tuple[int, ...]]] = {
    VSYSCALL_ADDRESS + 0x000: (SYS_GETTIMEOFDAY, (16, 8)),   # struct timeval, struct timezone
    VSYSCALL_ADDRESS + 0x400: (SYS_TIME, (8,)),              # time_t
    VSYSCALL_ADDRESS + 0x800: (SYS_GETCPU, (4, 4)),          # unsigned cpu, unsigned node
}
POINTER_SIZE = 8


def is_vsyscall_fetch(frame: ExceptionFrame) -> bool:
    """A page fault from user mode on fetching an instruction of the vsyscall page."""
    return (frame.vector == x86.VECTOR_PF and frame.from_user_mode and frame.cr2 == frame.rip
            and VSYSCALL_ADDRESS <= frame.rip < VSYSCALL_ADDRESS + PAGE_SIZE)


def emulate_vsyscall(dispatcher: Dispatcher, frame: ExceptionFrame) -> bool:
    """Perform the vsyscall the fault in *frame* is (see the module docstring);
    True when the program resumes after its call, False when the fault is to
    be delivered as the SIGSEGV it then is."""
    if not is_vsyscall_fetch(frame):
        return False
    entry = VSYSCALL_ENTRIES.get(frame.rip)
    if entry is None:
        return False                         # inside the page but not an entry
    number, pointer_sizes = entry
    proc = dispatcher.process
    machine = proc.machine
    regs = machine.vcpu.run_state.s.regs.regs
    arguments = (regs.rdi, regs.rsi, regs.rdx)
    try:
        return_address = proc.mm.read_u64(frame.rsp)
        for pointer, size in zip(arguments, pointer_sizes):
            if pointer:
                proc.mm.views(pointer, size, write=True)
    except SyscallError:
        return False                         # a bad stack or pointer: SIGSEGV, as Linux
    machine.enter_user_mode()
    regs.rip = return_address
    regs.rsp = frame.rsp + POINTER_SIZE
    regs.rflags = (frame.rflags & USER_RFLAGS_MASK) | x86.RFLAGS_FIXED
    regs.rax = number
    dispatcher(regs)                         # the call, its trace, and signals on return
    machine.vcpu.run_state.kvm_dirty_regs |= k.KVM_SYNC_X86_REGS
    return True
