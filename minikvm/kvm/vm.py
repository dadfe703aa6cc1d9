"""Layer 1 — a virtual machine: memory slots and vCPUs.

A VM fd is what ``KVM_CREATE_VM`` returns.  On it we describe the guest's
physical address space (memory slots) and create vCPUs.  A VM with memory
but no vCPU does nothing; a vCPU without memory has nothing to execute.
"""

from __future__ import annotations

import ctypes
import os
from typing import TYPE_CHECKING

from minikvm import ioctl as k
from minikvm.kvm.fd import ioctl
from minikvm.kvm.memory import GuestMemory
from minikvm.kvm.vcpu import Vcpu

if TYPE_CHECKING:
    from minikvm.kvm.system import Kvm

#: Where KVM_SET_TSS_ADDR puts the three pages Intel VMX needs to emulate
#: real mode (just below 4 GiB, where no guest RAM of ours ever is).
TSS_ADDRESS = 0xFFFB_D000
#: Where KVM_SET_IDENTITY_MAP_ADDR puts the one-page identity table of VMX.
IDENTITY_MAP_ADDRESS = 0xFFFB_C000


class Vm:
    """One virtual machine.  Close it (or use ``with``) to free it."""

    def __init__(self, fd: int, kvm: "Kvm") -> None:
        self.fd = fd
        self.kvm = kvm
        self.slots: dict[int, GuestMemory] = {}
        self.vcpus: list[Vcpu] = []
        #: ``KVM_GET_VCPU_MMAP_SIZE``, asked of the system on the first vCPU.
        self._run_mmap_size = 0

    def close(self) -> None:
        """Close every vCPU, then the VM fd.  Guest memory belongs to the caller."""
        for vcpu in self.vcpus:
            vcpu.close()
        self.vcpus.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Vm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- VM ioctls --------------------------------------------------------
    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION on the VM fd: like the system one, but some
        answers (``KVM_CAP_XSAVE2``, ``KVM_CAP_NR_MEMSLOTS``) are per VM."""
        return ioctl(self.fd, k.KVM_CHECK_EXTENSION, cap)

    def set_user_memory_region(self, slot: int, memory: GuestMemory, flags: int = 0) -> None:
        """KVM_SET_USER_MEMORY_REGION (KVM_CAP_USER_MEMORY): back the
        guest-physical range ``[memory.base, memory.base + memory.size)``
        with the host mapping of *memory*.

        *flags* may hold ``KVM_MEM_LOG_DIRTY_PAGES`` (track writes for
        KVM_GET_DIRTY_LOG) or ``KVM_MEM_READONLY``.  Slots must not overlap.
        """
        region = k.kvm_userspace_memory_region(
            slot=slot, flags=flags, guest_phys_addr=memory.base,
            memory_size=memory.size, userspace_addr=memory.host_address)
        ioctl(self.fd, k.KVM_SET_USER_MEMORY_REGION, region)
        self.slots[slot] = memory

    def delete_user_memory_region(self, slot: int) -> None:
        """Remove a slot: KVM_SET_USER_MEMORY_REGION with a size of zero."""
        region = k.kvm_userspace_memory_region(slot=slot)
        ioctl(self.fd, k.KVM_SET_USER_MEMORY_REGION, region)
        self.slots.pop(slot, None)

    def set_tss_addr(self, address: int = TSS_ADDRESS) -> None:
        """KVM_SET_TSS_ADDR (KVM_CAP_SET_TSS_ADDR): three pages of guest-physical
        space Intel VMX uses to run real-mode code.  Harmless elsewhere."""
        ioctl(self.fd, k.KVM_SET_TSS_ADDR, address)

    def set_identity_map_addr(self, address: int = IDENTITY_MAP_ADDRESS) -> None:
        """KVM_SET_IDENTITY_MAP_ADDR: one page for VMX's unpaged-mode identity table."""
        value = ctypes.c_uint64(address)
        ioctl(self.fd, k.KVM_SET_IDENTITY_MAP_ADDR, value)

    def get_dirty_log(self, slot: int) -> bytes:
        """KVM_GET_DIRTY_LOG: a bitmap, one bit per page of *slot*, of the
        pages written since the last call (which also clears it and
        write-protects them again; with manual protection, see
        :meth:`clear_dirty_log`, since the last clear).  The slot must have
        been added with ``KVM_MEM_LOG_DIRTY_PAGES``."""
        memory = self.slots[slot]
        pages = memory.size // 4096
        bitmap = (ctypes.c_uint64 * ((pages + 63) // 64))()
        log = k.kvm_dirty_log(slot=slot, dirty_bitmap=ctypes.addressof(bitmap))
        ioctl(self.fd, k.KVM_GET_DIRTY_LOG, log)
        return bytes(bitmap)

    def clear_dirty_log(self, slot: int, bitmap: bytes) -> None:
        """KVM_CLEAR_DIRTY_LOG over the whole of *slot*: clear the bits set
        in *bitmap* and write-protect those pages again, so that their next
        write is logged.  Only with ``KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2``
        enabled; otherwise :meth:`get_dirty_log` does this itself."""
        memory = self.slots[slot]
        buffer = ctypes.create_string_buffer(bytes(bitmap), len(bitmap))
        log = k.kvm_clear_dirty_log(slot=slot, num_pages=memory.size // 4096, first_page=0,
                                    dirty_bitmap=ctypes.addressof(buffer))
        ioctl(self.fd, k.KVM_CLEAR_DIRTY_LOG, log)

    def enable_cap(self, cap: int, *args: int) -> None:
        """KVM_ENABLE_CAP on the VM: switch on an optional VM-wide behaviour."""
        request = k.kvm_enable_cap(cap=cap)
        for i, value in enumerate(args):
            request.args[i] = value
        ioctl(self.fd, k.KVM_ENABLE_CAP, request)

    def create_vcpu(self, vcpu_id: int = 0) -> Vcpu:
        """KVM_CREATE_VCPU: a new virtual CPU; see :class:`~minikvm.kvm.vcpu.Vcpu`."""
        if not self._run_mmap_size:
            self._run_mmap_size = self.kvm.vcpu_mmap_size()
        vcpu = Vcpu(ioctl(self.fd, k.KVM_CREATE_VCPU, vcpu_id), self, self._run_mmap_size)
        self.vcpus.append(vcpu)
        return vcpu
