"""Layer 6 — sockets: connections to and from the endpoints the policy allows.

A guest socket is a real host socket, made for the guest and kept in its
fd table as a :class:`~minikvm.syscalls.sockets.SocketFile` (the socket
file, the guest's socket ABI and its addresses are in
:mod:`minikvm.syscalls.sockets`; this module is the system calls); ``read``, ``write``, ``close``, ``dup``
and ``fstat`` on it go through the ordinary fd-table calls.  What the policy
(``proc.policy``) decides, and where::

    socket(AF_INET, SOCK_STREAM, 0)   policy.check_socket: EACCES when the policy
                                      allows no network at all ("no network grant")
    connect(fd, {127.0.0.1:8080})     the guest's sockaddr is decoded here, then
                                      policy.check_connect: EACCES unless that
                                      endpoint is granted (exactly, HOST:*, or by
                                      --allow-net); then the host connect
    sendto(fd, ..., {10.0.0.1:53})    the same check for each datagram's address
    recvfrom on an unconnected        datagrams from an address the policy does
      datagram socket                 not allow are dropped (like a firewall)
    bind(fd, {0.0.0.0:8080})          policy.check_bind: an address a listening
                                      endpoint admits (--allow-listen), or port 0
                                      (a client's source); unix sockets never
    listen(fd, n)                     policy.check_listen, on the address the host
                                      really bound (so bind to port 0 + listen
                                      is refused); accept then takes connections
                                      from anyone: that is what listening means

Only ``AF_UNIX``, ``AF_INET`` and ``AF_INET6`` with ``SOCK_STREAM`` or
``SOCK_DGRAM`` exist (other families ``EAFNOSUPPORT``, other types ``EPERM``,
other protocols ``EPROTONOSUPPORT``); options are a short list
(:data:`~minikvm.syscalls.sockets.SOCKET_OPTIONS`), and control messages (``SCM_RIGHTS`` would hand
*host* fds to a peer) are refused with ``EPERM``.

Blocking without blocking the host
----------------------------------
The host socket is always non-blocking.  When the guest's socket is
blocking (no ``O_NONBLOCK``, no ``MSG_DONTWAIT``), the handler waits with
``poll(2)`` in slices of :data:`~minikvm.syscalls.sockets.WAIT_SLICE_SECONDS` and, between slices,
checks ``kvm_run.immediate_exit``, which the run loop's time limit sets
(:mod:`minikvm.machine.machine`).  So a guest blocked in ``recv`` is still stopped
by ``--timeout`` within a slice: the call returns ``EINTR``, the vCPU
re-enters, sees ``immediate_exit`` and stops.

Partial, on purpose: no ``SIGPIPE`` (a write to a closed connection fails
with ``EPIPE``), ``SO_RCVTIMEO``/``SO_SNDTIMEO`` are kept here and honoured
by the wait, ``AF_UNSPEC`` connect (disconnect) is not supported.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import TYPE_CHECKING, Callable, Optional

from minikvm.errors import SyscallError
from minikvm.linux_abi import UIO_MAXIOV, USEC_PER_SEC
from minikvm.syscalls import signals
from minikvm.syscalls.base import PARTIAL, REFUSED, Syscall, signed32
from minikvm.syscalls.files import MAX_IO
from minikvm.syscalls.sockets import (AF_UNIX, FAMILY_NAMES, HostAddress, MAX_OPTION_LENGTH,
                                      MMSGHDR_LEN_OFFSET, MMSGHDR_SIZE, MSGHDR,
                                      MSGHDR_CONTROLLEN_OFFSET, MSGHDR_FLAGS_OFFSET,
                                      MSGHDR_NAMELEN_OFFSET, MSG_DONTWAIT, MSG_PEEK, MSG_WAITFORONE,
                                      PROTOCOLS, SHUT_RDWR, SOCKADDR_MAX, SOCKET_OPTIONS,
                                      SOCK_CLOEXEC, SOCK_DGRAM, SOCK_NONBLOCK, SOCK_STREAM, SOCK_TYPE_MASK,
                                      SOL_SOCKET, SocketFile, TIMEOUT_OPTIONS, TIMEVAL,
                                      decode_sockaddr, describe_address, encode_sockaddr,
                                      host_socket_call)
from minikvm.syscalls.timeouts import MAX_TIMEOUT_SECONDS, split_seconds, timeval_seconds

if TYPE_CHECKING:
    from minikvm.process.process import Process

# --- helpers ----------------------------------------------------------------------


def _socket(proc: Process, fd: int) -> SocketFile:
    file = proc.fds.get(signed32(fd))
    if not isinstance(file, SocketFile):
        raise SyscallError(errno.ENOTSOCK, f"fd {signed32(fd)} is not a socket")
    return file


def _stop_check(proc: Process) -> Callable[[], bool]:
    """Whether a socket's wait must end: the run's time limit passed, or a
    signal's handler must run (one sent from outside is delivered here:
    :func:`minikvm.syscalls.signals.interrupted`)."""
    return lambda: signals.interrupted(proc)


def _read_sockaddr(proc: Process, address: int, length: int) -> tuple[int, HostAddress]:
    length = signed32(length)
    if not 0 <= length <= SOCKADDR_MAX:
        raise SyscallError(errno.EINVAL, f"address length {length}")
    return decode_sockaddr(proc.mm.read(address, length))


def _write_sockaddr(proc: Process, address: int, length_address: int, family: int,
                    value: Optional[HostAddress]) -> None:
    """Fill a value-result sockaddr: at most the guest's length, then the real one."""
    if not address or not length_address:
        return
    room = proc.mm.read_struct(length_address, "<i")[0]
    if room < 0:
        raise SyscallError(errno.EINVAL, f"address length {room}")
    encoded = encode_sockaddr(family, value) if value is not None else b""
    proc.mm.write(address, encoded[:room])
    proc.mm.write_struct(length_address, "<i", len(encoded))


