"""``--allow-dns``: the system resolver works, and only towards its name servers.

The test starts a tiny DNS responder (UDP, port 53 of a loopback address of
its own) that answers every ``A`` question with an address it makes up for
the name, and writes a ``resolv.conf`` naming it; ``--resolv-conf`` makes
that file the program's ``/etc/resolv.conf``.  A dynamic glibc program
(``tests/programs/dynamic/resolve.c``, ``getaddrinfo``) then resolves a
name through it, and must print what the responder answered.  Without
``--allow-dns`` the same program finds nothing and ``/etc/resolv.conf`` is
not in the view.

Nothing here is timed; subprocess timeouts only stop a guest that hangs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import struct
import threading
from pathlib import Path
from typing import Iterator

import pytest

from minikvm.sandbox.endpoints import parse_nameservers
from tests.guest_runs import run_minikvm, run_native
from tests.programs.build import SOURCE_DIR, build

pytestmark = pytest.mark.kvm

RUN_TIMEOUT_SECONDS = 90        # a subprocess limit, never an assertion
#: A loopback address of the test's own (all of 127/8 is the host itself),
#: so that its port 53 is free.
SERVER = "127.83.53.1"
DNS_PORT = 53
NAME = "minikvm-dns-test.example"
TYPE_A, CLASS_IN = 1, 1


def made_up_address(name: bytes) -> str:
    """The responder's answer for *name*: 10.x.y.z from a hash of the name."""
    digest = hashlib.sha256(name.lower()).digest()
    return str(ipaddress.IPv4Address(bytes([10, *digest[:3]])))


def answer(query: bytes) -> bytes | None:
    """A DNS reply (RFC 1035 4.1) to *query*: one A record for an A
    question, no record (NOERROR) for any other; None for what is not a
    one-question query."""
    if len(query) < 12:
        return None
    ident, flags, questions = struct.unpack("!HHH", query[:6])
    if questions != 1 or flags & 0x8000:
        return None
    labels, at = [], 12
    while at < len(query) and query[at]:
        labels.append(query[at + 1:at + 1 + query[at]])
        at += 1 + query[at]
    question_end = at + 5
    if question_end > len(query):
        return None
    qtype, _ = struct.unpack("!HH", query[at + 1:question_end])
    name = b".".join(labels)
    records = []
    if qtype == TYPE_A:
        records.append(b"\xc0\x0c" + struct.pack("!HHIH", TYPE_A, CLASS_IN, 60, 4)
                       + socket.inet_aton(made_up_address(name)))
    header = struct.pack("!HHHHHH", ident, 0x8180 | (flags & 0x0100), 1, len(records), 0, 0)
    return header + query[12:question_end] + b"".join(records)


@pytest.fixture
def responder() -> Iterator[list[bytes]]:
    """The responder on SERVER:53 (UDP) for the test; yields the names asked."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server.bind((SERVER, DNS_PORT))
    except PermissionError:
        server.close()
        pytest.skip("binding port 53 needs root or CAP_NET_BIND_SERVICE")
    except OSError as error:
        server.close()
        pytest.skip(f"cannot bind {SERVER}:{DNS_PORT}: {error.strerror}")
    asked: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                query, peer = server.recvfrom(4096)
            except socket.timeout:
                continue
            reply = answer(query)
            if reply is not None:
                asked.append(query)
                server.sendto(reply, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield asked
    finally:
        stop.set()
        thread.join()
        server.close()


@pytest.fixture
def resolve(tmp_path: Path) -> Path:
    return build(SOURCE_DIR / "dynamic" / "resolve.c", tmp_path / "build", "glibc-dynamic")


@pytest.fixture
def resolv_conf(tmp_path: Path) -> Path:
    path = tmp_path / "resolv.conf"
    path.write_text(f"# the test's responder\nnameserver {SERVER}\n"
                    "options timeout:5 attempts:2\n")
    return path


def test_parse_nameservers_takes_glibcs_three_and_port_53() -> None:
    text = ("nameserver 10.0.0.1\n# nameserver 10.9.9.9\nnameserver fe80::1%eth0\n"
            "nameserver not-an-address\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n")
    assert parse_nameservers(text) == ["10.0.0.1:53", "[fe80::1]:53", "10.0.0.3:53"]
    assert parse_nameservers("search example.org\n") == ["127.0.0.1:53"]


def test_a_name_resolves_through_the_configured_name_server(responder, resolve, resolv_conf,
                                                            tmp_path: Path) -> None:
    guest = run_minikvm(["--allow-dns", "--resolv-conf", resolv_conf, "--", resolve, NAME],
                        cwd=tmp_path, text=True, timeout=RUN_TIMEOUT_SECONDS)
    assert (guest.stdout, guest.stderr, guest.returncode) == \
        (made_up_address(NAME.encode()) + "\n", "", 0)
    assert responder, "the responder was never asked"
    # and /etc/hosts still answers first, as natively
    native = run_native([resolve, "localhost"], timeout=RUN_TIMEOUT_SECONDS, text=True)
    hosts = run_minikvm(["--allow-dns", "--resolv-conf", resolv_conf, "--", resolve,
                         "localhost"], cwd=tmp_path, text=True, timeout=RUN_TIMEOUT_SECONDS)
    assert (hosts.stdout, hosts.returncode) == (native.stdout, native.returncode)


def test_the_programs_resolv_conf_is_the_one_given(responder, resolv_conf,
                                                   tmp_path: Path) -> None:
    cat = "/usr/bin/cat"
    guest = run_minikvm(["--allow-dns", "--resolv-conf", resolv_conf, "--", cat,
                         "/etc/resolv.conf"], cwd=tmp_path, text=True,
                        timeout=RUN_TIMEOUT_SECONDS)
    assert (guest.stdout, guest.returncode) == (resolv_conf.read_text(), 0), guest.stderr


def test_without_allow_dns_nothing_resolves_and_resolv_conf_is_hidden(responder, resolve,
                                                                      tmp_path: Path) -> None:
    guest = run_minikvm(["--", resolve, NAME], cwd=tmp_path, text=True,
                        timeout=RUN_TIMEOUT_SECONDS)
    assert guest.returncode == 2, guest.stderr
    assert guest.stdout.startswith(f"{NAME}: ")
    assert responder == []
    cat = run_minikvm(["--", "/usr/bin/cat", "/etc/resolv.conf"], cwd=tmp_path, text=True,
                      timeout=RUN_TIMEOUT_SECONDS)
    assert cat.returncode == 1
    assert "No such file or directory" in cat.stderr


def test_allow_dns_reaches_only_the_name_servers(responder, resolv_conf,
                                                 tmp_path: Path) -> None:
    """Another port, another address: refused as without --allow-dns."""
    busybox = "/usr/bin/busybox"
    if not Path(busybox).exists():
        pytest.skip("needs busybox")
    for target in (f"{SERVER}:80", f"127.0.0.1:{DNS_PORT}"):
        host, port = target.split(":")
        guest = run_minikvm(["--allow-dns", "--resolv-conf", resolv_conf, "--", busybox,
                             "nc", "-w", "1", host, port], cwd=tmp_path, text=True,
                            input="", timeout=RUN_TIMEOUT_SECONDS)
        assert guest.returncode != 0
        assert "Permission denied" in guest.stderr, guest.stderr
