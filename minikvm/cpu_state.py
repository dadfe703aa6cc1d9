"""Layer 10 — the vCPU state a snapshot keeps, and putting it back.

:class:`CpuState` is everything KVM holds for one vCPU that a program can
depend on: the general registers, segments and control registers, the
x87/SSE/AVX state (XSAVE, or FXSAVE where KVM offers no XSAVE), XCR0, the
MSRs in :data:`SAVED_MSRS` and pending events.  It is plain bytes, so a
snapshot file can store it as it is.
"""

from __future__ import annotations

import ctypes

from dataclasses import dataclass
from typing import Any

from minikvm import ioctl as k
from minikvm import x86
from minikvm.errors import KvmError
from minikvm.machine import SYSCALL_EXIT_RIP, Machine

#: The MSRs a snapshot keeps.  A program at CPL 3 can change FS/GS base
#: (``arch_prctl``, ``wrfsbase``); the others are the machine's set-up, kept
#: so that a snapshot file describes the whole CPU.  The TSC is not kept:
#: the guest's clock keeps running forward across a reset, as a real one does.
SAVED_MSRS = (x86.MSR_STAR, x86.MSR_LSTAR, x86.MSR_CSTAR, x86.MSR_SYSCALL_MASK,
              x86.MSR_FS_BASE, x86.MSR_GS_BASE, x86.MSR_KERNEL_GS_BASE, x86.MSR_IA32_CR_PAT)


@dataclass
class CpuState:
    """Everything KVM keeps about the vCPU that the guest can observe,
    as the kernel's structs (raw bytes, so a file can carry them)."""
    regs: bytes                    # kvm_regs
    sregs: bytes                   # kvm_sregs
    fpu: bytes                     # kvm_xsave when ``xsave``, else kvm_fpu
    xsave: bool
    xcrs: bytes | None             # kvm_xcrs, when KVM_CAP_XCRS
    msrs: dict[int, int]
    events: bytes                  # kvm_vcpu_events

    @classmethod
    def capture(cls, machine: Machine) -> "CpuState":
        """Read the vCPU's state (at an exit: the registers the run loop
        sees in ``kvm_run``, including any the host changed since)."""
        vcpu = machine.vcpu
        if machine.exits:
            regs = bytes(vcpu.run_state.s.regs.regs)
        else:
            regs = bytes(vcpu.get_regs())
        try:
            fpu, xsave = bytes(vcpu.get_xsave()), True
        except KvmError:
            fpu, xsave = bytes(vcpu.get_fpu()), False
        try:
            xcrs: bytes | None = bytes(vcpu.get_xcrs())
        except KvmError:
            xcrs = None
        return cls(regs, bytes(vcpu.get_sregs()), fpu, xsave, xcrs,
                   vcpu.get_msrs(SAVED_MSRS), bytes(vcpu.get_vcpu_events()))

    @property
    def at_syscall(self) -> bool:
        """True when taken at a system call's exit (RIP after the stub's ``out``)."""
        return k.kvm_regs.from_buffer_copy(self.regs).rip == SYSCALL_EXIT_RIP

    def restore(self, machine: Machine) -> None:
        """Load all of it into *machine*'s vCPU (a fork's first start, or a
        reset after a crash, a timeout or an exit)."""
        vcpu = machine.vcpu
        sregs = k.kvm_sregs.from_buffer_copy(self.sregs)
        vcpu.set_sregs(sregs)
        if self.xcrs is not None:
            xcrs = k.kvm_xcrs.from_buffer_copy(self.xcrs)
            if xcrs.nr_xcrs:
                _set_xcrs(vcpu, xcrs)
        self.restore_fpu(machine)
        vcpu.set_msrs(self.msrs)
        vcpu.set_vcpu_events(k.kvm_vcpu_events.from_buffer_copy(self.events))
        vcpu.set_regs(k.kvm_regs.from_buffer_copy(self.regs))
        # Mirror them in kvm_run, which the run loop and return_from_syscall
        # read (KVM loads only the classes marked dirty: the registers).
        state = vcpu.run_state
        ctypes.memmove(ctypes.addressof(state.s.regs.sregs), self.sregs, len(self.sregs))
        self.restore_regs(machine)

    def restore_regs(self, machine: Machine) -> None:
        """Put the general registers back through ``kvm_run`` (no ioctl:
        KVM loads them on the next KVM_RUN)."""
        state = machine.vcpu.run_state
        ctypes.memmove(ctypes.addressof(state.s.regs.regs), self.regs, len(self.regs))
        state.kvm_dirty_regs |= k.KVM_SYNC_X86_REGS

    def restore_fpu(self, machine: Machine) -> None:
        if self.xsave:
            machine.vcpu.set_xsave(k.kvm_xsave.from_buffer_copy(self.fpu))
        else:
            machine.vcpu.set_fpu(k.kvm_fpu.from_buffer_copy(self.fpu))


def _set_xcrs(vcpu: Any, xcrs: k.kvm_xcrs) -> None:
    from minikvm.kvm import ioctl
    ioctl(vcpu.fd, k.KVM_SET_XCRS, xcrs)
