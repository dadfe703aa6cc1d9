"""minikvm/syscalls/net.py and sockets.py: guest sockaddrs, and the socket calls of a real client.

The sockaddr codec is pure and checked against the C layouts by round trip
and against Python's own packing; the client (``tests/hostile/sockets.c``)
runs under ``minikvm run`` against a TCP echo server and a UDP server on
127.0.0.1, with both granted.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from minikvm.errors import SyscallError
from minikvm.syscalls.sockets import (AF_INET, AF_INET6, AF_UNIX, SOCKADDR_IN6_SIZE, SOCKADDR_IN_SIZE,
                                      decode_sockaddr, describe_address, encode_sockaddr)
from tests.guest_runs import run_minikvm
from tests.programs.build import DEFAULT_BUILD_DIR, build

ROOT = Path(__file__).resolve().parent.parent


# --- the sockaddr codec -----------------------------------------------------------


def test_sockaddr_in_layout():
    raw = encode_sockaddr(AF_INET, ("127.0.0.1", 8080))
    assert len(raw) == SOCKADDR_IN_SIZE
    # struct sockaddr_in: sa_family_t (host order), in_port_t and in_addr (network order)
    assert raw == struct.pack("<H", AF_INET) + struct.pack(">H", 8080) + bytes([127, 0, 0, 1]) \
        + bytes(8)
    assert decode_sockaddr(raw) == (AF_INET, ("127.0.0.1", 8080))


def test_sockaddr_in6_layout():
    raw = encode_sockaddr(AF_INET6, ("::1", 443, 0x12345, 7))
    assert len(raw) == SOCKADDR_IN6_SIZE
    assert raw[:8] == struct.pack("<H", AF_INET6) + struct.pack(">HI", 443, 0x12345)
    assert raw[8:24] == socket.inet_pton(socket.AF_INET6, "::1")
    assert raw[24:] == struct.pack("<I", 7)
    assert decode_sockaddr(raw) == (AF_INET6, ("::1", 443, 0x12345, 7))


@pytest.mark.parametrize("address, raw", [
    (b"/run/app.sock", struct.pack("<H", AF_UNIX) + b"/run/app.sock\0"),
    (b"\0abstract", struct.pack("<H", AF_UNIX) + b"\0abstract"),
    (b"", struct.pack("<H", AF_UNIX)),
])
def test_sockaddr_un_layout(address, raw):
    assert encode_sockaddr(AF_UNIX, address) == raw
    if address:
        assert decode_sockaddr(raw) == (AF_UNIX, address)


def test_a_unix_path_ends_at_its_nul_and_an_abstract_name_does_not():
    head = struct.pack("<H", AF_UNIX)
    assert decode_sockaddr(head + b"/a\0garbage") == (AF_UNIX, b"/a")
    assert decode_sockaddr(head + b"\0a\0b") == (AF_UNIX, b"\0a\0b")


@pytest.mark.parametrize("raw", [b"", b"\x02", struct.pack("<H", AF_INET) + bytes(10),
                                 struct.pack("<H", AF_INET6) + bytes(20)])
def test_short_sockaddrs_are_einval(raw):
    with pytest.raises(SyscallError) as info:
        decode_sockaddr(raw)
    assert info.value.errno == errno.EINVAL


def test_the_flow_label_is_cut_to_its_20_bits():
    raw = bytearray(encode_sockaddr(AF_INET6, ("::1", 1, 0, 0)))
    raw[4:8] = b"\xff\xff\xff\xff"
    assert decode_sockaddr(bytes(raw))[1][2] == 0xFFFFF


def test_describe_address():
    assert describe_address(AF_INET, ("10.0.0.1", 53)) == "10.0.0.1:53"
    assert describe_address(AF_INET6, ("::1", 80, 0, 0)) == "[::1]:80"
    assert describe_address(AF_UNIX, b"/run/x.sock") == "unix:/run/x.sock"
    assert describe_address(AF_UNIX, b"\0bus") == "unix:@bus"


# --- a real client ------------------------------------------------------------------


class Servers:
    """A TCP echo server and a UDP server on 127.0.0.1.

    The UDP server answers each datagram with "pong", but first sends
    "spoof" to the same client from a second socket, whose port the guest
    is not granted: the guest must never see it.
    """

    def __init__(self) -> None:
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.spoof = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.spoof.bind(("127.0.0.1", 0))
        for target in (self._echo, self._datagrams):
            threading.Thread(target=target, daemon=True).start()

    def _echo(self) -> None:
        while True:
            try:
                connection, _ = self.tcp.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(10)
                try:
                    while data := connection.recv(100):
                        connection.sendall(data)
                except OSError:
                    pass

    def _datagrams(self) -> None:
        while True:
            try:
                _, client = self.udp.recvfrom(100)
            except OSError:
                return
            self.spoof.sendto(b"spoof", client)
            time.sleep(0.05)          # so the spoof is queued first
            self.udp.sendto(b"pong", client)

    def close(self) -> None:
        for sock in (self.tcp, self.udp, self.spoof):
            sock.close()


EXPECTED = """\
socketpair: 0
pair-write: 0
pair-read: 0
pair-byte: a
pair-read-empty: 11
scm-rights: 1
dgram-pair: 0
sendmmsg: 2
recvmmsg: 2
datagrams: one two (3 bytes)
tcp-connect: 0
getpeername: 0
peer-port-matches: 1
getsockname: 0
local-address: 127.0.0.1
tcp-nodelay: 0
get-so-type: 0
so-type: 1
bindtodevice: 92
sendmsg: 0
recvmsg: 0
echo: hello
write-dup: 0
read: 0
echo: again
recv-nonblocking: 11
shutdown: 0
read-after-shutdown: 0
rcvtimeo: 0
udp-sendto: 0
udp-recvfrom: 0
udp-reply: pong from-port-matches: 1 next-byte: ?
udp-recv-timeout: 11
"""


@pytest.mark.kvm
@pytest.mark.parametrize("variant", ["glibc-static", "musl-static"])
def test_a_client_uses_its_granted_endpoints(variant, tmp_path):
    client = build(ROOT / "tests" / "hostile" / "sockets.c", DEFAULT_BUILD_DIR / "hostile",
                   variant)
    servers = Servers()
    try:
        tcp, udp = servers.tcp.getsockname()[1], servers.udp.getsockname()[1]
        spoof = servers.spoof.getsockname()[1]
        run = run_minikvm(["--audit", "--allow-connect", f"127.0.0.1:{tcp}",
                           "--allow-connect", f"127.0.0.1:{udp}", client, tcp, udp],
                          cwd=tmp_path, text=True, timeout=60)
    finally:
        servers.close()
    assert run.returncode == 0, run.stderr
    assert run.stdout == EXPECTED
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr
    assert f"recvfrom(127.0.0.1:{spoof}) = -EACCES" in run.stderr      # dropped, and logged
    assert "sendmsg(control messages" in run.stderr
