"""Layer 6 — minikvm's own system calls: the request API and the call return.

A program written for ``minikvm serve`` (or for a snapshot's forks) asks
the host for work with two calls that Linux does not have.  Their numbers
are above every Linux x86-64 system call (``__NR_syscalls`` is below 500),
so they can never collide with one; ``include/minikvm.h`` wraps them as
inline ``syscall`` instructions, with no library to link::

    number  name                   arguments        result
    ------  ---------------------  ---------------  -----------------------------
    500     minikvm_wait_request   buf, size        length of the request, 0 = no
                                                    more requests, or -errno
    501     minikvm_respond        buf, len         len (the bytes are appended
                                                    to this request's response)
    502     minikvm_call_return    value            never returns (the host's
                                                    call stub makes it)
    503     (reserved)

What they do depends on :attr:`Process.requests <minikvm.process.process.Process.requests>`,
the *request channel* of the process:

* ``None`` (a plain ``minikvm run``): there is nobody to ask.
  ``minikvm_wait_request`` and ``minikvm_respond`` fail with ``ENOTCONN``;
  the header's wrappers then fall back to reading the request from stdin
  and writing the response to stdout — which is also what they do on Linux,
  where the numbers give ``ENOSYS`` — so the same program runs natively,
  under ``minikvm run`` (one request from stdin) and under ``minikvm serve``.
* a channel (:class:`minikvm.snapshot.channel.RequestChannel`): the first
  ``minikvm_wait_request`` is the *ready point* where the host takes a
  snapshot; afterwards each call hands over one request, and the response
  is what the program passed to ``minikvm_respond`` before its next wait.

A channel has three methods, which may raise a ``BaseException`` to leave
:meth:`Machine.run <minikvm.machine.machine.Machine.run>` (the way ``exit`` does)::

    wait(proc, buffer, size) -> int      # the request's length
    respond(proc, data: bytes) -> None
    call_returned(proc, value: int)      # never returns normally

and two attributes: ``response_size``, the bytes responded so far in this
request, and ``response_too_large``, which this module sets when a respond
would pass :data:`MAX_RESPONSE` (the reply then fails as a whole).

The guest is hostile: each handler checks its pointers through the memory
manager (EFAULT) and its sizes, and a guest that jumps to the call-return
stub on its own gets EINVAL, not a host exception.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from minikvm.cpu.guestcode import MINIKVM_SYS_CALL_RETURN
from minikvm.errors import SyscallError
from minikvm.syscalls.base import PARTIAL, Syscall

if TYPE_CHECKING:
    from minikvm.process.process import Process

MINIKVM_SYS_WAIT_REQUEST = 500
MINIKVM_SYS_RESPOND = 501
#: The largest response one request may build up (the sum of its
#: ``minikvm_respond`` calls); beyond it the call fails with EMSGSIZE.
MAX_RESPONSE = 64 << 20

NO_CHANNEL = ("no request source: the program runs under a plain 'minikvm run' "
              "(use 'minikvm serve', or a snapshot's fork)")


def sys_minikvm_wait_request(proc: Process, buffer: int, size: int) -> int:
    """Wait for the next request and copy it to ``buffer`` (at most ``size`` bytes)."""
    if proc.requests is None:
        raise SyscallError(errno.ENOTCONN, NO_CHANNEL)
    proc.mm.views(buffer, size)  # EFAULT now, not when a request comes
    return proc.requests.wait(proc, buffer, size)


def sys_minikvm_respond(proc: Process, buffer: int, length: int) -> int:
    """Append ``length`` bytes at ``buffer`` to the current response."""
    if proc.requests is None:
        raise SyscallError(errno.ENOTCONN, NO_CHANNEL)
    if length > MAX_RESPONSE - proc.requests.response_size:
        # Checked against the sum before guest memory is read: a request
        # may not build more than MAX_RESPONSE bytes of host memory, in one
        # call or in many.  The reply then fails as a whole (serve: 502).
        proc.requests.response_too_large = True
        raise SyscallError(errno.EMSGSIZE, f"response of {proc.requests.response_size} + "
                                           f"{length} bytes is larger than {MAX_RESPONSE} bytes")
    for view in proc.mm.views(buffer, length):   # all checked before the first is appended
        proc.requests.respond(proc, view)
    return length


def sys_minikvm_call_return(proc: Process, value: int) -> int:
    """The call-return stub reports a host-called function's result."""
    if proc.requests is None or not getattr(proc.requests, "calling", False):
        raise SyscallError(errno.EINVAL, "no call from the host is in progress")
    return proc.requests.call_returned(proc, value)


SYSCALLS = [
    Syscall(MINIKVM_SYS_WAIT_REQUEST, "minikvm_wait_request", sys_minikvm_wait_request,
            ("outbuf", "uint"), PARTIAL,
            "minikvm's own: the next request; ENOTCONN outside a server"),
    Syscall(MINIKVM_SYS_RESPOND, "minikvm_respond", sys_minikvm_respond, ("inbuf", "uint"),
            PARTIAL, "minikvm's own: append to the response; ENOTCONN outside a server"),
    Syscall(MINIKVM_SYS_CALL_RETURN, "minikvm_call_return", sys_minikvm_call_return, ("hex",),
            PARTIAL, "minikvm's own: made by the host's call-return stub; EINVAL otherwise"),
]
