"""Layer 6 — sockets: outgoing connections to the endpoints the policy allows.

A guest socket is a real host socket, made for the guest and kept in its
fd table as a :class:`SocketFile`; ``read``, ``write``, ``close``, ``dup``
and ``fstat`` on it go through the ordinary fd-table calls.  What the policy
(``proc.policy``) decides, and where::

    socket(AF_INET, SOCK_STREAM, 0)   policy.check_socket: EACCES when the policy
                                      allows no endpoint at all ("no network grant")
    connect(fd, {127.0.0.1:8080})     the guest's sockaddr is decoded here, then
                                      policy.check_connect: EACCES unless exactly
                                      that endpoint is granted; then the host connect
    sendto(fd, ..., {10.0.0.1:53})    the same check for each datagram's address
    recvfrom on an unconnected        datagrams from an address the policy does
      datagram socket                 not allow are dropped (like a firewall)
    bind, listen, accept, accept4     policy.deny_listen: always EACCES, because
                                      a grant names places to *reach*, never a
                                      way to be reached

Only ``AF_UNIX``, ``AF_INET`` and ``AF_INET6`` with ``SOCK_STREAM`` or
``SOCK_DGRAM`` exist (other families ``EAFNOSUPPORT``, other types ``EPERM``,
other protocols ``EPROTONOSUPPORT``); options are a short list
(:data:`SOCKET_OPTIONS`), and control messages (``SCM_RIGHTS`` would hand
*host* fds to a peer) are refused with ``EPERM``.

Blocking without blocking the host
----------------------------------
The host socket is always non-blocking.  When the guest's socket is
blocking (no ``O_NONBLOCK``, no ``MSG_DONTWAIT``), the handler waits with
``poll(2)`` in slices of :data:`WAIT_SLICE_SECONDS` and, between slices,
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
import os
import select
import socket
import struct
import time
from typing import TYPE_CHECKING, Callable, Optional, Union

from minikvm.errors import SyscallError
from minikvm.linux_abi import O_NONBLOCK, O_RDWR, USEC_PER_SEC
from minikvm.process.fdtable import OpenFile
from minikvm.syscalls.base import PARTIAL, REFUSED, Syscall, signed32
from minikvm.syscalls.files import MAX_IO
from minikvm.syscalls.timeouts import MAX_TIMEOUT_SECONDS, split_seconds, timeval_seconds

if TYPE_CHECKING:
    from minikvm.process.process import Process

# --- the guest's ABI: <sys/socket.h>, <netinet/in.h>, <sys/un.h> ------------

AF_UNSPEC = 0
AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10
FAMILY_NAMES = {AF_UNIX: "AF_UNIX", AF_INET: "AF_INET", AF_INET6: "AF_INET6"}

SOCK_STREAM = 1
SOCK_DGRAM = 2
SOCK_TYPE_MASK = 0xF
SOCK_NONBLOCK = 0o4000       # = O_NONBLOCK
SOCK_CLOEXEC = 0o2000000     # = O_CLOEXEC

IPPROTO_IP = 0
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
#: The protocol each type may name (0 always means "the default one").
PROTOCOLS = {SOCK_STREAM: IPPROTO_TCP, SOCK_DGRAM: IPPROTO_UDP}

SOL_SOCKET = 1
SO_REUSEADDR = 2
SO_TYPE = 3
SO_ERROR = 4
SO_BROADCAST = 6
SO_SNDBUF = 7
SO_RCVBUF = 8
SO_KEEPALIVE = 9
SO_LINGER = 13
SO_RCVTIMEO = 20
SO_SNDTIMEO = 21
SO_ACCEPTCONN = 30
SO_PROTOCOL = 38
SO_DOMAIN = 39
TCP_NODELAY = 1
TCP_KEEPIDLE = 4
TCP_KEEPINTVL = 5
TCP_KEEPCNT = 6
IP_TOS = 1
IP_TTL = 2
IPV6_V6ONLY = 26

#: (level, option) -> may the guest set it?  Options here reach the host
#: socket unchanged: they tune this one connection and nothing else.  Not
#: here (ENOPROTOOPT): SO_BINDTODEVICE, SO_MARK, IP_TRANSPARENT, multicast
#: membership, filters (SO_ATTACH_FILTER is a BPF program) ...
SOCKET_OPTIONS = {
    (SOL_SOCKET, SO_REUSEADDR): True, (SOL_SOCKET, SO_KEEPALIVE): True,
    (SOL_SOCKET, SO_SNDBUF): True, (SOL_SOCKET, SO_RCVBUF): True,
    (SOL_SOCKET, SO_LINGER): True, (SOL_SOCKET, SO_BROADCAST): True,
    (SOL_SOCKET, SO_TYPE): False, (SOL_SOCKET, SO_ERROR): False,
    (SOL_SOCKET, SO_ACCEPTCONN): False, (SOL_SOCKET, SO_PROTOCOL): False,
    (SOL_SOCKET, SO_DOMAIN): False,
    (IPPROTO_TCP, TCP_NODELAY): True, (IPPROTO_TCP, TCP_KEEPIDLE): True,
    (IPPROTO_TCP, TCP_KEEPINTVL): True, (IPPROTO_TCP, TCP_KEEPCNT): True,
    (IPPROTO_IP, IP_TOS): True, (IPPROTO_IP, IP_TTL): True,
    (IPPROTO_IPV6, IPV6_V6ONLY): True,
}
#: Options this module keeps itself (the host socket is non-blocking).
TIMEOUT_OPTIONS = (SO_RCVTIMEO, SO_SNDTIMEO)
#: Longest option value passed through (SO_LINGER's 8 bytes is the largest).
MAX_OPTION_LENGTH = 64
TIMEVAL = "<qq"              # struct timeval: tv_sec, tv_usec

MSG_OOB = 0x1
MSG_PEEK = 0x2
MSG_DONTROUTE = 0x4
MSG_CTRUNC = 0x8
MSG_TRUNC = 0x20
MSG_DONTWAIT = 0x40
MSG_EOR = 0x80
MSG_WAITALL = 0x100
MSG_NOSIGNAL = 0x4000
MSG_MORE = 0x8000
MSG_WAITFORONE = 0x10000
#: Flags passed to the host; the rest are dropped (MSG_FASTOPEN would connect
#: without a connect, MSG_ZEROCOPY pins memory, MSG_ERRQUEUE reads host errors).
SEND_FLAGS = MSG_OOB | MSG_DONTROUTE | MSG_EOR | MSG_NOSIGNAL | MSG_MORE
RECV_FLAGS = MSG_OOB | MSG_PEEK | MSG_TRUNC

SHUT_RDWR = 2
SOCKADDR_MAX = 128           # sizeof(struct sockaddr_storage): longer is EINVAL
SUN_PATH_MAX = 108           # sizeof(sockaddr_un.sun_path), NUL included
SOCKADDR_IN_SIZE = 16
SOCKADDR_IN6_SIZE = 28
FLOWINFO_MASK = 0xFFFFF      # the 20-bit flow label
#: ``struct msghdr``: name, namelen, (pad), iov, iovlen, control, controllen, flags
MSGHDR = "<QI4xQQQQi4x"
MSGHDR_NAMELEN_OFFSET = 8
MSGHDR_CONTROLLEN_OFFSET = 40
MSGHDR_FLAGS_OFFSET = 48
#: ``struct mmsghdr``: a msghdr, then ``unsigned int msg_len`` (and padding)
MMSGHDR_SIZE = 64
MMSGHDR_LEN_OFFSET = 56
UIO_MAXIOV = 1024            # the most iovecs in a msghdr, and messages in one *mmsg call

#: How long one ``poll`` may block before the handler checks for a stop.
WAIT_SLICE_SECONDS = 0.05

#: What Python's socket module takes as an address.
HostAddress = Union[tuple, bytes, str]


# --- sockaddr: guest bytes <-> Python addresses ------------------------------


def decode_sockaddr(raw: bytes) -> tuple[int, HostAddress]:
    """A guest ``struct sockaddr_*`` as (family, address Python's socket takes).

    ``("127.0.0.1", 80)`` for ``sockaddr_in``, ``(host, port, flowinfo,
    scope_id)`` for ``sockaddr_in6`` and bytes for ``sockaddr_un`` — a
    leading NUL for an abstract name, else the path up to its first NUL.
    """
    if len(raw) < 2:
        raise SyscallError(errno.EINVAL, f"sockaddr of {len(raw)} bytes")
    family = int.from_bytes(raw[:2], "little")
    if family == AF_INET:
        if len(raw) < SOCKADDR_IN_SIZE:
            raise SyscallError(errno.EINVAL, f"sockaddr_in of {len(raw)} bytes")
        port = int.from_bytes(raw[2:4], "big")
        return family, (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    if family == AF_INET6:
        if len(raw) < 24:    # Linux accepts the old sockaddr_in6 without scope_id
            raise SyscallError(errno.EINVAL, f"sockaddr_in6 of {len(raw)} bytes")
        port = int.from_bytes(raw[2:4], "big")
        flowinfo = int.from_bytes(raw[4:8], "big") & FLOWINFO_MASK
        scope_id = int.from_bytes(raw[24:28], "little") if len(raw) >= 28 else 0
        return family, (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flowinfo, scope_id)
    if family == AF_UNIX:
        path = raw[2:2 + SUN_PATH_MAX]
        if path[:1] == b"\0":
            return family, path                  # abstract: every byte counts
        return family, path.split(b"\0", 1)[0]   # a path ends at its NUL
    return family, b""


def encode_sockaddr(family: int, address: HostAddress) -> bytes:
    """The guest's ``struct sockaddr_*`` for an address Python returned."""
    head = family.to_bytes(2, "little")
    if family == AF_INET:
        host, port = address[0], address[1]  # type: ignore[index]
        return (head + int(port).to_bytes(2, "big")
                + socket.inet_pton(socket.AF_INET, str(host)) + bytes(8))
    if family == AF_INET6:
        host, port, flowinfo, scope_id = address  # type: ignore[misc]
        return (head + int(port).to_bytes(2, "big") + int(flowinfo).to_bytes(4, "big")
                + socket.inet_pton(socket.AF_INET6, str(host).split("%")[0])
                + int(scope_id).to_bytes(4, "little"))
    if family == AF_UNIX:
        name = os.fsencode(address) if address else b""  # type: ignore[arg-type]
        if not name:
            return head                          # unnamed: the family alone
        return head + name + (b"" if name[:1] == b"\0" else b"\0")
    return head


def describe_address(family: int, address: HostAddress) -> str:
    """``127.0.0.1:80``, ``[::1]:80``, ``unix:/run/x.sock``, ``unix:@name``."""
    if family == AF_INET:
        return f"{address[0]}:{address[1]}"  # type: ignore[index]
    if family == AF_INET6:
        return f"[{address[0]}]:{address[1]}"  # type: ignore[index]
    name = os.fsdecode(address)  # type: ignore[arg-type]
    return "unix:" + ("@" + name[1:] if name.startswith("\0") else name)


# --- the open file -------------------------------------------------------------


class SocketFile(OpenFile):
    """A guest socket: a non-blocking host socket, blocking as the guest asked.

    *should_stop* says when the run is being stopped (the time limit): a
    blocking wait then gives up with ``EINTR``.  ``host_fd`` is the host
    socket's fd, for ``fstat`` and ``poll``.
    """

    kind = "socket"

    def __init__(self, sock: socket.socket, family: int, type_: int, nonblocking: bool,
                 should_stop: Callable[[], bool]) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.family = family
        self.type = type_
        self.host_fd = sock.fileno()
        self.path = f"socket:[{os.fstat(self.host_fd).st_ino}]"
        self.status_flags = O_RDWR | (O_NONBLOCK if nonblocking else 0)
        self.should_stop = should_stop
        self.connected = False
        self.timeouts = {SO_RCVTIMEO: 0.0, SO_SNDTIMEO: 0.0}   # 0: wait forever

    # -- the OpenFile interface (read, write, readv, writev, close) -------------
    def readv(self, views: list[memoryview]) -> int:
        return self.receive(views, 0)[0]

    def writev(self, chunks: list[memoryview]) -> int:
        return self.send(chunks, 0, None)

    def close(self) -> None:
        if self.host_fd is not None:
            self.sock.close()
            self.host_fd = None

    # -- socket operations --------------------------------------------------------
    def connect(self, address: HostAddress) -> None:
        """Connect to *address* (already allowed by the policy)."""
        err = _host(lambda: self.sock.connect_ex(address))
        if err == errno.EINPROGRESS and not self._nonblocking(0):
            self._wait(select.POLLOUT, SO_SNDTIMEO)
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        self.connected = True

    def send(self, chunks: list[memoryview], flags: int,
             address: Optional[HostAddress]) -> int:
        """``sendmsg`` of *chunks*; *address* for an unconnected datagram."""
        extra = (address,) if address is not None else ()
        return self._retry(lambda: self.sock.sendmsg(chunks, [], flags & SEND_FLAGS, *extra),
                           select.POLLOUT, SO_SNDTIMEO, flags)

    def receive(self, views: list[memoryview], flags: int) -> tuple[int, int, HostAddress]:
        """``recvmsg`` into *views*: (bytes, message flags, source address).

        No room is given for control messages, so file descriptors a host
        peer sends (``SCM_RIGHTS``) are closed by the kernel, never installed.
        ``MSG_WAITALL`` on a stream socket loops until *views* are full.
        """
        count, message_flags, source = self._receive_once(views, flags)
        if flags & MSG_WAITALL and self.type == SOCK_STREAM and not flags & MSG_PEEK:
            wanted = sum(len(v) for v in views)
            while 0 < count < wanted:
                more = self._receive_once(_advance(views, count), flags)[0]
                if more == 0:
                    break
                count += more
        return count, message_flags, source

    def _receive_once(self, views: list[memoryview], flags: int) -> tuple[int, int, HostAddress]:
        if not views:
            views = [memoryview(bytearray(0))]
        count, _, message_flags, source = self._retry(
            lambda: self.sock.recvmsg_into(views, 0, flags & RECV_FLAGS),
            select.POLLIN, SO_RCVTIMEO, flags)
        return count, message_flags, source

    # -- waiting --------------------------------------------------------------------
    def _nonblocking(self, flags: int) -> bool:
        return bool(self.status_flags & O_NONBLOCK or flags & MSG_DONTWAIT)

    def _retry(self, operation: Callable, events: int, timeout_option: int, flags: int):
        """Run *operation*; while it would block and the guest blocks, wait."""
        while True:
            try:
                return _host(operation)
            except BlockingIOError:
                if self._nonblocking(flags):
                    raise SyscallError(errno.EAGAIN, "would block") from None
                self._wait(events, timeout_option)

    def _wait(self, events: int, timeout_option: int) -> None:
        """Wait until the host socket is ready, in slices, checking for a stop."""
        limit = self.timeouts[timeout_option]
        deadline = time.monotonic() + limit if limit else None
        poller = select.poll()
        poller.register(self.host_fd, events)
        while True:
            if self.should_stop():
                raise SyscallError(errno.EINTR, "interrupted: the run is being stopped")
            slice_seconds = WAIT_SLICE_SECONDS
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SyscallError(errno.EAGAIN, "timed out (SO_RCVTIMEO/SO_SNDTIMEO)")
                slice_seconds = min(slice_seconds, left)
            if poller.poll(slice_seconds * 1000):
                return


def _advance(views: list[memoryview], count: int) -> list[memoryview]:
    """*views* without their first *count* bytes."""
    rest = []
    for view in views:
        if count >= len(view):
            count -= len(view)
            continue
        rest.append(view[count:])
        count = 0
    return rest


def _host(operation: Callable):
    """Run a Python socket call; its argument errors become EINVAL.

    ``OSError`` (the host kernel's errno) passes through to the dispatcher.
    Python raises ``ValueError``/``OverflowError``/``TypeError`` for
    addresses it cannot even pass to the kernel; the guest sees EINVAL.
    """
    try:
        return operation()
    except (ValueError, OverflowError, TypeError) as error:
        raise SyscallError(errno.EINVAL, f"invalid socket argument: {error}") from None


# --- helpers ----------------------------------------------------------------------


def _socket(proc: Process, fd: int) -> SocketFile:
    file = proc.fds.get(signed32(fd))
    if not isinstance(file, SocketFile):
        raise SyscallError(errno.ENOTSOCK, f"fd {signed32(fd)} is not a socket")
    return file


def _stop_check(proc: Process) -> Callable[[], bool]:
    """``kvm_run.immediate_exit``: set by the run loop's time limit."""
    run_state = proc.machine.vcpu.run_state
    return lambda: bool(run_state.immediate_exit)


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
    """May a datagram from *source* reach an unconnected IP socket?"""
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
    _host(lambda: file.sock.setsockopt(level, name, data))
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
        data = _host(lambda: file.sock.getsockopt(level, name, min(max(room, 1),
                                                                   MAX_OPTION_LENGTH)))
    else:
        raise SyscallError(errno.ENOPROTOOPT, f"socket option {level}/{name} is not "
                           "supported in the sandbox")
    proc.mm.write(value, data[:room])
    proc.mm.write_struct(length_address, "<i", min(len(data), room))
    return 0


def sys_bind(proc: Process, fd: int, address: int, length: int) -> int:
    """bind(2): refused with EACCES: a grant names places to reach, never a way
    to be reached."""
    _socket(proc, fd)
    family, value = _read_sockaddr(proc, address, length)
    shown = describe_address(family, value) if family in FAMILY_NAMES else f"family {family}"
    raise proc.policy.deny_listen("bind", shown)


def sys_listen(proc: Process, fd: int, backlog: int) -> int:
    """listen(2): refused with EACCES, as :func:`sys_bind`."""
    _socket(proc, fd)
    raise proc.policy.deny_listen("listen", f"fd {signed32(fd)}")


def sys_accept4(proc: Process, fd: int, address: int, length_address: int, flags: int) -> int:
    """accept4(2): refused with EACCES, as :func:`sys_bind`."""
    _socket(proc, fd)
    raise proc.policy.deny_listen("accept", f"fd {signed32(fd)}")


def sys_accept(proc: Process, fd: int, address: int, length_address: int) -> int:
    """accept(2): :func:`sys_accept4` without flags (EACCES)."""
    return sys_accept4(proc, fd, address, length_address, 0)


SOCKET_NOTE = ("AF_UNIX/AF_INET/AF_INET6, SOCK_STREAM/SOCK_DGRAM; needs an --allow-connect "
               "grant (EACCES otherwise)")
SEND_NOTE = "datagram addresses are checked against the policy; no SIGPIPE"
RECV_NOTE = "unconnected datagram sockets drop datagrams from addresses not allowed"
LISTEN_NOTE = "the policy grants outgoing connections only"

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
    Syscall(49, "bind", sys_bind, ("fd", "ptr", "uint"), REFUSED, LISTEN_NOTE, errno.EACCES),
    Syscall(50, "listen", sys_listen, ("fd", "int"), REFUSED, LISTEN_NOTE, errno.EACCES),
    Syscall(43, "accept", sys_accept, ("fd", "ptr", "ptr"), REFUSED, LISTEN_NOTE,
            errno.EACCES),
    Syscall(288, "accept4", sys_accept4, ("fd", "ptr", "ptr", "hex"), REFUSED, LISTEN_NOTE,
            errno.EACCES),
]
