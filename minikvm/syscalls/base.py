"""Layer 6 — what every system-call module shares: the table entry and
argument helpers.

A handler is a plain function ``handler(proc, arg0, arg1, …)`` taking the
:class:`~minikvm.process.process.Process` and the raw 64-bit register values it
needs (as many as its entry's ``args`` lists).  It returns a non-negative
result, or raises :class:`~minikvm.errors.SyscallError` (or ``OSError``
from the host) for an errno.  It never returns ``-errno`` itself: the
dispatcher is the one place that does that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

SUPPORTED = "supported"
PARTIAL = "partial"
REFUSED = "refused"

MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class Syscall:
    """One row of the system-call table.

    ``args`` names each argument's kind, for ``--trace`` (see
    :mod:`minikvm.syscalls.trace`): ``int``, ``uint``, ``hex``, ``fd``,
    ``dirfd``, ``path``, ``inbuf`` (bytes the guest gives, length in the next
    argument), ``outbuf`` (bytes the host fills; length is the result),
    ``ptr``, ``oflags``, ``mode``, ``prot``, ``mapflags``.
    ``status`` is SUPPORTED, PARTIAL (``note`` says what is missing) or
    REFUSED (always fails with ``errno``).
    """
    number: int
    name: str
    handler: Callable[..., int] | None
    args: tuple[str, ...] = ()
    status: str = SUPPORTED
    note: str = ""
    errno: int = 0


def signed32(value: int) -> int:
    """A register's low 32 bits as a C ``int`` (fds, flags, AT_FDCWD = -100)."""
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value & 0x8000_0000 else value


def signed64(value: int) -> int:
    """A register as a C ``long`` (offsets, ``ssize_t`` results)."""
    value &= MASK64
    return value - (1 << 64) if value & (1 << 63) else value


def views_after(views: list[memoryview], count: int) -> list[memoryview]:
    """*views* (a call's guest buffers) without their first *count* bytes:
    what is left of a read or write that went part of the way."""
    rest = []
    for view in views:
        if count >= len(view):
            count -= len(view)
            continue
        rest.append(view[count:])
        count = 0
    return rest
