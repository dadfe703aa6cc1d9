"""Layer 1 — a virtual CPU: registers, the shared ``kvm_run`` page, KVM_RUN.

A vCPU fd is what ``KVM_CREATE_VCPU`` returns.  Mapping it gives the
``kvm_run`` page the kernel and we share: after every exit it says why the
guest stopped.  With ``KVM_CAP_SYNC_REGS`` the same page also carries the
registers, so the hot path (one exit per guest system call) reads and
writes them there instead of paying two more ioctls per exit.

The threading rule of KVM (api.rst §"General description"): vCPU ioctls
must be issued from the thread that created the vCPU.  minikvm keeps each
vCPU on one thread.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
from typing import TYPE_CHECKING, Iterable

from minikvm import ioctl as k
from minikvm.errors import KvmError
from minikvm.kvm.fd import _libc, ioctl

if TYPE_CHECKING:
    from minikvm.kvm.exits import VmExit
    from minikvm.kvm.vm import Vm

EINTR = 4
EAGAIN = 11

#: The C library's ``ioctl`` once more, as its own ctypes function object
#: (``_libc["ioctl"]`` makes a new one; :mod:`minikvm.kvm.fd`'s keeps its
#: ``argtypes``) for KVM_RUN alone.  It has no ``argtypes``: ctypes then
#: passes a Python int as a C ``int`` and None as a NULL pointer, with no
#: conversion objects — enough for KVM_RUN, whose fd and request (0xAE80)
#: fit in an ``int`` and whose argument is unused.  Checking the three
#: arguments against ``argtypes`` on every exit cost ~4 µs per system
#: call on PVM (docs/explanation/performance.md).
_kvm_run_ioctl = _libc["ioctl"]
_kvm_run_ioctl.restype = ctypes.c_int


class Vcpu:
    """One virtual CPU of a :class:`~minikvm.kvm.vm.Vm`."""

    def __init__(self, fd: int, vm: "Vm", run_mmap_size: int) -> None:
        """Wrap vCPU *fd* of *vm*; *run_mmap_size* is the system's
        ``KVM_GET_VCPU_MMAP_SIZE``, which the VM asks once and hands down
        (a vCPU never reaches up to the system object)."""
        self.fd = fd
        self.vm = vm
        self._map = mmap.mmap(fd, run_mmap_size, flags=mmap.MAP_SHARED,
                              prot=mmap.PROT_READ | mmap.PROT_WRITE)
        #: The shared ``kvm_run`` page, as a live ctypes view.
        self.run_state = k.kvm_run.from_buffer(self._map)
        self.sync_regs_enabled = 0
        #: KVM_RUN as a ready-made call: ``enter()`` is the raw ioctl's
        #: result (0, or -1 with errno set; see :meth:`run_failed`).  The
        #: fd and request are bound once because the run loop makes this
        #: call on every exit (docs/explanation/performance.md).
        self.enter = functools.partial(_kvm_run_ioctl, fd, k.KVM_RUN, None)

    def close(self) -> None:
        """Unmap ``kvm_run`` and close the vCPU fd."""
        if self.fd < 0:
            return
        del self.run_state
        try:
            self._map.close()
        except BufferError:
            # A caller still holds a ctypes view into kvm_run (synced_regs…);
            # the page is unmapped when the last view is garbage-collected.
            pass
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> "Vcpu":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running ----------------------------------------------------------
    def run(self) -> VmExit:
        """KVM_RUN: enter the guest until it exits; return the typed exit.

        A signal that interrupts KVM_RUN (``EINTR``) is not an error: it
        returns :class:`~minikvm.kvm.exits.InterruptedExit`.
        """
        # Imported here, not at the top: minikvm's own run loop never builds
        # exit objects, and creating the exit classes is a measurable part
        # of `minikvm run`'s start-up (docs/explanation/performance.md).
        from minikvm.kvm.exits import InterruptedExit, decode_exit
        if self.run_once() < 0:
            return InterruptedExit(k.KVM_EXIT_INTR)
        return decode_exit(self.run_state)

    def run_once(self) -> int:
        """KVM_RUN without decoding: returns ``kvm_run.exit_reason``, or -1
        when a signal interrupted the run.  The syscall hot path uses this
        and reads the ``kvm_run`` fields it needs directly."""
        if self.enter() < 0:
            return self.run_failed()
        return self.run_state.exit_reason

    def run_failed(self) -> int:
        """After :meth:`enter` returned -1: -1 when a signal interrupted
        KVM_RUN (``EINTR``, or ``EAGAIN`` with ``immediate_exit``); any
        other errno raises :class:`~minikvm.errors.KvmError`."""
        err = ctypes.get_errno()
        if err in (EINTR, EAGAIN):
            return -1
        raise KvmError("KVM_RUN", err, "the vCPU state is probably invalid")

    def set_io_data(self, data: bytes) -> None:
        """Answer an ``in`` exit: the bytes the guest's ``in`` will read."""
        io = self.run_state.io
        ctypes.memmove(ctypes.addressof(self.run_state) + io.data_offset, data, len(data))

    def set_mmio_data(self, data: bytes) -> None:
        """Answer an MMIO read exit: the bytes the guest's load will read."""
        ctypes.memmove(self.run_state.mmio.data, data, len(data))

    # -- sync regs: registers through kvm_run -----------------------------
    def enable_sync_regs(self, classes: int = k.KVM_SYNC_X86_REGS | k.KVM_SYNC_X86_SREGS) -> None:
        """Ask KVM (KVM_CAP_SYNC_REGS) to copy the register *classes* into
        ``kvm_run.s.regs`` on every exit.  Afterwards :attr:`synced_regs` is
        valid after each exit, and :meth:`mark_regs_dirty` sends changes back
        on the next KVM_RUN without a KVM_SET_REGS ioctl."""
        if not self.vm.check_extension(k.KVM_CAP_SYNC_REGS) & classes == classes:
            raise KvmError("KVM_CHECK_EXTENSION(KVM_CAP_SYNC_REGS)", 95,
                           "this KVM cannot sync these register classes through kvm_run")
        self.run_state.kvm_valid_regs = classes
        self.sync_regs_enabled = classes

    @property
    def synced_regs(self) -> k.kvm_regs:
        """The general registers in ``kvm_run`` (valid after an exit when
        sync regs are enabled).  Writes need :meth:`mark_regs_dirty`."""
        return self.run_state.s.regs.regs

    @property
    def synced_sregs(self) -> k.kvm_sregs:
        """The special registers in ``kvm_run`` (read-only use here:
        marking them dirty costs a full MMU reset in KVM)."""
        return self.run_state.s.regs.sregs

    def mark_regs_dirty(self) -> None:
        """Have the next KVM_RUN load ``kvm_run.s.regs.regs`` into the vCPU."""
        self.run_state.kvm_dirty_regs |= k.KVM_SYNC_X86_REGS

    # -- vCPU ioctls ------------------------------------------------------
    def get_regs(self) -> k.kvm_regs:
        """KVM_GET_REGS: the general-purpose registers, RIP and RFLAGS."""
        regs = k.kvm_regs()
        ioctl(self.fd, k.KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs: k.kvm_regs) -> None:
        """KVM_SET_REGS: load the general-purpose registers, RIP and RFLAGS."""
        ioctl(self.fd, k.KVM_SET_REGS, regs)

    def get_sregs(self) -> k.kvm_sregs:
        """KVM_GET_SREGS: segments, control registers, EFER, GDTR/IDTR."""
        sregs = k.kvm_sregs()
        ioctl(self.fd, k.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: k.kvm_sregs) -> None:
        """KVM_SET_SREGS: load segments and control registers.  This is how
        the CPU mode is chosen (CR0.PE, CR0.PG, EFER.LME, CS.L)."""
        ioctl(self.fd, k.KVM_SET_SREGS, sregs)

    def get_fpu(self) -> k.kvm_fpu:
        """KVM_GET_FPU: x87 and SSE state in FXSAVE layout."""
        fpu = k.kvm_fpu()
        ioctl(self.fd, k.KVM_GET_FPU, fpu)
        return fpu

    def set_fpu(self, fpu: k.kvm_fpu) -> None:
        """KVM_SET_FPU: load x87 and SSE state (e.g. the MXCSR reset value)."""
        ioctl(self.fd, k.KVM_SET_FPU, fpu)

    def get_xsave(self) -> k.kvm_xsave:
        """KVM_GET_XSAVE (KVM_CAP_XSAVE): the whole extended state (AVX too)."""
        xsave = k.kvm_xsave()
        ioctl(self.fd, k.KVM_GET_XSAVE, xsave)
        return xsave

    def set_xsave(self, xsave: k.kvm_xsave) -> None:
        """KVM_SET_XSAVE (KVM_CAP_XSAVE): load the extended state."""
        ioctl(self.fd, k.KVM_SET_XSAVE, xsave)

    def get_msrs(self, indices: Iterable[int]) -> dict[int, int]:
        """KVM_GET_MSRS: read model-specific registers; returns index → value.
        The ioctl returns how many it read; a short count means KVM refused
        the MSR at that position."""
        indices = list(indices)
        msrs = k.kvm_msrs_with(len(indices))
        for entry, index in zip(msrs.entries, indices):
            entry.index = index
        done = ioctl(self.fd, k.KVM_GET_MSRS, msrs)
        if done != len(indices):
            raise KvmError("KVM_GET_MSRS", 22, f"MSR {indices[done]:#x} cannot be read")
        return {entry.index: entry.data for entry in msrs.entries}

    def set_msrs(self, values: dict[int, int]) -> None:
        """KVM_SET_MSRS: write model-specific registers (EFER, STAR, LSTAR,
        FS_BASE, …).  A short count means the MSR at that position was refused."""
        msrs = k.kvm_msrs_with(len(values))
        for entry, (index, data) in zip(msrs.entries, values.items()):
            entry.index = index
            entry.data = data
        done = ioctl(self.fd, k.KVM_SET_MSRS, msrs)
        if done != len(values):
            index = list(values)[done]
            raise KvmError("KVM_SET_MSRS", 22, f"MSR {index:#x} = {values[index]:#x} was refused")

    def get_tsc_khz(self) -> int:
        """KVM_GET_TSC_KHZ (KVM_CAP_GET_TSC_KHZ): the frequency of the
        guest's TSC in kHz (the host's, unless scaled)."""
        return ioctl(self.fd, k.KVM_GET_TSC_KHZ)

    def get_tsc_offset(self) -> int | None:
        """KVM_GET_DEVICE_ATTR of ``KVM_VCPU_TSC_OFFSET`` (Linux 5.16+): what
        KVM adds to the host's TSC to make the guest's, as a signed number;
        None where the kernel does not offer the attribute (PVM does)."""
        value = ctypes.c_uint64()
        attr = k.kvm_device_attr(group=k.KVM_VCPU_TSC_CTRL, attr=k.KVM_VCPU_TSC_OFFSET,
                                 addr=ctypes.addressof(value))
        try:
            ioctl(self.fd, k.KVM_GET_DEVICE_ATTR, attr)
        except KvmError:
            return None
        return value.value - (1 << 64) if value.value >> 63 else value.value

    def set_cpuid2(self, cpuid: ctypes.Structure) -> None:
        """KVM_SET_CPUID2: the CPUID leaves the guest sees (usually those of
        :meth:`Kvm.get_supported_cpuid`).  Set it before the first KVM_RUN."""
        ioctl(self.fd, k.KVM_SET_CPUID2, cpuid)

    def get_cpuid2(self, max_entries: int = 256) -> ctypes.Structure:
        """KVM_GET_CPUID2: the CPUID leaves this vCPU shows the guest."""
        cpuid = k.kvm_cpuid2_with(max_entries)
        ioctl(self.fd, k.KVM_GET_CPUID2, cpuid)
        return cpuid

    def get_xcrs(self) -> k.kvm_xcrs:
        """KVM_GET_XCRS (KVM_CAP_XCRS): the extended control registers."""
        xcrs = k.kvm_xcrs()
        ioctl(self.fd, k.KVM_GET_XCRS, xcrs)
        return xcrs

    def set_xcr0(self, value: int) -> None:
        """KVM_SET_XCRS: set XCR0, the mask of state components XSAVE manages
        (x87, SSE, AVX …).  Needed before the guest may use AVX."""
        xcrs = k.kvm_xcrs(nr_xcrs=1)
        xcrs.xcrs[0].xcr = 0
        xcrs.xcrs[0].value = value
        ioctl(self.fd, k.KVM_SET_XCRS, xcrs)

    def get_vcpu_events(self) -> k.kvm_vcpu_events:
        """KVM_GET_VCPU_EVENTS: pending exceptions, interrupts and NMIs."""
        events = k.kvm_vcpu_events()
        ioctl(self.fd, k.KVM_GET_VCPU_EVENTS, events)
        return events

    def set_vcpu_events(self, events: k.kvm_vcpu_events) -> None:
        """KVM_SET_VCPU_EVENTS: load pending events (used when restoring)."""
        ioctl(self.fd, k.KVM_SET_VCPU_EVENTS, events)

    def set_guest_debug(self, control: int) -> None:
        """KVM_SET_GUEST_DEBUG (KVM_CAP_SET_GUEST_DEBUG): e.g.
        ``KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP`` to step one instruction."""
        debug = k.kvm_guest_debug(control=control)
        ioctl(self.fd, k.KVM_SET_GUEST_DEBUG, debug)

    def translate(self, linear_address: int) -> k.kvm_translation:
        """KVM_TRANSLATE: walk the guest's page tables as the vCPU would."""
        translation = k.kvm_translation(linear_address=linear_address)
        ioctl(self.fd, k.KVM_TRANSLATE, translation)
        return translation