def _allowed_target(proc: Process, file: SocketFile, family: int, address: HostAddress,
                    syscall: str) -> HostAddress:
    """Ask the policy about *address*; return what the host should connect to.

    A unix socket path is never handed to the host as the guest wrote it:
    the policy returns the socket it pinned when it was built, so a guest
    that replaced the name (by a symlink, a rename) still reaches only the
    allowed object.
    """
    if family != file.family:
        raise SyscallError(errno.EAFNOSUPPORT if file.family != AF_UNIX else errno.EINVAL,
                           f"a {FAMILY_NAMES.get(family, family)} address for a "
                           f"{FAMILY_NAMES[file.family]} socket")
    if family == AF_UNIX:
        if not address:
            raise SyscallError(errno.EINVAL, "an unnamed unix address")
    return proc.policy.check_connect(family, address, proc.cwd,  # type: ignore[return-value]
                                     syscall=syscall)


def _source_allowed(proc: Process, file: SocketFile, source: HostAddress) -> bool:
    """May a datagram from *source* reach an unconnected IP socket?  From
    anyone when the socket is bound to a listening endpoint (a server);
    else only from an endpoint the guest could send to."""
    if proc.policy.receives_from_anyone(file.family, file.sock.getsockname()):
        return True
    try:
        proc.policy.check_connect(file.family, source, proc.cwd, syscall="recvfrom")
    except SyscallError:
        return False
    return True


# --- the system calls ---------------------------------------------------------------


