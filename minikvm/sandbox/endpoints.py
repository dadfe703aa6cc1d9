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

Names, wildcards and the whole network
--------------------------------------
A user writes ``--allow-connect pypi.org:443``.  A name is resolved
**once, when the policy is built** (:func:`resolve_endpoints`), and every
address it resolves to becomes an endpoint: the guest's own lookups later
cannot widen the grant, whatever a DNS server answers then.  The endpoint
keeps the name it came from (:attr:`Endpoint.name`) for messages and
``--print-policy``.  ``HOST:*`` allows every port of *HOST*
(:data:`ANY_PORT`).  ``--allow-net`` (:func:`reaches_the_network`) allows
every IP address *except* the host's own and its link's: loopback
(``127.0.0.0/8``, ``::1``), the unspecified address (a connect to
``0.0.0.0`` reaches the host), and link-local addresses (``169.254.0.0/16``,
``fe80::/10``: among them a cloud's metadata service, which hands out
credentials).  Services on the user's own machine — a database, a
Docker API on ``127.0.0.1:2375``, an X server on TCP 6000 — must each be
granted by name, never by the coarse switch.

This module imports nothing above layer 0.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import posixpath
import socket
import stat as stat_module
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from minikvm.errors import MinikvmError
from minikvm.linux_abi import O_CLOEXEC, O_PATH
from minikvm.sandbox.grants import absolute_path

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
#: An endpoint's port that means "every port" (written ``HOST:*``).  No
#: connection can be made to port 0, so it never names a real port.
ANY_PORT = 0
#: The most characters of a host name (RFC 1035: 253 in text form).
HOST_NAME_MAX = 253


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
    port: int = ANY_PORT
    path: str = ""
    #: the host name it was resolved from ("" for a numeric one); not part of
    #: its identity: two names for one address are one endpoint
    name: str = field(default="", compare=False)

    def __str__(self) -> str:
        if self.family == socket.AF_UNIX:
            return f"unix:{self.path}"
        port = "*" if self.port == ANY_PORT else str(self.port)
        if self.family == socket.AF_INET6:
            return f"[{self.host}]:{port}"
        return f"{self.host}:{port}"

    def describe(self) -> str:
        """``pypi.org:443 (151.101.0.223)`` for one resolved from a name."""
        if not self.name:
            return str(self)
        port = "*" if self.port == ANY_PORT else str(self.port)
        return f"{self.name}:{port} ({self.host})"

    def matches(self, wanted: "Endpoint") -> bool:
        """Whether this allowed endpoint admits the guest's *wanted* one:
        the same endpoint, or the same host when this one is ``HOST:*``."""
        if self == wanted:
            return True
        return (self.port == ANY_PORT and self.family == wanted.family
                and self.family != socket.AF_UNIX and self.host == wanted.host)

    @property
    def is_unix_path(self) -> bool:
        """A unix socket named by a file-system path (not abstract)."""
        return self.family == socket.AF_UNIX and self.path.startswith("/")


