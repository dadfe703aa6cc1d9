"""Layer 6 — the socket file: the guest's socket ABI, its addresses, and the host socket behind it.

What :mod:`minikvm.syscalls.net`'s system calls work on: the constants of
``<sys/socket.h>``, ``<netinet/in.h>`` and ``<sys/un.h>`` as the guest
passes them; the guest's ``struct sockaddr`` bytes turned into the
addresses Python's socket module takes and back (:func:`decode_sockaddr`,
:func:`encode_sockaddr`); and :class:`SocketFile`, the fd-table entry that
holds a real, always non-blocking host socket and waits for it in slices of
:data:`WAIT_SLICE_SECONDS`, so a guest blocked in ``recv`` is still stopped
by ``--timeout`` (see :mod:`minikvm.syscalls.net` for the whole story).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from typing import TYPE_CHECKING, Callable, Optional, Union

from minikvm.errors import SyscallError
from minikvm.linux_abi import O_NONBLOCK, O_RDWR
from minikvm.process.fdtable import OpenFile
from minikvm.syscalls.base import views_after

if TYPE_CHECKING:
    pass

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
# Errors (ICMP "port unreachable") reported at once, not after a timeout;
# glibc's resolver sets them on its UDP socket and gives up if it cannot.
# <linux/in.h>, <linux/in6.h>.  The error queue itself is never read
# (MSG_ERRQUEUE is dropped below): the host only reports the error sooner.
IP_RECVERR = 11
IPV6_RECVERR = 25

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
    (IPPROTO_IP, IP_RECVERR): True, (IPPROTO_IPV6, IPV6_RECVERR): True,
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
        #: listen() succeeded (accept is EINVAL before)
        self.listening = False
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
        err = host_socket_call(lambda: self.sock.connect_ex(address))
        if err == errno.EINPROGRESS and not self._nonblocking(0):
            self._wait(select.POLLOUT, SO_SNDTIMEO)
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        self.connected = True

    def accept(self) -> tuple[socket.socket, HostAddress]:
        """A connection from the queue (the policy allowed the listen),
        waiting as the guest's socket blocks; the new host socket is
        close-on-exec."""
        sock, peer = self._retry(lambda: self.sock.accept(), select.POLLIN, SO_RCVTIMEO, 0)
        sock.set_inheritable(False)
        return sock, peer

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
                more = self._receive_once(views_after(views, count), flags)[0]
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
                return host_socket_call(operation)
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


def host_socket_call(operation: Callable):
    """Run a Python socket call; its argument errors become EINVAL.

    ``OSError`` (the host kernel's errno) passes through to the dispatcher.
    Python raises ``ValueError``/``OverflowError``/``TypeError`` for
    addresses it cannot even pass to the kernel; the guest sees EINVAL.
    """
    try:
        return operation()
    except (ValueError, OverflowError, TypeError) as error:
        raise SyscallError(errno.EINVAL, f"invalid socket argument: {error}") from None
