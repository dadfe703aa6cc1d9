"""Names, wildcards, the whole network, and listening (issue 11, item 8).

``--allow-connect`` takes host names (resolved once, when the policy is
built: every address allowed) and ``HOST:*``; ``--allow-net`` allows every
IP address but the machine's own and link-local ones; ``--allow-listen``
lets a server bind, listen and accept on one address — and nothing else:
binding another port, ``0.0.0.0`` when only ``127.0.0.1`` is granted, a
unix socket, or listening on a free port the kernel picked, stays EACCES.
The server and clients here are real sockets on 127.0.0.1, the guest a C
program built in the test run (``tests/programs/net_server.c``).
"""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest

from minikvm.sandbox.endpoints import (ANY_PORT, Endpoint, EndpointError, parse_endpoint,
                                       reaches_the_network, resolve_endpoints)
from minikvm.sandbox.audit import PolicyDenied
from minikvm.sandbox.policy import Policy, PolicyError
from tests.guest_runs import minikvm_command, minikvm_environment, run_minikvm
from tests.programs.build import program


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the grammar, with the resolver given --------------------------------------------


def fake_resolver(answers: dict[str, list[str]]):
    def resolve(host, port, family, kind):
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, kind, 6, "",
                 (a, 0) if ":" not in a else (a, 0, 0, 0)) for a in answers[host]]
    return resolve


def test_a_name_allows_every_address_it_resolves_to() -> None:
    resolver = fake_resolver({"pypi.org": ["151.101.0.223", "151.101.64.223", "2a04:4e42::223"]})
    endpoints = resolve_endpoints("pypi.org:443", resolver)
    assert [str(e) for e in endpoints] == ["151.101.0.223:443", "151.101.64.223:443",
                                           "[2a04:4e42::223]:443"]
    assert endpoints[0].describe() == "pypi.org:443 (151.101.0.223)"
    assert endpoints[0] == parse_endpoint("151.101.0.223:443")       # the name is not identity


def test_a_name_that_does_not_resolve_is_an_error_that_says_so() -> None:
    with pytest.raises(EndpointError, match="cannot resolve 'nowhere.example'"):
        resolve_endpoints("nowhere.example:80", fake_resolver({}))
    with pytest.raises(EndpointError, match="nor a host name"):
        resolve_endpoints("bad!name:80", fake_resolver({}))
    with pytest.raises(EndpointError, match="from 1 to 65535"):
        resolve_endpoints("host:0", fake_resolver({"host": ["10.0.0.1"]}))


def test_a_star_port_matches_every_port_of_that_host_only() -> None:
    star = parse_endpoint("10.0.0.1:*")
    assert star.port == ANY_PORT and str(star) == "10.0.0.1:*"
    assert star.matches(parse_endpoint("10.0.0.1:22"))
    assert not star.matches(parse_endpoint("10.0.0.2:22"))
    assert not parse_endpoint("10.0.0.1:80").matches(parse_endpoint("10.0.0.1:81"))


@pytest.mark.parametrize("address, reached", [
    ("93.184.216.34", True), ("[2606:2800:220:1::]", True), ("10.1.2.3", True),
    ("127.0.0.1", False), ("127.8.9.10", False), ("[::1]", False), ("0.0.0.0", False),
    ("169.254.169.254", False), ("[fe80::1]", False), ("[::ffff:127.0.0.1]", False),
])
def test_allow_net_leaves_out_the_machine_itself_and_the_link(address: str,
                                                              reached: bool) -> None:
    assert reaches_the_network(parse_endpoint(f"{address}:80")) is reached


def test_the_policy_asks_the_same_questions() -> None:
    policy = Policy(connect=["10.0.0.1:*"], allow_net=False, listen=["0.0.0.0:8080"])
    try:
        assert policy.allows_endpoint(parse_endpoint("10.0.0.1:5432"))
        assert not policy.allows_endpoint(parse_endpoint("10.0.0.9:5432"))
        assert policy.connect_any_port and policy.listen_ports == (0, 8080)
        policy.check_bind(socket.AF_INET, ("127.0.0.1", 8080))         # narrower than granted
        policy.check_bind(socket.AF_INET, ("10.0.0.7", 0))             # a client's source
        with pytest.raises(PolicyDenied):
            policy.check_bind(socket.AF_INET, ("127.0.0.1", 8081))
        with pytest.raises(PolicyDenied):
            policy.check_listen(socket.AF_INET, ("127.0.0.1", 40000))  # a port the kernel picked
    finally:
        policy.close()
    with pytest.raises(PolicyError, match="one port"):
        Policy(listen=["10.0.0.1:*"])


# --- real sockets ------------------------------------------------------------------------


@pytest.mark.kvm
def test_a_server_listens_only_where_it_is_allowed(tmp_path: Path) -> None:
    port = free_port()
    guest = subprocess.Popen(
        minikvm_command(["--audit", "--timeout=60", "--allow-listen", f"127.0.0.1:{port}", "--",
                         program("net_server"), "serve", port]),
        cwd=tmp_path, env=minikvm_environment(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in guest.stdout:                   # type: ignore[union-attr]
            lines.append(line.rstrip("\n"))
            if line == "listening\n":
                break
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(b"hello\n")
            answer = client.recv(100)
        out, err = guest.communicate(timeout=60)
    finally:
        guest.kill()
        guest.wait()
    lines += out.splitlines()
    assert answer == b"echo: hello\n"
    assert lines == [
        "bind port 0: ok", "listen on it: EACCES",
        "bind another port: EACCES", "bind 0.0.0.0 on the port: EACCES",
        "bind a unix socket: EACCES", "accept before listen: EINVAL",
        "bind: ok", "listen: ok", "listening", "accept: ok peer=127.0.0.1", "done"], err
    assert guest.returncode == 0
    assert f"bind(127.0.0.1:{port + 1}) = -EACCES" in err
    assert re.search(r"listen\(127\.0\.0\.1:\d+\) = -EACCES", err)   # the free port it got
    assert "Traceback" not in err


@pytest.mark.kvm
@pytest.mark.parametrize("grant, expected", [
    (["--allow-connect", "localhost:*"], "connect: ok"),
    (["--allow-connect", "127.0.0.1:{port}"], "connect: ok"),
    (["--allow-connect", "127.0.0.1:{other}"], "connect: EACCES"),
    (["--allow-net"], "connect: EACCES"),            # the machine's own services stay out
    ([], "socket: EACCES"),
])
def test_names_stars_and_the_network(grant: list[str], expected: str, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        flags = [word.format(port=port, other=port + 1) for word in grant]
        run = run_minikvm(["--timeout=60", *flags, "--", program("net_server"), "connect", port],
                          cwd=tmp_path, text=True, timeout=90)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == expected
    assert "Traceback" not in run.stderr