def sys_socket(proc: Process, domain: int, type_: int, protocol: int) -> int:
    """socket(2): a host socket, if the policy grants an endpoint of its family.

    AF_UNIX, AF_INET and AF_INET6, stream or datagram; EACCES with no
    ``--allow-connect`` grant, EPERM for other types (raw sockets)."""
    domain, type_, protocol = signed32(domain), signed32(type_), signed32(protocol)
    kind, flags = type_ & SOCK_TYPE_MASK, type_ & ~SOCK_TYPE_MASK
    if flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC):
        raise SyscallError(errno.EINVAL, f"socket type flags {flags:#x}")
    proc.policy.check_socket(domain, syscall="socket")
    if kind not in PROTOCOLS:
        raise proc.policy.refuse("socket", f"type {kind} (only SOCK_STREAM and SOCK_DGRAM)")
    # 0 is "the default one"; unix sockets also accept PF_UNIX (= AF_UNIX), as Linux does
    allowed = {0, AF_UNIX} if domain == AF_UNIX else {0, PROTOCOLS[kind]}
    if protocol not in allowed:
        raise SyscallError(errno.EPROTONOSUPPORT, f"protocol {protocol}")
    proc.fds.check_room()                          # EMFILE before a host socket exists
    sock = socket.socket(domain, kind | socket.SOCK_CLOEXEC, protocol)
    return _install(proc, SocketFile(sock, domain, kind, bool(flags & SOCK_NONBLOCK),
                                     _stop_check(proc)), bool(flags & SOCK_CLOEXEC))


def _install(proc: Process, file: SocketFile, cloexec: bool) -> int:
    try:
        return proc.fds.install(file, cloexec=cloexec)
    except SyscallError:
        file.close()
        raise


