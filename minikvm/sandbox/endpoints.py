"""Layer 4 — endpoints: the addresses a guest may connect to, and the objects behind them.

A connect grant is written as text (``127.0.0.1:8080``, ``[::1]:80``,
``unix:/run/app.sock``, ``unix:@abstract``) and parsed once, here, into an
:class:`Endpoint`, which compares by value: the policy's question "is this
address allowed?" is then ``wanted in endpoints``.

Names can be redirected; objects cannot
---------------------------------------
An IP endpoint is a number, and an abstract unix socket a name in the
kernel's own table that the guest cannot bind (the policy refuses ``bind``),
so neither can be pointed elsewhere.  A unix socket *path* is different: it
is a name in the file system, and if the guest can write the directory that
holds it, the guest can replace it::

    --allow-connect unix:/w/app.sock        (the guest may write /w)
    guest: unlink("/w/app.sock"); symlink("/run/docker.sock", "/w/app.sock")
    guest: connect("/w/app.sock")   ->  the host would follow the symlink

So each unix path endpoint is *pinned* when the policy is built: the socket
file is opened ``O_PATH`` (see :class:`PinnedSocket`) and every allowed
connect goes to ``/proc/self/fd/N``, a magic link the kernel resolves to
exactly that inode, whatever now sits at the name (``unix_find_bsd`` follows
it like any link; see net/unix/af_unix.c).  The catch, documented for users:
a server that is restarted makes a new socket inode, and the sandbox keeps
connecting to the old one (``ECONNREFUSED``) until it is restarted too; a
socket that did not exist when the sandbox started cannot be reached
(``ENOENT``).  Both fail closed.

This module imports nothing above layer 0.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import posixpath
import socket
import stat as stat_module
from dataclasses import dataclass
from typing import Optional, Union

from minikvm.errors import MinikvmError
from minikvm.linux_abi import O_CLOEXEC, O_PATH
from minikvm.sandbox.grants import absolute_path

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class EndpointError(MinikvmError):
    """An endpoint is written wrongly (the policy turns it into a PolicyError)."""


@dataclass(frozen=True)
class Endpoint:
    """An address the guest may connect to: numeric IP and port, or a unix path.

    ``host`` is an :mod:`ipaddress` object for IP endpoints (an IPv4-mapped
    IPv6 address is stored as the IPv4 address, so ``[::ffff:127.0.0.1]:80``
    and ``127.0.0.1:80`` are the same endpoint); ``path`` is set for unix
    sockets, an abstract socket starting with ``"@"``.
    """

    family: int
    host: Optional[IPAddress] = None
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.family == socket.AF_UNIX:
            return f"unix:{self.path}"
        if self.family == socket.AF_INET6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def is_unix_path(self) -> bool:
        """A unix socket named by a file-system path (not abstract)."""
        return self.family == socket.AF_UNIX and self.path.startswith("/")


def parse_endpoint(text: str) -> Endpoint:
    """Parse ``"127.0.0.1:8080"``, ``"[::1]:80"``, ``"unix:/path"`` or ``"unix:@abstract"``.

    Hosts must be numeric: a name would be resolved once, here, while the
    guest may later reach a different address under the same name.
    """
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if path.startswith("@") and len(path) > 1:
            return Endpoint(socket.AF_UNIX, path=path)
        if not path.startswith("/"):
            raise EndpointError(f"endpoint {text!r}: a unix socket path must be "
                                "absolute (unix:/run/app.sock) or abstract (unix:@name)")
        return Endpoint(socket.AF_UNIX, path=posixpath.normpath(path))
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise EndpointError(f"endpoint {text!r} is not HOST:PORT, [IPV6]:PORT or "
                            "unix:PATH (e.g. 127.0.0.1:8080, [::1]:80, unix:/run/app.sock)")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise EndpointError(f"endpoint {text!r}: {host!r} is not a numeric IP "
                            "address (host names are not accepted: resolve it "
                            "yourself and give the address)") from None
    if text.startswith("[") != (address.version == 6):
        raise EndpointError(f"endpoint {text!r}: write IPv6 addresses in brackets "
                            "([::1]:80) and IPv4 addresses without them")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise EndpointError(f"endpoint {text!r}: port {port!r} is not a number "
                            "from 1 to 65535")
    return ip_endpoint(address, int(port))


def ip_endpoint(address: IPAddress, port: int) -> Endpoint:
    """An IP endpoint, with IPv4-mapped IPv6 addresses folded into IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return Endpoint(family, host=address, port=port)


class AddressError(Exception):
    """A guest's address is not one an endpoint can match (*errno*, *reason*)."""

    def __init__(self, err: int, reason: str) -> None:
        super().__init__(reason)
        self.errno = err
        self.reason = reason


def guest_endpoint(family: int, address: object, cwd: str) -> Endpoint:
    """The endpoint a guest's *address* names, to compare with the allowed ones.

    *address* is what Python's socket module takes (``(host, port)``, a unix
    path as str or bytes, a leading NUL for an abstract name); a relative
    unix path is taken relative to the guest's *cwd*.  Raises
    :class:`AddressError`: ``EINVAL`` for an empty or non-numeric address,
    ``EAFNOSUPPORT`` for another family.
    """
    if family == socket.AF_UNIX:
        raw = os.fsdecode(address)  # type: ignore[call-overload]
        if not raw:
            raise AddressError(errno.EINVAL, "an empty unix socket address")
        if raw.startswith("\0"):
            return Endpoint(socket.AF_UNIX, path="@" + raw[1:])
        return Endpoint(socket.AF_UNIX, path=absolute_path(raw, cwd)[0])
    if family in (socket.AF_INET, socket.AF_INET6):
        try:
            host, port = address[0], int(address[1])  # type: ignore[index]
            return ip_endpoint(ipaddress.ip_address(str(host).split("%")[0]), port)
        except (TypeError, ValueError, IndexError):
            raise AddressError(errno.EINVAL, "not a numeric address and port") from None
    raise AddressError(errno.EAFNOSUPPORT, f"socket family {family} is not supported (only "
                       "unix, IPv4 and IPv6)")


class PinnedSocket:
    """The socket file a unix path endpoint named when the policy was built.

    ``fd`` is an ``O_PATH`` descriptor of it (None if nothing was there, or
    not a socket: then connects fail with ``ENOENT``/``ECONNREFUSED`` as for
    a missing server); :attr:`address` is what the host passes to
    ``connect``.  The path is resolved once, now, with the host's ordinary
    lookup: the person who wrote the policy chose it, the guest has not run.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: Optional[int] = None
        self.problem = ""
        try:
            fd = os.open(path, O_PATH | O_CLOEXEC)
        except OSError as error:
            self.problem = f"{error.strerror} when the sandbox started"
            return
        if not stat_module.S_ISSOCK(os.fstat(fd).st_mode):
            os.close(fd)
            self.problem = "not a socket when the sandbox started"
            return
        self.fd = fd

    @property
    def address(self) -> bytes:
        """The ``sun_path`` that reaches exactly the pinned inode.

        Raises ``OSError(ENOENT)`` when nothing was pinned: the guest sees
        what connecting to a missing socket gives on Linux.
        """
        if self.fd is None:
            raise OSError(errno.ENOENT, f"unix socket {self.path}: {self.problem}")
        return os.fsencode(f"/proc/self/fd/{self.fd}")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


__all__ = ["Endpoint", "EndpointError", "AddressError", "PinnedSocket", "parse_endpoint",
           "ip_endpoint", "guest_endpoint"]
