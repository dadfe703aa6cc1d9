"""Layer 7 — the vCPU state a snapshot keeps, and putting it back.

:class:`CpuState` is everything KVM holds for one vCPU that a program can
depend on: the general registers, segments and control registers, the
x87/SSE/AVX state (XSAVE, or FXSAVE where KVM offers no XSAVE), XCR0, the
MSRs in :data:`SAVED_MSRS` and pending events.  It is plain bytes, so a
snapshot file can store it as it is.
"""

from __future__ import annotations

import ctypes
import errno
import functools
from dataclasses import dataclass
from typing import Any

from minikvm import ioctl as k, x86
from minikvm.errors import KvmError
from minikvm.kvm.fd import ioctl
from minikvm.machine.machine import SYSCALL_EXIT_RIP, Machine

#: The MSRs a snapshot keeps.  A program at CPL 3 can change FS/GS base
#: (``arch_prctl``, ``wrfsbase``); the others are the machine's set-up, kept
#: so that a snapshot file describes the whole CPU.  The TSC is not kept:
#: the guest's clock keeps running forward across a reset, as a real one does.
SAVED_MSRS = (x86.MSR_STAR, x86.MSR_LSTAR, x86.MSR_CSTAR, x86.MSR_SYSCALL_MASK,
              x86.MSR_FS_BASE, x86.MSR_GS_BASE, x86.MSR_KERNEL_GS_BASE, x86.MSR_IA32_CR_PAT)


@dataclass
class _Loadable:
    """A :class:`CpuState` as the ctypes structs the ``KVM_SET_*`` ioctls
    take.  Made once per state: every fork of a snapshot (and every full
    reset) loads the same state, and building these — a 4 KiB XSAVE area,
    the MSR list — each time was work redone per fork.  The ioctls only
    read them, so one set serves every fork."""
    sregs: k.kvm_sregs
    xcrs: k.kvm_xcrs | None        # None: no XCRS to set
    fpu: ctypes.Structure          # kvm_xsave or kvm_fpu
    msrs: ctypes.Structure         # kvm_msrs with its entries
    events: k.kvm_vcpu_events
    regs: k.kvm_regs


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
        """True when taken at a system call's exit: RIP after the stub's
        ``out``, or after a patched site's, where the run loop set RCX to RIP
        (:mod:`minikvm.machine.syscall_sites`)."""
        regs = k.kvm_regs.from_buffer_copy(self.regs)
        return regs.rip in (SYSCALL_EXIT_RIP, regs.rcx)

    @functools.cached_property
    def _loadable(self) -> _Loadable:
        """This state as ready-made ioctl structs (made on first use; the
        fields must not change afterwards — a snapshot's never do)."""
        xcrs = k.kvm_xcrs.from_buffer_copy(self.xcrs) if self.xcrs is not None else None
        fpu_type = k.kvm_xsave if self.xsave else k.kvm_fpu
        msrs = k.kvm_msrs_with(len(self.msrs))
        for entry, (index, data) in zip(msrs.entries, self.msrs.items()):
            entry.index = index
            entry.data = data
        return _Loadable(k.kvm_sregs.from_buffer_copy(self.sregs),
                         xcrs if xcrs is not None and xcrs.nr_xcrs else None,
                         fpu_type.from_buffer_copy(self.fpu), msrs,
                         k.kvm_vcpu_events.from_buffer_copy(self.events),
                         k.kvm_regs.from_buffer_copy(self.regs))

    def restore(self, machine: Machine) -> None:
        """Load all of it into *machine*'s vCPU (a fork's first start, or a
        reset after a crash, a timeout or an exit)."""
        vcpu = machine.vcpu
        ready = self._loadable
        vcpu.set_sregs(ready.sregs)
        if ready.xcrs is not None:
            _set_xcrs(vcpu, ready.xcrs)
        self.restore_fpu(machine)
        done = ioctl(vcpu.fd, k.KVM_SET_MSRS, ready.msrs)
        if done != len(self.msrs):
            index = list(self.msrs)[done]
            raise KvmError("KVM_SET_MSRS", errno.EINVAL,
                           f"MSR {index:#x} = {self.msrs[index]:#x} was refused")
        vcpu.set_vcpu_events(ready.events)
        vcpu.set_regs(ready.regs)
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
            machine.vcpu.set_xsave(self._loadable.fpu)
        else:
            machine.vcpu.set_fpu(self._loadable.fpu)


def _set_xcrs(vcpu: Any, xcrs: k.kvm_xcrs) -> None:
    ioctl(vcpu.fd, k.KVM_SET_XCRS, xcrs)