def sys_socketpair(proc: Process, domain: int, type_: int, protocol: int, pair: int) -> int:
    """Two connected unix sockets: they reach nothing outside the guest, so
    no grant is needed."""
    domain, type_, protocol = signed32(domain), signed32(type_), signed32(protocol)
    kind, flags = type_ & SOCK_TYPE_MASK, type_ & ~SOCK_TYPE_MASK
    if domain != AF_UNIX:
        raise SyscallError(errno.EOPNOTSUPP, "socketpair is for AF_UNIX only")
    if flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC) or protocol != 0:
        raise SyscallError(errno.EINVAL, f"socketpair type {type_:#x} protocol {protocol}")
    if kind not in PROTOCOLS:
        raise proc.policy.refuse("socketpair", f"type {kind}")
    proc.mm.views(pair, 8, write=True)            # EFAULT and EMFILE before anything is made
    proc.fds.check_room(count=2)
    first, second = socket.socketpair(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
    files = [SocketFile(s, AF_UNIX, kind, bool(flags & SOCK_NONBLOCK), _stop_check(proc))
             for s in (first, second)]
    for file in files:
        file.connected = True
    fd0 = _install(proc, files[0], bool(flags & SOCK_CLOEXEC))
    try:
        fd1 = _install(proc, files[1], bool(flags & SOCK_CLOEXEC))
    except SyscallError:
        proc.fds.close(fd0)
        raise
    proc.mm.write_struct(pair, "<ii", fd0, fd1)
    return 0


def sys_connect(proc: Process, fd: int, address: int, length: int) -> int:
    """connect(2): only to an endpoint the policy allows (EACCES otherwise)."""
    file = _socket(proc, fd)
    family, value = _read_sockaddr(proc, address, length)
    file.connect(_allowed_target(proc, file, family, value, "connect"))
    return 0


def _sendmsg_views(proc: Process, file: SocketFile, views: list[memoryview], flags: int,
                   address: int, length: int, syscall: str) -> int:
    target = None
    if address and file.type == SOCK_DGRAM:   # a stream socket ignores the address
        family, value = _read_sockaddr(proc, address, length)
        target = _allowed_target(proc, file, family, value, syscall)
    elif not file.connected and file.type == SOCK_DGRAM:
        raise SyscallError(errno.EDESTADDRREQ, "no address and not connected")
    return file.send(views, signed32(flags), target)


def sys_sendto(proc: Process, fd: int, buffer: int, count: int, flags: int, address: int,
               length: int) -> int:
    """sendto(2): send; a datagram's address is checked against the policy."""
    file = _socket(proc, fd)
    views = proc.mm.views(buffer, min(count, MAX_IO))
    return _sendmsg_views(proc, file, views, flags, address, length, "sendto")


def _receive_allowed(proc: Process, file: SocketFile, views: list[memoryview],
                     flags: int) -> tuple[int, int, HostAddress]:
    """Receive one message, dropping datagrams the policy would not let us send to.

    On an unconnected IP datagram socket, the next datagram's source is
    *peeked* into a scratch byte first, and a datagram from an address the
    policy does not allow is consumed into scratch too: its bytes never
    reach guest memory, not even past the length the guest is told.
    """
    if file.family != AF_UNIX and file.type == SOCK_DGRAM and not file.connected:
        scratch = [memoryview(bytearray(1))]
        while True:
            source = file.receive(scratch, MSG_PEEK | (flags & MSG_DONTWAIT))[2]
            if _source_allowed(proc, file, source):
                break
            file.receive(scratch, flags & MSG_DONTWAIT)
    return file.receive(views, flags)


def sys_recvfrom(proc: Process, fd: int, buffer: int, count: int, flags: int, address: int,
                 length_address: int) -> int:
    """recvfrom(2): receive; datagrams from addresses not allowed are dropped
    before they reach guest memory."""
    file = _socket(proc, fd)
    views = proc.mm.views(buffer, min(count, MAX_IO), write=True)
    received, _, source = _receive_allowed(proc, file, views, signed32(flags))
    _write_sockaddr(proc, address, length_address, file.family, source or None)
    return received


def _read_msghdr(proc: Process, message: int, write: bool) -> tuple[int, int, list[memoryview],
                 int]:
    """name, namelen, the iovec's views, controllen of a guest ``struct msghdr``."""
    name, namelen, iov, iovlen, _, controllen, _ = proc.mm.read_struct(message, MSGHDR)
    if iovlen > UIO_MAXIOV:
        raise SyscallError(errno.EMSGSIZE, f"{iovlen} iovecs (at most {UIO_MAXIOV})")
    views: list[memoryview] = []
    for base, size in proc.mm.read_iovec(iov, iovlen):
        views.extend(proc.mm.views(base, min(size, MAX_IO), write=write))
    return name, namelen, views, controllen


def sys_sendmsg(proc: Process, fd: int, message: int, flags: int) -> int:
    """sendmsg(2): :func:`sys_sendto` for a ``msghdr``.

    Control messages are EPERM: ``SCM_RIGHTS`` would pass host fds."""
    file = _socket(proc, fd)
    name, namelen, views, controllen = _read_msghdr(proc, message, write=False)
    if controllen:
        raise proc.policy.refuse("sendmsg", "control messages (SCM_RIGHTS would pass "
                                 "host file descriptors)")
    return _sendmsg_views(proc, file, views, flags, name, namelen, "sendmsg")


def sys_recvmsg(proc: Process, fd: int, message: int, flags: int) -> int:
    """recvmsg(2): :func:`sys_recvfrom` for a ``msghdr``; control messages are
    discarded (``MSG_CTRUNC``)."""
    file = _socket(proc, fd)
    name, _, views, _ = _read_msghdr(proc, message, write=True)
    received, message_flags, source = _receive_allowed(proc, file, views, signed32(flags))
    if name:
        _write_sockaddr(proc, name, message + MSGHDR_NAMELEN_OFFSET, file.family,
                        source or None)
    proc.mm.write_struct(message + MSGHDR_CONTROLLEN_OFFSET, "<Q", 0)
    # the host kernel set MSG_CTRUNC if a peer sent control data: none is passed on
    proc.mm.write_struct(message + MSGHDR_FLAGS_OFFSET, "<i", message_flags)
    return received


def sys_sendmmsg(proc: Process, fd: int, vector: int, count: int, flags: int) -> int:
    """``sendmsg`` for each ``struct mmsghdr``; how many were sent.

    As in Linux, an error after the first message ends the batch and is
    not reported (the next call meets it again).  glibc's DNS resolver
    sends its A and AAAA queries this way.
    """
    sent = 0
    for index in range(min(count & 0xFFFF_FFFF, UIO_MAXIOV)):
        header = vector + index * MMSGHDR_SIZE
        try:
            length = sys_sendmsg(proc, fd, header, flags)
        except (SyscallError, OSError):
            if sent:
                break
            raise
        proc.mm.write_struct(header + MMSGHDR_LEN_OFFSET, "<I", length)
        sent += 1
    return sent


def sys_recvmmsg(proc: Process, fd: int, vector: int, count: int, flags: int, timeout: int) -> int:
    """``recvmsg`` into each ``struct mmsghdr``: waits (as the socket does)
    for the first message only, then takes what is already there — Linux's
    ``MSG_WAITFORONE``, always.  *timeout* is ignored."""
    flags = signed32(flags) & ~MSG_WAITFORONE
    received = 0
    for index in range(min(count & 0xFFFF_FFFF, UIO_MAXIOV)):
        header = vector + index * MMSGHDR_SIZE
        try:
            length = sys_recvmsg(proc, fd, header, flags | (MSG_DONTWAIT if received else 0))
        except (SyscallError, OSError):
            if received:
                break
            raise
        proc.mm.write_struct(header + MMSGHDR_LEN_OFFSET, "<I", length)
        received += 1
    return received


def sys_shutdown(proc: Process, fd: int, how: int) -> int:
    """shutdown(2): shut down one or both directions of a socket."""
    how = signed32(how)
    if not 0 <= how <= SHUT_RDWR:
        raise SyscallError(errno.EINVAL, f"shutdown how={how}")
    _socket(proc, fd).sock.shutdown(how)
    return 0


def sys_getsockname(proc: Process, fd: int, address: int, length_address: int) -> int:
    """getsockname(2): the socket's own address."""
    file = _socket(proc, fd)
    _write_sockaddr(proc, address, length_address, file.family, file.sock.getsockname())
    return 0


def sys_getpeername(proc: Process, fd: int, address: int, length_address: int) -> int:
    """getpeername(2): the address of the socket's peer."""
    file = _socket(proc, fd)
    _write_sockaddr(proc, address, length_address, file.family, file.sock.getpeername())
    return 0


def sys_setsockopt(proc: Process, fd: int, level: int, name: int, value: int, length: int) -> int:
    """setsockopt(2): a safe subset of options (ENOPROTOOPT for others).

    ``SO_RCVTIMEO``/``SO_SNDTIMEO`` are kept by minikvm, read through
    :mod:`minikvm.syscalls.timeouts` (EDOM for bad microseconds)."""
    file = _socket(proc, fd)
    level, name, length = signed32(level), signed32(name), signed32(length)
    if length < 0:
        raise SyscallError(errno.EINVAL, f"option length {length}")
    if level == SOL_SOCKET and name in TIMEOUT_OPTIONS:
        if length < struct.calcsize(TIMEVAL):
            raise SyscallError(errno.EINVAL, "a timeout is a struct timeval")
        seconds, microseconds = proc.mm.read_struct(value, TIMEVAL)
        if not 0 <= microseconds < USEC_PER_SEC:
            raise SyscallError(errno.EDOM, "timeout out of range")
        # sock_set_timeout(): a negative time is 0 (Linux warns), and one
        # beyond the kernel's longest wait is no timeout at all (0 too).
        timeout = timeval_seconds(max(seconds, 0), microseconds, "timeout")
        file.timeouts[name] = 0.0 if timeout >= MAX_TIMEOUT_SECONDS else timeout
        return 0
    if not SOCKET_OPTIONS.get((level, name), False):
        raise SyscallError(errno.ENOPROTOOPT, f"socket option {level}/{name} is not "
                           "supported in the sandbox")
    data = proc.mm.read(value, min(length, MAX_OPTION_LENGTH))
    host_socket_call(lambda: file.sock.setsockopt(level, name, data))
    return 0


def sys_getsockopt(proc: Process, fd: int, level: int, name: int, value: int,
                   length_address: int) -> int:
    """getsockopt(2): the same subset, plus ``SO_TYPE``, ``SO_ERROR``,
    ``SO_DOMAIN`` and ``SO_PROTOCOL``."""
    file = _socket(proc, fd)
    level, name = signed32(level), signed32(name)
    room = proc.mm.read_struct(length_address, "<i")[0]
    if room < 0:
        raise SyscallError(errno.EINVAL, f"option length {room}")
    if level == SOL_SOCKET and name in TIMEOUT_OPTIONS:
        seconds = file.timeouts[name]
        data = struct.pack(TIMEVAL, *split_seconds(seconds, USEC_PER_SEC))
    elif (level, name) in SOCKET_OPTIONS:
        data = host_socket_call(lambda: file.sock.getsockopt(level, name, min(max(room, 1),
                                                                   MAX_OPTION_LENGTH)))
    else:
        raise SyscallError(errno.ENOPROTOOPT, f"socket option {level}/{name} is not "
                           "supported in the sandbox")
    proc.mm.write(value, data[:room])
    proc.mm.write_struct(length_address, "<i", min(len(data), room))
    return 0


def sys_bind(proc: Process, fd: int, address: int, length: int) -> int:
    """bind(2): an IP address the policy's ``listen`` endpoints admit, or
    port 0 for a client choosing its source (:meth:`NetworkRules.check_bind
    <minikvm.sandbox.network_rules.NetworkRules.check_bind>`); EACCES otherwise, and
    always for unix sockets."""
    file = _socket(proc, fd)
    family, value = _read_sockaddr(proc, address, length)
    if family != file.family:
        raise SyscallError(errno.EINVAL if file.family == AF_UNIX else errno.EAFNOSUPPORT,
                           f"a {FAMILY_NAMES.get(family, family)} address for a "
                           f"{FAMILY_NAMES[file.family]} socket")
    proc.policy.check_bind(family, value, proc.cwd, syscall="bind")
    host_socket_call(lambda: file.sock.bind(value))
    return 0


def sys_listen(proc: Process, fd: int, backlog: int) -> int:
    """listen(2): on a stream socket bound to an address a ``listen``
    endpoint admits — the address the host bound it to, so a socket bound
    to port 0, or not bound at all, is refused (EACCES)."""
    file = _socket(proc, fd)
    if file.type != SOCK_STREAM:
        raise SyscallError(errno.EOPNOTSUPP, "listen is for stream sockets")
    bound = file.sock.getsockname() if file.family != AF_UNIX else ""
    proc.policy.check_listen(file.family, bound, syscall="listen")
    backlog = max(0, min(signed32(backlog), socket.SOMAXCONN))
    host_socket_call(lambda: file.sock.listen(backlog))
    file.listening = True
    return 0


def sys_accept4(proc: Process, fd: int, address: int, length_address: int, flags: int) -> int:
    """accept4(2): a connection on a socket the policy let listen, as a new
    guest socket (``SOCK_NONBLOCK``, ``SOCK_CLOEXEC``); the peer's address
    to *address* when not NULL.  EINVAL on a socket that is not listening,
    as Linux; blocking waits as the other socket calls."""
    file = _socket(proc, fd)
    flags = signed32(flags)
    if flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC):
        raise SyscallError(errno.EINVAL, f"accept4 flags {flags:#x}")
    if not file.listening:
        raise SyscallError(errno.EINVAL, f"fd {signed32(fd)} is not listening")
    if address:
        proc.mm.views(length_address, 4, write=True)      # EFAULT before a connection is taken
    proc.fds.check_room()                                # EMFILE before, too
    sock, peer = file.accept()
    connection = SocketFile(sock, file.family, file.type, bool(flags & SOCK_NONBLOCK),
                            _stop_check(proc))
    connection.connected = True
    new_fd = _install(proc, connection, bool(flags & SOCK_CLOEXEC))
    if address:
        _write_sockaddr(proc, address, length_address, file.family, peer)
    return new_fd


