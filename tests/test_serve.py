"""``minikvm serve``: a real server in a subprocess, real HTTP from http.client.

The server listens on 127.0.0.1 port 0 (it prints the port it got), the
test sends a bounded number of requests, then stops it with SIGTERM and
checks that it exits cleanly.  Nothing is ever sent off this machine.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minikvm.cli.serve import STATUS_OK, outcome_of, parse_listen, parse_response
from minikvm.machine.stops import StopKind
from minikvm.snapshot.channel import Reply
from tests.guests import guest, hostile_guest

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0


# -- pure parts ----------------------------------------------------------------------

def test_a_bare_response_is_the_body_of_a_200() -> None:
    outcome = parse_response(b"hello")
    assert (outcome.status, outcome.body) == (STATUS_OK, b"hello")


def test_a_raw_response_keeps_status_and_headers_but_not_framing() -> None:
    outcome = parse_response(b"HTTP/1.1 404 Not Found\r\nX-A: 1\r\nContent-Length: 99\r\n"
                             b"Connection: keep-alive\r\n\r\nnope")
    assert outcome.status == 404 and outcome.headers == [("X-A", "1")] and outcome.body == b"nope"


def test_a_malformed_raw_response_is_a_502() -> None:
    assert parse_response(b"HTTP/1.1 abc\r\n\r\n").status == 502
    assert parse_response(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n").status == 502


def test_replies_map_to_statuses() -> None:
    assert outcome_of(Reply(StopKind.TIMEOUT, message="slow")).status == 504
    assert outcome_of(Reply(StopKind.CRASH, message="SIGSEGV: ...")).status == 502
    assert outcome_of(Reply(StopKind.WAIT, b"")).status == 502


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8080") == ("::1", 8080)


# -- a real server ------------------------------------------------------------------------

def start_server(program: Path, workers: int | str, request_timeout: float,
                 cores: set[int] | None = None, options: tuple[str, ...] = ()):
    """``minikvm serve`` of *program* on an ephemeral port: ``(port, process, log)``;
    on *cores* only when given (as ``taskset`` would); *options* go before ``--``."""
    command = [sys.executable, "-m", "minikvm", "serve", "--listen", "127.0.0.1:0",
               "--workers", str(workers), "--request-timeout", str(request_timeout), *options,
               "--", str(program)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=pin)
    port = None
    log: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT
    while port is None and time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        log.append(line)
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
        if match:
            port = int(match.group(1))
    if port is None:
        process.kill()
        pytest.fail("minikvm serve did not start:\n" + "".join(log))
    return port, process, log


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def server():
    """``minikvm serve`` on an ephemeral port, two workers, a short request timeout."""
    port, process, log = start_server(guest("handler"), 2, 1)
    yield port, process, log
    stop_server(process)


def get(port: int, path: str, body: bytes | None = None) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request("POST" if body is not None else "GET", path, body=body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.mark.kvm
def test_requests_are_answered_by_a_pristine_copy(server) -> None:
    port, _, _ = server
    for _ in range(20):
        status, headers, body = get(port, "/hello")
        assert status == 200 and body.startswith(b"counter=1 ")
        assert headers["Content-Type"] == "application/octet-stream"


@pytest.mark.kvm
def test_the_request_reaches_the_program_with_its_body(server) -> None:
    port, _, _ = server
    status, _, body = get(port, "/echo", body=b"0123456789")
    # heap = 8 ("pristine") + the serialised request; it holds the body
    length = int(re.search(rb"heap=(\d+)", body).group(1)) - 8
    assert status == 200 and length > len(b"POST /echo HTTP/1.1\r\n\r\n0123456789")


@pytest.mark.kvm
def test_a_raw_http_response_passes_through(server) -> None:
    port, _, _ = server
    status, headers, body = get(port, "/http")
    assert (status, body, headers["X-Guest"]) == (201, b"created\n", "yes")


@pytest.mark.kvm
def test_a_crash_is_a_502_and_the_server_keeps_serving(server) -> None:
    port, _, log = server
    for _ in range(3):
        status, _, body = get(port, "/crash")
        assert status == 502 and b"SIGSEGV: page fault writing 0x10" in body
        assert get(port, "/hello")[0] == 200


@pytest.mark.kvm
def test_a_timeout_is_a_504_and_the_server_keeps_serving(server) -> None:
    port, _, _ = server
    status, _, body = get(port, "/spin")
    assert status == 504
    assert get(port, "/hello")[0] == 200


@pytest.mark.kvm
def test_no_response_and_exit_are_502s(server) -> None:
    port, _, _ = server
    assert get(port, "/silent")[0] == 502
    assert get(port, "/exit")[0] == 502
    assert get(port, "/hello")[0] == 200


@pytest.mark.kvm
def test_sigterm_stops_the_server_gracefully(server) -> None:
    port, process, log = server
    assert get(port, "/hello")[0] == 200
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    rest = process.stderr.read()
    assert "SIGSEGV" in "".join(log) + rest       # the crash lines were logged
    assert "Traceback" not in rest


# -- the reset between requests restores the whole process -----------------------------------

@pytest.fixture(scope="module")
def leaky_server():
    """``minikvm serve`` of tests/hostile/leak_requests.c with one worker, so
    every request runs in the fork the one before it ran in (and was reset)."""
    port, process, log = start_server(hostile_guest("leak_requests"), 1, REQUEST_TIMEOUT)
    status, _, pristine = get(port, "/peek")
    assert status == 200 and pristine.startswith(b"leaked= thread=0 "), pristine
    yield port, pristine, process
    stop_server(process)


@pytest.mark.kvm
@pytest.mark.parametrize("path", ["/thread:s3cret", "/spinner", "/waiter", "/brk", "/open",
                                  "/close", "/handler", "/block", "/altstack", "/alarm",
                                  "/umask", "/epoll", "/eventfd", "/pipe", "/pipes", "/identity",
                                  "/tid"])
def test_a_request_leaves_nothing_for_the_next(leaky_server, path: str) -> None:
    """A thread started by a request, a break moved inside its page, an fd
    opened, a signal handler, mask, pending signal or alarm, an epoll
    registration …: the next request sees the snapshot's state, no data of
    the request before, and is not crashed (by a leftover thread running on
    its memory, or a leftover alarm)."""
    port, pristine, _ = leaky_server
    status, _, body = get(port, path)
    assert status == 200 and body.endswith(b": done"), body
    for _ in range(2):
        status, _, body = get(port, "/peek")
        assert (status, body) == (200, pristine)


def worker_pids(supervisor: int) -> set[int]:
    """The supervisor's children, from /proc (the workers it forked)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return {int(pid) for pid in children}


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its reaper."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.kvm
def test_workers_die_with_a_killed_supervisor() -> None:
    """SIGKILL gives the supervisor no chance to stop its workers: the
    kernel must (PR_SET_PDEATHSIG), or they serve on, orphaned, forever."""
    port, process, _ = start_server(guest("handler"), 2, 5)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        workers = worker_pids(process.pid)
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            workers = worker_pids(process.pid)
        assert len(workers) == 2, workers
        assert get(port, "/hello")[0] == 200
    finally:
        stop_server(process)            # SIGKILL
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers), f"workers {workers} outlived the supervisor"


