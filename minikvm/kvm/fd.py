"""Layer 1 — the ``ioctl(2)`` call, the one way minikvm talks to KVM.

Every KVM file descriptor — system, VM, vCPU — is driven by ioctls, so
this module sits below all three (:mod:`minikvm.kvm.system`,
:mod:`minikvm.kvm.vm`, :mod:`minikvm.kvm.vcpu`) and imports none of them.
:func:`ioctl` is the one place where minikvm calls ``ioctl(2)``; it turns
a failure into a :class:`~minikvm.errors.KvmError` that names the ioctl,
the errno and, where the errno alone says little, what to do.
"""

from __future__ import annotations

import ctypes
import errno
from typing import Optional

from minikvm import ioctl as k
from minikvm.errors import KvmError

_libc = ctypes.CDLL(None, use_errno=True)
_libc_ioctl = _libc.ioctl
_libc_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc_ioctl.restype = ctypes.c_int

#: Hints for errors whose meaning is not obvious from the errno alone.
_HINTS = {
    (k.KVM_SET_USER_MEMORY_REGION, errno.EINVAL):
        "memory slots must be page-aligned and must not overlap each other",
    (k.KVM_SET_USER_MEMORY_REGION, errno.EEXIST):
        "that guest-physical range already belongs to another slot",
    (k.KVM_CREATE_VCPU, errno.EEXIST): "a vCPU with this id already exists",
    (k.KVM_SET_CPUID2, errno.E2BIG): "more CPUID entries than KVM accepts",
    (k.KVM_SET_MSRS, errno.EINVAL): "an MSR index or value was refused",
}


def ioctl(fd: int, request: int, arg: object = 0) -> int:
    """Issue one ioctl; return its non-negative result or raise KvmError.

    *arg* is an int (passed by value), or a ctypes object (passed by
    reference, so the kernel can read and write it in place).
    """
    if isinstance(arg, (ctypes.Structure, ctypes.Union, ctypes.Array, ctypes._SimpleCData)):
        pointer: Optional[int] = ctypes.addressof(arg)
    else:
        pointer = arg  # type: ignore[assignment]
    result = _libc_ioctl(fd, request, pointer)
    if result < 0:
        err = ctypes.get_errno()
        raise KvmError(k.ioctl_name(request), err, _HINTS.get((request, err), ""))
    return result
