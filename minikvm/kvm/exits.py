"""Layer 1 — VM exits as typed objects.

When ``KVM_RUN`` returns, ``kvm_run.exit_reason`` says why the guest
stopped.  Each class here is one reason, carrying the details from the
``kvm_run`` union, and its docstring says what the caller must do before
calling ``KVM_RUN`` again (api.rst, "The kvm_run structure").
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from minikvm import ioctl as k


@dataclass
class VmExit:
    """Base class: ``reason`` is the raw ``KVM_EXIT_*`` value."""
    reason: int

    @property
    def name(self) -> str:
        """The kernel name of the reason, e.g. ``KVM_EXIT_HLT``."""
        return k.exit_reason_name(self.reason)


@dataclass
class IoExit(VmExit):
    """The guest executed ``in`` or ``out`` on a port (KVM_EXIT_IO).

    For ``out``, ``data`` holds the bytes written.  For ``in``, the caller
    must store the value the guest reads with :meth:`Vcpu.set_io_data`
    before re-entering; KVM completes the instruction on the next KVM_RUN.
    """
    port: int
    is_write: bool
    size: int
    count: int
    data: bytes


@dataclass
class MmioExit(VmExit):
    """The guest touched guest-physical memory that no slot backs
    (KVM_EXIT_MMIO).  For a read, the caller must fill
    :meth:`Vcpu.set_mmio_data` before re-entering."""
    phys_addr: int
    is_write: bool
    length: int
    data: bytes


@dataclass
class HltExit(VmExit):
    """The guest executed ``hlt`` with nothing to wake it (KVM_EXIT_HLT).
    Re-entering resumes after the ``hlt``."""


@dataclass
class ShutdownExit(VmExit):
    """The guest shut down (KVM_EXIT_SHUTDOWN): on x86 this is a *triple
    fault* — an exception while delivering a double fault.  The vCPU state
    is undefined; do not re-enter without resetting it."""


@dataclass
class FailEntryExit(VmExit):
    """KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY): the register
    state is invalid for the hardware.  ``hardware_reason`` is VMX/SVM's code."""
    hardware_reason: int


@dataclass
class InternalErrorExit(VmExit):
    """KVM itself gave up (KVM_EXIT_INTERNAL_ERROR), most often because it
    could not emulate an instruction.  ``suberror`` is a
    ``KVM_INTERNAL_ERROR_*`` value."""
    suberror: int
    data: tuple

    def explain(self) -> str:
        """The suberror in words."""
        return {
            k.KVM_INTERNAL_ERROR_EMULATION: "KVM could not emulate an instruction",
            k.KVM_INTERNAL_ERROR_SIMUL_EX: "an exception happened while delivering another",
            k.KVM_INTERNAL_ERROR_DELIVERY_EV: "an event could not be delivered to the guest",
            k.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON:
                "the hardware exited for a reason KVM does not expect",
        }.get(self.suberror, f"internal error {self.suberror}")


@dataclass
class InterruptedExit(VmExit):
    """KVM_RUN was interrupted by a signal (KVM_EXIT_INTR, or ``EINTR``).
    Nothing happened to the guest; re-enter when ready."""


@dataclass
class SystemEventExit(VmExit):
    """The guest asked for a shutdown, reset or crash (KVM_EXIT_SYSTEM_EVENT)."""
    type: int


@dataclass
class DebugExit(VmExit):
    """A single step or breakpoint (KVM_EXIT_DEBUG, with KVM_SET_GUEST_DEBUG)."""
    exception: int
    pc: int


@dataclass
class OtherExit(VmExit):
    """Any exit minikvm does not decode; ``name`` still says which."""


def decode_exit(run: k.kvm_run) -> VmExit:
    """Read ``run.exit_reason`` and the matching union member into an object."""
    reason = run.exit_reason
    if reason == k.KVM_EXIT_IO:
        io = run.io
        length = io.size * io.count
        data = ctypes.string_at(ctypes.addressof(run) + io.data_offset, length)
        return IoExit(reason, io.port, io.direction == k.KVM_EXIT_IO_OUT, io.size,
                      io.count, data)
    if reason == k.KVM_EXIT_MMIO:
        mmio = run.mmio
        return MmioExit(reason, mmio.phys_addr, bool(mmio.is_write), mmio.len,
                        bytes(mmio.data)[:mmio.len])
    if reason == k.KVM_EXIT_HLT:
        return HltExit(reason)
    if reason == k.KVM_EXIT_SHUTDOWN:
        return ShutdownExit(reason)
    if reason == k.KVM_EXIT_FAIL_ENTRY:
        return FailEntryExit(reason, run.fail_entry.hardware_entry_failure_reason)
    if reason == k.KVM_EXIT_INTERNAL_ERROR:
        internal = run.internal
        count = min(internal.ndata, len(internal.data))
        return InternalErrorExit(reason, internal.suberror, tuple(internal.data[:count]))
    if reason == k.KVM_EXIT_INTR:
        return InterruptedExit(reason)
    if reason == k.KVM_EXIT_SYSTEM_EVENT:
        return SystemEventExit(reason, run.system_event.type)
    if reason == k.KVM_EXIT_DEBUG:
        return DebugExit(reason, run.debug.arch.exception, run.debug.arch.pc)
    return OtherExit(reason)

