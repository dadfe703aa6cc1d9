"""Layer 4 — the network half of the policy: which endpoints a guest may
reach, bind and listen on.

The socket calls (:mod:`minikvm.syscalls.net`) ask these checks before
anything reaches the host: ``socket`` (a family, and a reason to have a
socket at all), ``connect`` (an allowed endpoint; a unix path is the
*pinned* socket the policy opened, whatever the guest has put at the
name since), ``bind`` and ``listen`` (only a ``listen`` endpoint, or port
0 for a client's source address), and whether an unconnected datagram
socket may hear anyone.

:class:`~minikvm.sandbox.policy.Policy` is a :class:`NetworkRules`: it
inherits these checks and supplies what they read — the endpoints it was
built with and its way of recording a refusal for ``--audit``
(``_deny``).  They live here so that the policy module keeps to paths.
"""

from __future__ import annotations

import errno
import socket

from minikvm.sandbox.audit import DENIED_ERRNO, PolicyDenied
from minikvm.sandbox.endpoints import (ANY_PORT, AddressError, Endpoint, PinnedSocket,
                                       guest_endpoint, reaches_the_network)


class NetworkRules:
    """The socket checks of a policy (see the module docstring)."""

    #: Set by the policy that is one: the endpoints a connect may reach, those
    #: the guest may listen on, whether any IP address beyond the host's own
    #: and link-local ones is allowed, and the unix sockets opened for it.
    endpoints: tuple[Endpoint, ...]
    listen_endpoints: tuple[Endpoint, ...]
    allow_net: bool
    pinned: dict[str, PinnedSocket]

    def _deny(self, syscall: str, path: str, reason: str,
              err: int = DENIED_ERRNO, hidden: bool = False) -> PolicyDenied:
        """Record a refusal and return the exception to raise (the policy's)."""
        raise NotImplementedError("a NetworkRules is a Policy, which records refusals")

    def allows_endpoint(self, wanted: Endpoint) -> bool:
        """Whether a connect to *wanted* is allowed: a ``connect`` endpoint
        admits it (exactly, or ``HOST:*``), or ``allow_net`` does."""
        if any(endpoint.matches(wanted) for endpoint in self.endpoints):
            return True
        return self.allow_net and reaches_the_network(wanted)

    @property
    def has_network(self) -> bool:
        """Whether the guest may make a socket at all."""
        return bool(self.endpoints or self.listen_endpoints or self.allow_net)

    def check_connect(self, family: int, address: object, cwd: str = "/", *,
                      syscall: str = "connect") -> object:
        """Allow a connect to *address* and return what the host must connect
        to, or raise :class:`PolicyDenied`.

        *address* is what Python's socket module would take: ``(host, port)``
        for ``AF_INET``, ``(host, port, flowinfo, scope_id)`` for ``AF_INET6``,
        and a path (str or bytes; a leading NUL for an abstract socket) for
        ``AF_UNIX``.  Matches are exact.  A relative unix path is taken
        relative to the guest's *cwd*.  The address returned is *address*
        itself, except for a unix socket path: then it is the pinned socket
        (:class:`~minikvm.sandbox.endpoints.PinnedSocket`), so the host
        reaches the object that was allowed whatever the guest has since put
        at its name (``ENOENT`` if it did not exist when the policy was
        built).  Other families are refused with ``EAFNOSUPPORT``.
        """
        try:
            wanted = guest_endpoint(family, address, cwd)
        except AddressError as error:
            raise self._deny(syscall, repr(address), error.reason, error.errno) from None
        shown = str(wanted)
        if not self.allows_endpoint(wanted):
            hint = (" — --allow-net does not reach the host's own or link-local addresses"
                    if self.allow_net and wanted.family != socket.AF_UNIX else "")
            # An abstract name that is not allowed is refused as Linux refuses
            # one nobody listens on (ECONNREFUSED), not EACCES: a client that
            # tries the abstract name first (libxcb's X11 connect) then falls
            # back to the path socket, as it does on a host without one.
            err = (errno.ECONNREFUSED if wanted.family == socket.AF_UNIX
                   and wanted.path.startswith("@") else DENIED_ERRNO)
            raise self._deny(syscall, shown, "endpoint not allowed (allow it with "
                             f"connect=[{shown!r}]){hint}", err)
        if wanted.is_unix_path:
            return self.pinned[wanted.path].address
        return address

    def check_socket(self, family: int, *, syscall: str = "socket") -> None:
        """Allow creating a socket of *family*, or raise :class:`PolicyDenied`.

        A socket is only a means to reach an endpoint, so without any
        ``connect`` grant there is no reason to make one: ``EACCES``.  Families
        other than unix, IPv4 and IPv6 (netlink, packet, vsock ...) reach the
        host kernel or other machines in ways no endpoint describes:
        ``EAFNOSUPPORT``, as for a kernel built without them.
        """
        if family not in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):
            raise self._deny(syscall, f"family {family}", f"socket family {family} is "
                             "not supported (only unix, IPv4 and IPv6)", errno.EAFNOSUPPORT)
        if not self.has_network:
            raise self._deny(syscall, f"family {family}", "no network grant (allow an "
                             "endpoint with connect=[...], --allow-connect on the "
                             "command line)")

    def deny_listen(self, syscall: str, detail: str = "") -> PolicyDenied:
        """Record and return the ``EACCES`` for ``bind``, ``listen`` or ``accept``.

        A grant names endpoints the guest may *reach*; there is no grant for
        being reached, so accepting connections is outside every policy
        (``EACCES``, like a connect to an endpoint not granted).  Use it as
        ``raise policy.deny_listen("bind", address)``.
        """
        return self._deny(syscall, detail, "accepting connections is not allowed "
                          "(grant a listening endpoint with listen=[...], --allow-listen "
                          "HOST:PORT on the command line)")

    def _listen_admits(self, wanted: Endpoint) -> bool:
        """A listen endpoint is *wanted*, or is the unspecified address of
        its family on the same port (``0.0.0.0:8080`` admits
        ``127.0.0.1:8080``; ``127.0.0.1:8080`` does not admit ``0.0.0.0:8080``)."""
        return any(endpoint == wanted
                   or (endpoint.family == wanted.family and endpoint.port == wanted.port
                       and endpoint.host is not None and endpoint.host.is_unspecified)
                   for endpoint in self.listen_endpoints)

    def _reaches_ip(self) -> bool:
        return self.allow_net or any(e.family != socket.AF_UNIX
                                     for e in self.endpoints + self.listen_endpoints)

    def check_bind(self, family: int, address: object, cwd: str = "/", *,
                   syscall: str = "bind") -> None:
        """Allow ``bind`` of an IP socket to *address*, or raise :class:`PolicyDenied`.

        Port 0 (the kernel picks a free port) is how a client chooses its
        source address, and how musl's resolver opens its UDP socket: allowed
        whenever the guest may reach an IP endpoint, since nobody can connect
        to a socket that is not listening, and :meth:`check_listen` asks again.
        Any other port must be admitted by a ``listen`` endpoint.  Unix
        sockets are never bound (a socket file in a grant, or an abstract
        name others could connect to)."""
        try:
            wanted = guest_endpoint(family, address, cwd)
        except AddressError as error:
            raise self._deny(syscall, repr(address), error.reason, error.errno) from None
        if wanted.family == socket.AF_UNIX:
            raise self.deny_listen(syscall, str(wanted))
        if wanted.port == 0 and self._reaches_ip():
            return
        if not self._listen_admits(wanted):
            raise self.deny_listen(syscall, _bound_text(wanted))

    def check_listen(self, family: int, bound: object, *, syscall: str = "listen") -> None:
        """Allow ``listen`` on a socket bound to *bound* (what the host says
        it is bound to, so a bind to port 0 that got a free port is refused)."""
        try:
            wanted = guest_endpoint(family, bound, "/")
        except AddressError as error:
            raise self._deny(syscall, repr(bound), error.reason, error.errno) from None
        if wanted.family == socket.AF_UNIX or not self._listen_admits(wanted):
            raise self.deny_listen(syscall, _bound_text(wanted))

    def receives_from_anyone(self, family: int, bound: object) -> bool:
        """Whether an unconnected datagram socket bound to *bound* is a
        server the policy allows (``listen``): then datagrams from any
        source reach it; other sockets get only those from allowed endpoints."""
        try:
            return self._listen_admits(guest_endpoint(family, bound, "/"))
        except AddressError:
            return False


def _bound_text(endpoint: Endpoint) -> str:
    """A guest's bound address for a message: port 0 is "no port yet", not
    the ``*`` of an allowed endpoint."""
    if endpoint.family != socket.AF_UNIX and endpoint.port == ANY_PORT:
        host = f"[{endpoint.host}]" if endpoint.family == socket.AF_INET6 else str(endpoint.host)
        return f"{host}:0"
    return str(endpoint)
