"""Layer 1 — the KVM system: the ``/dev/kvm`` file descriptor.

KVM exposes three kinds of file descriptor, each with its own ioctls
(Documentation/virt/kvm/api.rst, "General description")::

    /dev/kvm  --KVM_CREATE_VM-->  VM fd  --KVM_CREATE_VCPU-->  vCPU fd
    (system)                      (vm.py)                      (vcpu.py)

This module owns the first: it checks the API version, answers capability
questions and creates VMs.  Creation flows downward, as in rust-vmm's
``kvm-ioctls``: this module imports :mod:`minikvm.kvm.vm`, which imports
:mod:`minikvm.kvm.vcpu`; all three issue their ioctls through
:func:`minikvm.kvm.fd.ioctl`, the layer's lowest module.
"""

from __future__ import annotations

import ctypes
import os

from minikvm import ioctl as k
from minikvm.errors import KvmUnavailable
from minikvm.kvm.fd import ioctl
from minikvm.kvm.vm import Vm

KVM_DEVICE = "/dev/kvm"

#: KVM_GET_SUPPORTED_CPUID's answers, by the number of entries asked for.
_supported_cpuid: dict[int, ctypes.Structure] = {}


class Kvm:
    """The KVM subsystem, reached through ``/dev/kvm``.

    Use it as a context manager so the fd is closed deterministically::

        with Kvm() as kvm:
            print(kvm.api_version())
    """

    def __init__(self, path: str = KVM_DEVICE) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KvmUnavailable(
                f"{path} does not exist: this machine has no KVM. Enable "
                "virtualization in the firmware (or nested virtualization in the "
                "cloud VM) and load the kvm_intel or kvm_amd module") from None
        except PermissionError:
            raise KvmUnavailable(
                f"{path} exists but cannot be opened for reading and writing: add "
                "yourself to its group (usually 'kvm': sudo adduser $USER kvm, then "
                "log in again)") from None
        version = self.api_version()
        if version != k.KVM_API_VERSION:
            self.close()
            raise KvmUnavailable(
                f"KVM_GET_API_VERSION returned {version}, expected {k.KVM_API_VERSION}: "
                "this kernel's KVM is not one minikvm understands")

    # -- lifetime ---------------------------------------------------------
    def close(self) -> None:
        """Close the ``/dev/kvm`` fd (VMs created from it stay valid)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Kvm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- system ioctls ----------------------------------------------------
    def api_version(self) -> int:
        """KVM_GET_API_VERSION: always 12 on any kernel since 2.6.22."""
        return ioctl(self.fd, k.KVM_GET_API_VERSION)

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION: 0 when *cap* (a ``KVM_CAP_*``) is missing,
        otherwise a positive value whose meaning depends on the capability
        (a count, a size or a bit mask)."""
        return ioctl(self.fd, k.KVM_CHECK_EXTENSION, cap)

    def vcpu_mmap_size(self) -> int:
        """KVM_GET_VCPU_MMAP_SIZE: bytes to mmap from a vCPU fd to reach
        ``kvm_run`` (and the pages after it that hold PIO data)."""
        return ioctl(self.fd, k.KVM_GET_VCPU_MMAP_SIZE)

    def get_supported_cpuid(self, max_entries: int = 256) -> ctypes.Structure:
        """KVM_GET_SUPPORTED_CPUID (KVM_CAP_EXT_CPUID): the CPUID leaves this
        host can show a guest.  Returns a ``kvm_cpuid2`` with ``nent`` set to
        the number of valid entries.  E2BIG means *max_entries* was too few.

        The answer is a fact about the host, so it is asked once per host
        process (~0.3 ms on PVM, and every exec wants it for ``AT_HWCAP``);
        each caller gets a copy of its own, which it may change."""
        cached = _supported_cpuid.get(max_entries)
        if cached is None:
            cached = k.kvm_cpuid2_with(max_entries)
            ioctl(self.fd, k.KVM_GET_SUPPORTED_CPUID, cached)
            _supported_cpuid[max_entries] = cached
        return type(cached).from_buffer_copy(cached)

    def create_vm(self) -> Vm:
        """KVM_CREATE_VM: a new, empty virtual machine (see :class:`~minikvm.kvm.vm.Vm`)."""
        return Vm(ioctl(self.fd, k.KVM_CREATE_VM), self)
