"""``minikvm serve`` under load, beside two native servers (run by run.py).

::

    python benchmarks/serve_bench.py HANDLER REQUESTS ROUNDS CLIENTS[,CLIENTS...]
    python benchmarks/serve_bench.py --native-server cgi|persistent HANDLER WORKERS

*HANDLER* is ``echo_handler.c`` built statically.  Three servers are
started on ephemeral loopback ports and kept up for the whole run, each
with one worker per core (:func:`minikvm.cli.main.available_cores`):

``serve``
    ``python -m minikvm serve --listen 127.0.0.1:0 --workers N -- HANDLER``:
    the handler is snapshotted once at its first ``minikvm_wait_request``;
    each request runs in a fork reset to that snapshot;
``cgi``
    a native baseline: the same HTTP front end (minikvm.cli.serve's
    ``run_workers``, ``worker_loop`` and request handler, one connection at
    a time per worker, like serve's workers), where each request starts the
    same handler binary as a fresh native process (``fork``+``exec``, CGI
    style): the request on its stdin, the response from its stdout (the
    request calls fail natively with ENOSYS and ``include/minikvm.h`` falls
    back to stdin and stdout).  No sandbox;
``persistent``
    the floor of any per-request design: the same front end, where each
    worker keeps one native handler process (``echo_handler --persistent``)
    and passes it request after request through a pipe.  Nothing is
    started or reset per request, so what is left is the front end, the
    pipe and the handler's own work.

A load generator (threads, raw sockets: one connection per request, as both
servers answer ``Connection: close``) sends *REQUESTS* requests to each
server at each concurrency in *CLIENTS*, split into *ROUNDS* rounds in which
the servers take turns, so a load that comes and goes moves both.  Every
answer must be a 200 with the body the handler builds.  Prints one JSON
object: for each ``serve`` / ``cgi`` / ``persistent`` and concurrency C, ``BACKEND_cC``
holds ``p50_ms``, ``p99_ms`` (of every request's latency, connect to last
byte) and ``rps`` (requests over the wall time of its rounds).  When a
server cannot start, prints ``{"error": REASON}`` instead.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from minikvm.cli.main import available_cores
from minikvm.cli.serve import STATUS_BAD_GATEWAY, Backend, Outcome, open_listener, parse_response, \
    run_workers

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 30.0
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/")
RECEIVE_CHUNK = 65536
#: Requests sent to each server before any is timed (start-up, caches).
WARM_UP_REQUESTS = 5
#: echo_handler --persistent's frames: a 4-byte length in host byte order.
FRAME_LENGTH = struct.Struct("=I")


class ServerError(Exception):
    """A server could not start, or answered wrongly."""


# -- the native baseline ------------------------------------------------------------
class CgiBackend(Backend):
    """Each request: a fresh native process of the handler, request on
    stdin, response on stdout."""

    def __init__(self, handler: str) -> None:
        self.handler = handler

    def handle(self, request: bytes) -> Outcome:
        try:
            result = subprocess.run([self.handler], input=request, capture_output=True,
                                    timeout=REQUEST_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            return Outcome(STATUS_BAD_GATEWAY, [], b"cgi: timeout\n", "the handler timed out")
        if result.returncode != 0:
            return Outcome(STATUS_BAD_GATEWAY, [], b"cgi: the handler failed\n",
                           f"exit status {result.returncode}")
        return parse_response(result.stdout)


class PersistentBackend(Backend):
    """One native handler process per worker, started at the worker's first
    request (after the fork, so workers never share it), answering every
    request through its stdin and stdout in frames."""

    def __init__(self, handler: str) -> None:
        self.handler = handler
        self.process: subprocess.Popen[bytes] | None = None

    def handle(self, request: bytes) -> Outcome:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen([self.handler, "--persistent"],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(FRAME_LENGTH.pack(len(request)) + request)
            self.process.stdin.flush()
            header = self.process.stdout.read(FRAME_LENGTH.size)
            (size,) = FRAME_LENGTH.unpack(header)
            response = self.process.stdout.read(size)
        except (OSError, struct.error):
            self.process.kill()
            return Outcome(STATUS_BAD_GATEWAY, [], b"persistent: the handler failed\n",
                           "the persistent handler died")
        return parse_response(response)


NATIVE_BACKENDS = {"cgi": CgiBackend, "persistent": PersistentBackend}


def native_server(kind: str, handler: str, workers: int) -> int:
    """Serve HTTP on an ephemeral loopback port with *workers* workers until
    SIGTERM, announcing the port on stderr in the words ``minikvm serve`` uses."""
    listener = open_listener(("127.0.0.1", 0))
    host, port = listener.getsockname()[:2]
    print(f"{kind}: listening on http://{host}:{port}/", file=sys.stderr, flush=True)
    try:
        return run_workers(listener, workers, lambda: NATIVE_BACKENDS[kind](handler))
    finally:
        listener.close()


# -- starting and stopping a server ---------------------------------------------------
class Server:
    """A server process; its stderr is drained by a thread (a full pipe
    would stall it), kept for error messages."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                          env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True)
        self.log: list[str] = []
        self.port: int | None = None
        self.ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line.rstrip())
            match = LISTENING.search(line)
            if match and self.port is None:
                self.port = int(match.group(1))
                self.ready.set()
        self.ready.set()                       # it exited: nothing more will come

    def wait_ready(self) -> int:
        if not self.ready.wait(START_TIMEOUT_SECONDS) or self.port is None:
            tail = " / ".join(self.log[-5:]) or "no output"
            status = self.process.poll()
            how = (f"exited with status {status} before listening" if status is not None
                   else f"did not start listening in {START_TIMEOUT_SECONDS:.0f} s")
            raise ServerError(f"{self.name} {how}: {tail}")
        return self.port

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- the load generator ------------------------------------------------------------------
def one_request(port: int, number: int) -> float:
    """GET /bench/NUMBER on a new connection; seconds until the last byte.
    Raises ServerError unless the answer is the handler's."""
    path = f"/bench/{number}"
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT_SECONDS) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(RECEIVE_CHUNK):
            chunks.append(chunk)
    elapsed = time.perf_counter() - start
    answer = b"".join(chunks)
    expected = re.compile(rb"\r\n\r\nGET " + re.escape(path.encode()) + rb": \d+ bytes\n$")
    if not answer.startswith(b"HTTP/1.1 200 ") or not expected.search(answer):
        raise ServerError(f"request {path} got {answer[:200]!r}")
    return elapsed