def parse_endpoint(text: str) -> Endpoint:
    """Parse ``"127.0.0.1:8080"``, ``"[::1]:80"``, ``"10.0.0.1:*"``,
    ``"unix:/path"`` or ``"unix:@abstract"``: one endpoint, numeric.  Names
    are :func:`resolve_endpoints`' job.
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
                            "address (a host name is resolved by resolve_endpoints; "
                            "on the command line, --allow-connect takes names)") from None
    if text.startswith("[") != (address.version == 6):
        raise EndpointError(f"endpoint {text!r}: write IPv6 addresses in brackets "
                            "([::1]:80) and IPv4 addresses without them")
    return ip_endpoint(address, _parse_port(text, port))


def _parse_port(text: str, port: str) -> int:
    if port == "*":
        return ANY_PORT
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise EndpointError(f"endpoint {text!r}: port {port!r} is not a number "
                            "from 1 to 65535 (or * for every port)")
    return int(port)


Resolver = Callable[..., list]


def named_endpoint(text: str) -> Optional[tuple[str, int]]:
    """``(name, port)`` when *text* is ``NAME:PORT`` or ``NAME:*`` with a
    host name (checked, not resolved); None when it is an endpoint
    :func:`parse_endpoint` reads (numeric, unix).  EndpointError when it is
    neither."""
    if text.startswith("unix:") or text.startswith("["):
        parse_endpoint(text)
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        parse_endpoint(text)                    # raises, with its message
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        parse_endpoint(text)
        return None
    if len(host) > HOST_NAME_MAX or not all(part and all(c.isalnum() or c in "-_" for c in part)
                                             for part in host.rstrip(".").split(".")):
        raise EndpointError(f"endpoint {text!r}: {host!r} is neither a numeric address "
                            "nor a host name (letters, digits, '-' and '.')")
    return host, _parse_port(text, port)


def resolve_endpoints(text: str, resolver: Resolver = socket.getaddrinfo) -> tuple[Endpoint, ...]:
    """The endpoints *text* names: one for a numeric endpoint or a unix
    socket (:func:`parse_endpoint`), and for ``NAME:PORT`` (or ``NAME:*``)
    one for every address *NAME* resolves to now, with *resolver*
    (:func:`socket.getaddrinfo`, the host's resolver: ``/etc/hosts``, DNS).

    A name that does not resolve is an :class:`EndpointError` that says so:
    a grant that silently allows nothing would look like a network fault.
    """
    named = named_endpoint(text)
    if named is None:
        return (parse_endpoint(text),)
    host, number = named
    try:
        answers = resolver(host, None, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise EndpointError(f"endpoint {text!r}: cannot resolve {host!r} ({reason}): "
                            "check the name, or give a numeric address") from None
    found: dict[Endpoint, None] = {}
    for family, _, _, _, sockaddr in answers:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            endpoint = ip_endpoint(address, number)
            found.setdefault(Endpoint(endpoint.family, endpoint.host, number, name=host))
    if not found:
        raise EndpointError(f"endpoint {text!r}: {host!r} resolves to no IPv4 or IPv6 "
                            "address")
    return tuple(found)


def reaches_the_network(endpoint: Endpoint) -> bool:
    """Whether ``--allow-net`` admits *endpoint*: an IP address that is not
    the host's own (loopback, unspecified) nor link-local (see the module
    docstring)."""
    if endpoint.family == socket.AF_UNIX or endpoint.host is None:
        return False
    host = endpoint.host
    return not (host.is_loopback or host.is_unspecified or host.is_link_local)


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


#: How many ``nameserver`` lines glibc's resolver uses (``MAXNS`` in
#: <resolv.h>); the rest are ignored, by it and by :func:`parse_nameservers`.
MAXNS = 3
#: The port of the domain name service, for UDP and TCP alike (RFC 1035).
DNS_PORT = 53


def parse_nameservers(text: str) -> list[str]:
    """The endpoints ``--allow-dns`` allows for resolv.conf *text*: port 53
    of the first :data:`MAXNS` ``nameserver`` addresses (a bad address is
    skipped, as glibc does; an IPv6 zone ``%eth0`` is cut off), and with
    none glibc's default, the local host (``127.0.0.1``)."""
    found: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            address = ipaddress.ip_address(words[1].split("%", 1)[0])
        except ValueError:
            continue
        shown = f"[{address}]" if address.version == 6 else str(address)
        found.append(f"{shown}:{DNS_PORT}")
        if len(found) == MAXNS:
            break
    return found or [f"127.0.0.1:{DNS_PORT}"]


__all__ = ["parse_nameservers", "MAXNS", "DNS_PORT", "Endpoint", "EndpointError", "AddressError", "PinnedSocket", "parse_endpoint",
           "resolve_endpoints", "named_endpoint", "reaches_the_network", "ip_endpoint", "guest_endpoint",
           "ANY_PORT"]