def wait_for_workers(supervisor: int, count: int) -> set[int]:
    """The supervisor's workers once *count* have started (or what there is
    after START_TIMEOUT), then a moment more: a count too high shows too."""
    deadline = time.monotonic() + START_TIMEOUT
    workers = worker_pids(supervisor)
    while len(workers) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        workers = worker_pids(supervisor)
    time.sleep(0.5)
    return worker_pids(supervisor)


@pytest.mark.kvm
@pytest.mark.parametrize("narrowed", [False, True], ids=["every-core", "one-core"])
def test_workers_auto_is_one_per_core_the_server_may_use(narrowed: bool) -> None:
    """``--workers auto`` (the default) follows the CPU affinity, so
    ``taskset -c 0 minikvm serve`` starts one worker and an unpinned server
    one per core."""
    cores = {min(os.sched_getaffinity(0))} if narrowed else None
    expected = 1 if narrowed else len(os.sched_getaffinity(0))
    port, process, _ = start_server(guest("handler"), "auto", 5, cores=cores)
    try:
        assert len(wait_for_workers(process.pid, expected)) == expected
        assert get(port, "/hello")[0] == 200
    finally:
        stop_server(process)


def peak_kib(pid: int) -> int:
    """VmHWM, the peak resident memory of process *pid*, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


@pytest.mark.kvm
def test_a_response_over_the_limit_is_a_502_not_host_memory() -> None:
    """512 minikvm_respond calls of 1 MiB each: every one is under the
    per-call limit, their sum is not.  The request is a 502 with a log line,
    the worker's peak memory grows by at most about the limit (the sum of a
    request's responses, MAX_RESPONSE), not by the 512 MiB asked, and the
    next request is served as if nothing happened."""
    from minikvm.syscalls.requests import MAX_RESPONSE
    port, process, log = start_server(guest("handler"), 1, REQUEST_TIMEOUT)
    try:
        assert get(port, "/hello")[0] == 200
        (worker,) = worker_pids(process.pid)
        before = peak_kib(worker)
        status, _, body = get(port, "/flood")
        assert status == 502, body[:200]
        assert b"grew past" in body
        grown = peak_kib(worker) - before
        assert grown < (MAX_RESPONSE >> 10) + (16 << 10), f"the worker grew {grown} KiB"
        status, _, body = get(port, "/hello")
        assert status == 200 and body.startswith(b"counter=1 "), body
    finally:
        stop_server(process)
    logged = process.stderr.read()
    assert "grew past" in logged, logged[-2000:]


@pytest.mark.kvm
def test_a_response_at_the_limit_is_held_once() -> None:
    """A raw HTTP response of 63 MiB, just under MAX_RESPONSE: the worker
    holds it once (it used to hold the pieces, their join, and the body cut
    from it: +192 MiB), and one whose head never ends is a 502 with a log
    line, not a split of 63 MiB into copies."""
    from minikvm.syscalls.requests import MAX_RESPONSE
    port, process, log = start_server(guest("handler"), 1, REQUEST_TIMEOUT)
    try:
        assert get(port, "/hello")[0] == 200
        (worker,) = worker_pids(process.pid)
        before = peak_kib(worker)
        status, headers, body = get(port, "/fill")
        assert status == 200 and headers.get("X-Fill") == "yes", body[:200]
        assert len(body) == 63 << 20 and body.strip(b"f") == b""
        status, _, body = get(port, "/fill-headless")
        assert status == 502 and b"malformed HTTP response" in body, body[:200]
        grown = peak_kib(worker) - before
        print(f"fill: the worker grew {grown} KiB (peak {peak_kib(worker)} KiB)")
        assert grown < (MAX_RESPONSE >> 10) + (16 << 10), f"the worker grew {grown} KiB"
        status, _, body = get(port, "/hello")
        assert status == 200 and body.startswith(b"counter=1 "), body
    finally:
        stop_server(process)
    logged = process.stderr.read()
    assert "no empty line ends its headers" in logged, logged[-2000:]