def sys_accept(proc: Process, fd: int, address: int, length_address: int) -> int:
    """accept(2): :func:`sys_accept4` without flags."""
    return sys_accept4(proc, fd, address, length_address, 0)


SOCKET_NOTE = ("AF_UNIX/AF_INET/AF_INET6, SOCK_STREAM/SOCK_DGRAM; needs an --allow-connect "
               "grant (EACCES otherwise)")
SEND_NOTE = "datagram addresses are checked against the policy; no SIGPIPE"
RECV_NOTE = "unconnected datagram sockets drop datagrams from addresses not allowed"
LISTEN_NOTE = ("only on the policy's listening endpoints (--allow-listen); port 0 for a "
               "client's source; never unix sockets")

SYSCALLS = [
    Syscall(41, "socket", sys_socket, ("int", "hex", "int"), PARTIAL, SOCKET_NOTE),
    Syscall(53, "socketpair", sys_socketpair, ("int", "hex", "int", "ptr"), PARTIAL,
            "AF_UNIX only; no grant needed (it reaches nothing outside the guest)"),
    Syscall(42, "connect", sys_connect, ("fd", "ptr", "uint"), PARTIAL,
            "only to endpoints the policy allows (EACCES otherwise); no AF_UNSPEC"),
    Syscall(44, "sendto", sys_sendto, ("fd", "inbuf", "uint", "hex", "ptr", "uint"),
            PARTIAL, SEND_NOTE),
    Syscall(45, "recvfrom", sys_recvfrom, ("fd", "outbuf", "uint", "hex", "ptr", "ptr"),
            PARTIAL, RECV_NOTE),
    Syscall(46, "sendmsg", sys_sendmsg, ("fd", "ptr", "hex"), PARTIAL,
            SEND_NOTE + "; control messages refused (EPERM)"),
    Syscall(47, "recvmsg", sys_recvmsg, ("fd", "ptr", "hex"), PARTIAL,
            RECV_NOTE + "; control messages are discarded (MSG_CTRUNC)"),
    Syscall(307, "sendmmsg", sys_sendmmsg, ("fd", "ptr", "uint", "hex"), PARTIAL,
            SEND_NOTE),
    Syscall(299, "recvmmsg", sys_recvmmsg, ("fd", "ptr", "uint", "hex", "ptr"), PARTIAL,
            "waits for the first message only (as MSG_WAITFORONE); the timeout is ignored"),
    Syscall(48, "shutdown", sys_shutdown, ("fd", "int")),
    Syscall(51, "getsockname", sys_getsockname, ("fd", "ptr", "ptr")),
    Syscall(52, "getpeername", sys_getpeername, ("fd", "ptr", "ptr")),
    Syscall(54, "setsockopt", sys_setsockopt, ("fd", "int", "int", "ptr", "uint"), PARTIAL,
            "a safe subset (ENOPROTOOPT otherwise); SO_RCVTIMEO/SO_SNDTIMEO kept by minikvm"),
    Syscall(55, "getsockopt", sys_getsockopt, ("fd", "int", "int", "ptr", "ptr"), PARTIAL,
            "the same subset, plus SO_TYPE, SO_ERROR, SO_DOMAIN, SO_PROTOCOL"),
    Syscall(49, "bind", sys_bind, ("fd", "ptr", "uint"), PARTIAL, LISTEN_NOTE),
    Syscall(50, "listen", sys_listen, ("fd", "int"), PARTIAL, LISTEN_NOTE),
    Syscall(43, "accept", sys_accept, ("fd", "ptr", "ptr"), PARTIAL, LISTEN_NOTE),
    Syscall(288, "accept4", sys_accept4, ("fd", "ptr", "ptr", "hex"), PARTIAL,
            LISTEN_NOTE),
]