def load(port: int, requests: int, clients: int, first: int) -> tuple[list[float], float]:
    """*requests* requests from *clients* threads; (latencies, wall seconds)."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    counter = iter(range(first, first + requests))
    lock = threading.Lock()

    def client() -> None:
        while not errors:
            with lock:
                number = next(counter, None)
            if number is None:
                return
            try:
                latency = one_request(port, number)
            except BaseException as error:      # reported below, from the main thread
                errors.append(error)
                return
            with lock:
                latencies.append(latency)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise ServerError(f"port {port}: {type(errors[0]).__name__}: {errors[0]}")
    return latencies, wall


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of *values*."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))]


def measure(handler: str, requests: int, rounds: int, clients: list[int]) -> dict[str, object]:
    workers = str(available_cores())
    servers = {"serve": Server("minikvm serve", [sys.executable, "-m", "minikvm", "serve",
                                                 "--listen", "127.0.0.1:0", "--workers", workers,
                                                 "--", handler]),
               "cgi": Server("the CGI server", [sys.executable, __file__, "--native-server",
                                                "cgi", handler, workers]),
               "persistent": Server("the persistent server",
                                    [sys.executable, __file__, "--native-server", "persistent",
                                     handler, workers])}
    try:
        ports = {name: server.wait_ready() for name, server in servers.items()}
        for name, port in ports.items():
            for number in range(WARM_UP_REQUESTS):
                one_request(port, number)
        per_round = max(1, requests // rounds)
        latencies: dict[str, list[float]] = {}
        walls: dict[str, float] = {}
        done: dict[str, int] = {}
        for _ in range(rounds):
            for count in clients:
                for name, port in ports.items():
                    figure = f"{name}_c{count}"
                    found, wall = load(port, per_round, count, done.get(figure, 0))
                    latencies.setdefault(figure, []).extend(found)
                    walls[figure] = walls.get(figure, 0.0) + wall
                    done[figure] = done.get(figure, 0) + per_round
        results: dict[str, object] = {}
        for figure, values in latencies.items():
            results[figure] = {"p50_ms": statistics.median(values) * 1000,
                               "p99_ms": percentile(values, 0.99) * 1000,
                               "rps": done[figure] / walls[figure],
                               "requests": done[figure]}
        return results
    finally:
        for server in servers.values():
            server.stop()
        problems = [line for server in servers.values() for line in server.log
                    if not LISTENING.search(line)]
        if problems:
            print("serve_bench: the servers said:\n  " + "\n  ".join(problems[-10:]),
                  file=sys.stderr)


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--native-server" and sys.argv[2] in NATIVE_BACKENDS:
        return native_server(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    if len(sys.argv) != 5 or sys.argv[1].startswith("--"):
        sys.exit("usage: serve_bench.py HANDLER REQUESTS ROUNDS CLIENTS[,CLIENTS...]\n"
                 "       serve_bench.py --native-server cgi|persistent HANDLER WORKERS")
    clients = [int(count) for count in sys.argv[4].split(",")]
    try:
        results = measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), clients)
    except (ServerError, OSError) as error:     # e.g. a connection refused
        results = {"error": f"{type(error).__name__}: {error}"}
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
