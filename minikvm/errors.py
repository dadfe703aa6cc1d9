"""Layer 0 — the exceptions minikvm raises, with messages a newcomer can act on.

Every failure names what failed, the value involved, and what to do about it.
A bare ``OSError`` from an ioctl never escapes: :class:`KvmError` carries the
ioctl's kernel name and the errno name instead.
"""

from __future__ import annotations

import errno
import os


class MinikvmError(Exception):
    """Base class of every error minikvm raises on purpose."""


class KvmUnavailable(MinikvmError):
    """``/dev/kvm`` is missing or cannot be opened."""


class KvmError(MinikvmError):
    """An ioctl on a KVM file descriptor failed.

    ``ioctl`` is the kernel name (``KVM_SET_USER_MEMORY_REGION``), ``errno``
    the error number, and the message adds a hint when one is known.
    """

    def __init__(self, ioctl: str, err: int, hint: str = "") -> None:
        self.ioctl = ioctl
        self.errno = err
        name = errno.errorcode.get(err, str(err))
        message = f"{ioctl} failed: {name}: {os.strerror(err)}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class GuestMemoryError(MinikvmError):
    """A guest-physical access fell outside the guest's memory.

    Raised by the host's own accesses (loader, page tables); a *guest*
    pointer that is out of range becomes ``EFAULT`` for the guest instead.
    """


class ElfError(MinikvmError):
    """The program file is not an ELF minikvm can run."""


class SyscallError(MinikvmError):
    """A system call fails: the guest gets ``-errno`` in RAX.

    Raised anywhere below the syscall dispatcher (a bad guest pointer in
    ``mm.py`` raises ``SyscallError(EFAULT)``); the dispatcher is the one
    place that turns it into the return value.  ``reason`` is for
    ``--trace`` (``= -1 EACCES (denied: outside allowed paths)``).
    """

    def __init__(self, err: int, reason: str = "") -> None:
        self.errno = err
        self.reason = reason
        super().__init__(f"{errno.errorcode.get(err, err)}{': ' + reason if reason else ''}")


class SnapshotError(MinikvmError):
    """A snapshot cannot be taken, forked, saved or loaded (the message says why)."""
