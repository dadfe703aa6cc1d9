"""Layer 8 — ``minikvm serve``: an HTTP server where every request runs in
a fresh copy of the program.

::

    minikvm serve --listen 127.0.0.1:8080 [--workers N] [--request-timeout S]
                  [--reset cow|copy] [policy options] -- PROGRAM [ARG...]

The program is started once, in the parent, and runs its start-up until
its first ``minikvm_wait_request`` (``include/minikvm.h``); there it is
snapshotted.  The parent then forks *N* worker processes that share the
listening socket (the kernel hands each connection to one of them).  Each
worker starts a :class:`~minikvm.snapshot.fork.Fork` of the snapshot — its own
VM — and for every HTTP request:

1. serialises it into the program's buffer — the request line, the headers
   as ``Name: value`` lines in the order received, an empty line, then the
   body (exactly ``Content-Length`` bytes; chunked bodies are refused with
   411): the HTTP/1.1 request as it came on the wire, normalised;
2. runs the fork until it waits for the next request, and answers with its
   response: a response starting with ``HTTP/1.`` is a raw HTTP response
   (status line, headers, empty line, body — the server sets
   ``Content-Length`` and ``Connection`` itself); anything else is the
   body of a ``200 OK`` (``application/octet-stream``);
3. resets the fork *after* sending the answer, so the reset is not on the
   client's path.

A crash answers ``502 Bad Gateway`` and logs the crash line; a request
that runs longer than ``--request-timeout`` answers ``504 Gateway
Timeout``; either way the fork is replaced by a new one and the worker
keeps serving.  SIGINT or SIGTERM stops the server gracefully: each worker
finishes the request it is handling, then exits.

Why the standard library's :mod:`http.server`: its request parser is well
tested and small to read; minikvm needs nothing else from a web framework.
Each worker handles one connection at a time and answers with
``Connection: close`` (as prefork servers such as gunicorn's sync workers
do), so an idle keep-alive client can never hold a worker; run more
workers for more concurrency — each is a process with its own VM.

The server confines itself as ``minikvm run`` does (:mod:`minikvm.sandbox.confine`):
the listening socket is bound and the VM created first, then Landlock and
seccomp go up, and only then is the program parsed, started and
snapshotted.  The server's seccomp filter still lets it fork its workers;
each worker stacks the strict filter before its first ``accept``.
``snapshot save`` writes from a confined child process, and ``snapshot
run`` confines itself before it parses the stored program.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import http.server
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from minikvm.cli.options import EXIT_USAGE
from minikvm.errors import MinikvmError
from minikvm.linux_abi import PR_SET_PDEATHSIG
from minikvm.machine.stops import StopKind
from minikvm.snapshot.channel import Reply
from minikvm.snapshot.snapshot import Snapshot

DEFAULT_REQUEST_TIMEOUT = 30.0
#: How long a client may take to send its request before the worker gives up.
CLIENT_TIMEOUT = 10.0
LISTEN_BACKLOG = 128
#: Headers the server writes itself, whatever the program's raw response says.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
#: The most bytes a raw HTTP response's status line and headers may take
#: (http.server's own limit on one header line): beyond, it is a 502.
MAX_RESPONSE_HEAD = 64 << 10
STATUS_BAD_GATEWAY = 502
STATUS_GATEWAY_TIMEOUT = 504
STATUS_LENGTH_REQUIRED = 411
STATUS_TOO_LARGE = 413
STATUS_OK = 200
#: A worker that dies unexpectedly is restarted, at most this often a minute.
MAX_RESTARTS_PER_MINUTE = 10
#: How long an idle worker waits in ``accept`` before it looks at its
#: "stopping" flag again.  Python runs a signal handler between bytecodes: a
#: SIGTERM that lands after the last bytecode before ``accept`` and before
#: the ``accept`` system call blocks runs its handler only when ``accept``
#: returns — without a timeout, at the next connection, i.e. maybe never.
ACCEPT_POLL_SECONDS = 0.5


class Shutdown(BaseException):
    """Raised in an idle worker by SIGTERM/SIGINT, to leave ``accept``."""


@dataclass
class Outcome:
    """What the back end made of one request: an HTTP answer, plus a line
    for the log when something went wrong."""
    status: int
    headers: list[tuple[str, str]]
    #: bytes, or a view on the program's response (never a copy of it)
    body: bytes | bytearray | memoryview
    log: str = ""


def parse_response(raw: bytes | bytearray) -> Outcome:
    """The program's response as an HTTP answer (see the module docstring).

    The status line and headers are looked for in the first
    :data:`MAX_RESPONSE_HEAD` bytes only, and the body is a view on *raw*:
    splitting a 64 MiB response into copies would hold it several times."""
    if not raw.startswith(b"HTTP/1."):
        return Outcome(STATUS_OK, [("Content-Type", "application/octet-stream")], raw)
    window = bytes(raw[:MAX_RESPONSE_HEAD])
    end, separator = window.find(b"\r\n\r\n"), 4
    if end < 0:
        end, separator = window.find(b"\n\n"), 2
    if end < 0:
        return Outcome(STATUS_BAD_GATEWAY, [], b"minikvm: the program sent a malformed HTTP "
                       b"response\n", f"malformed HTTP response from the program (no empty "
                       f"line ends its headers in the first {MAX_RESPONSE_HEAD} bytes)")
    body = memoryview(raw)[end + separator:]
    lines = window[:end].replace(b"\r\n", b"\n").split(b"\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit() or len(parts[1]) != 3:
        return Outcome(STATUS_BAD_GATEWAY, [], b"minikvm: the program sent a malformed HTTP "
                       b"response\n", "malformed HTTP response from the program")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            return Outcome(STATUS_BAD_GATEWAY, [], b"minikvm: the program sent a malformed "
                           b"HTTP header\n", f"malformed header line {line[:80]!r}")
        if name.strip().lower().decode("latin-1") not in FRAMING_HEADERS:
            headers.append((name.strip().decode("latin-1"), value.strip().decode("latin-1")))
    return Outcome(int(parts[1]), headers, body)


def outcome_of(reply: Reply) -> Outcome:
    """A fork's reply as an HTTP answer."""
    if reply.status == StopKind.WAIT:
        if not reply.response:
            return Outcome(STATUS_BAD_GATEWAY, [], b"minikvm: the program gave no response\n",
                           "no response (the program waited for the next request without "
                           "calling minikvm_respond)")
        return parse_response(reply.response)
    if reply.status == StopKind.TIMEOUT:
        return Outcome(STATUS_GATEWAY_TIMEOUT, [], b"minikvm: the program took too long\n",
                       reply.message)
    if reply.status == StopKind.EXIT and reply.response:
        outcome = parse_response(reply.response)
        outcome.log = reply.message
        return outcome
    return Outcome(STATUS_BAD_GATEWAY, [], f"minikvm: {reply.message}\n".encode(),
                   reply.message)


class Backend:
    """Turns one serialised request into an :class:`Outcome`."""

    max_request = 0

    def handle(self, request: bytes | bytearray) -> Outcome:
        raise NotImplementedError

    def after_response(self) -> None:
        """Work that can wait until the client has its answer."""

    def close(self) -> None:
        pass


class ForkBackend(Backend):
    """A fork of the snapshot, reset after each request, replaced after a
    crash or a timeout."""

    def __init__(self, snapshot: Snapshot, mechanism: str, timeout: float,
                 max_processes: int = 1) -> None:
        self.snapshot = snapshot
        self.mechanism = mechanism
        self.timeout = timeout
        self.max_processes = max_processes
        self.family: Any = None
        self.fork = self._new_fork()
        self.max_request = snapshot.wait[1] if snapshot.wait else 0
        self.pending: str | None = None    # "reset" or "replace"

    def _new_fork(self) -> Any:
        """A fork of the snapshot; with ``--max-processes`` above 1, one
        whose program may make processes (fork, vfork, posix_spawn: a
        CGI-style handler running a helper): a process tree of its own
        (:class:`~minikvm.tree.family.Family`), this worker its first
        host process.  Its guest gets SIGCHLD and the tree's mailbox signal;
        the worker keeps SIGTERM and SIGINT for its graceful stop."""
        fork = self.snapshot.fork(self.mechanism)
        if self.max_processes < 2:
            return fork
        from minikvm.tree.family import Family
        from minikvm.tree.table import DEFAULT_SANDBOX_MEMORY
        process = fork.process
        self.family = Family.start(self.max_processes, process.pgid, process.sid,
                                   process.mm.user_pool.used, DEFAULT_SANDBOX_MEMORY)
        process.family = self.family
        process.new_id = self.family.table.new_id
        self.family.publish(process)
        fork.machine.forward_outside_signals((signal.SIGCHLD,)).mailbox = self.family.mail
        return fork

    def _end_processes(self) -> None:
        """The processes the request made end with it (SIGKILL, reaped)."""
        if self.family is not None:
            self.family.end_others()

    def handle(self, request: bytes | bytearray) -> Outcome:
        reply = self.fork.request(request, timeout=self.timeout, reset=False)
        self.pending = "reset" if reply.ok else "replace"
        return outcome_of(reply)

    def after_response(self) -> None:
        if self.pending == "reset":
            self._end_processes()
            self.fork.reset()
        elif self.pending == "replace":
            self.close()
            self.fork = self._new_fork()
        self.pending = None

    def close(self) -> None:
        self._end_processes()
        if self.family is not None:
            self.fork.machine.stop_forwarding()
            self.family.end_all()
            self.family.table.close()
            os.close(self.family.lifeline_read)
            self.family = None
        self.fork.close()


class RequestHandler(http.server.BaseHTTPRequestHandler):
    """Reads one request, hands it to the worker's back end, answers."""

    protocol_version = "HTTP/1.1"
    server_version = "minikvm"
    sys_version = ""
    timeout = CLIENT_TIMEOUT
    backend: Backend
    log: Callable[[str], None]

    def handle_one_request(self) -> None:
        self.close_connection = True
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except (TimeoutError, ConnectionError):
            return
        if not self.raw_requestline or not self.parse_request():
            return
        request = self.serialise()
        if request is not None:
            self.dispatch(request)

    def serialise(self) -> bytearray | None:
        """The request as the program receives it, or None (already answered)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.answer(Outcome(STATUS_LENGTH_REQUIRED, [], b"minikvm: chunked request "
                                b"bodies are not supported: send Content-Length\n"))
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self.send_error(400, "bad Content-Length")
            return None
        head = f"{self.command} {self.path} {self.request_version}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        head_bytes = head.encode("latin-1") + b"\r\n"
        limit = self.backend.max_request
        if length < 0 or (limit and len(head_bytes) + length > limit):
            self.answer(Outcome(STATUS_TOO_LARGE, [], f"minikvm: the request is larger than "
                                f"the program's buffer ({limit} bytes)\n".encode()))
            return None
        # Read the body straight after the head, in one buffer: the
        # program's buffer (the limit) may be most of its memory, and a
        # body joined to its head afterwards would be held twice.
        request = bytearray(len(head_bytes) + length)
        request[:len(head_bytes)] = head_bytes
        try:
            got = self.rfile.readinto(memoryview(request)[len(head_bytes):]) if length else 0
        except (TimeoutError, ConnectionError):
            return None
        del request[len(head_bytes) + got:]    # a client that sent less than it said
        return request

    def dispatch(self, request: bytes | bytearray) -> None:
        started = time.perf_counter()
        outcome = self.backend.handle(request)
        if outcome.log:
            self.log(f"{self.command} {self.path}: {outcome.status}: {outcome.log}")
        try:
            self.answer(outcome)
        finally:
            self.backend.after_response()
        self.elapsed = time.perf_counter() - started

    def answer(self, outcome: Outcome) -> None:
        try:
            self.send_response(outcome.status)
            for name, value in outcome.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(outcome.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(outcome.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client went away: nothing to answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: only problems are logged (through :attr:`log`)."""

    def log_error(self, format: str, *args: Any) -> None:
        self.log(format % args)


class _ServerInfo:
    """What BaseHTTPRequestHandler reads from its server."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.server_address = address
        self.server_name = address[0]
        self.server_port = address[1]


def worker_loop(listener: socket.socket, backend: Backend, name: str) -> int:
    """Accept and answer connections until SIGTERM/SIGINT; returns 0."""
    state = {"busy": False, "stopping": False}

    def on_signal(signum: int, frame: object) -> None:
        # Raise once, and only while idle: a request being handled is
        # finished first (the loop checks "stopping" after it).
        first = not state["stopping"]
        state["stopping"] = True
        if first and not state["busy"]:
            raise Shutdown()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def log(message: str) -> None:
        print(f"minikvm serve: {name}: {message}", file=sys.stderr, flush=True)

    handler = type("Handler", (RequestHandler,), {"backend": backend, "log": staticmethod(log)})
    info = _ServerInfo(listener.getsockname()[:2])
    listener.settimeout(ACCEPT_POLL_SECONDS)
    try:
        while not state["stopping"]:
            try:
                connection, address = listener.accept()
            except Shutdown:
                break
            except TimeoutError:
                continue    # idle: look at "stopping" (and run a pending handler) again
            except OSError as error:
                log(f"accept failed: {error}")
                continue
            state["busy"] = True
            try:
                handler(connection, address, info)
            except Shutdown:
                pass
            except Exception as error:  # a bug in the server, not the guest's doing
                log(f"internal error: {type(error).__name__}: {error}")
            finally:
                try:
                    connection.close()
                except OSError:
                    pass
                state["busy"] = False
    except Shutdown:
        pass
    finally:
        backend.close()
    return 0


class ListenError(MinikvmError):
    """The server's address cannot be had (in use, not this host's): a
    usage error, reported with the address and what to do."""


def parse_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:8080`` → ("127.0.0.1", 8080); ``[::1]:80`` for IPv6."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT with a port from 0 to "
                                         f"65535, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


def open_listener(address: tuple[str, int]) -> socket.socket:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
        listener.listen(LISTEN_BACKLOG)
    except OSError as error:
        listener.close()
        shown = f"[{address[0]}]:{address[1]}" if family == socket.AF_INET6 else \
            f"{address[0]}:{address[1]}"
        hint = (" (another server has it: choose another --listen port, or port 0 for a free "
                "one)" if error.errno == errno.EADDRINUSE else "")
        raise ListenError(f"cannot listen on {shown}: {error.strerror}{hint}") from None
    return listener


def die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when *parent* dies
    (``prctl(PR_SET_PDEATHSIG)``), so that a worker never outlives its
    supervisor, whatever ended it (``kill -9`` included); and exit now if
    the parent died already, in the instant between ``fork`` and here."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL),
                  ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:
        os._exit(1)


def run_workers(listener: socket.socket, workers: int,
                make_backend: Callable[[], Backend],
                in_worker: Callable[[], None] | None = None) -> int:
    """Fork *workers* processes running :func:`worker_loop` on *listener*;
    supervise them until SIGINT/SIGTERM, then stop them and wait.
    *in_worker* runs first in each worker (:func:`~minikvm.sandbox.confine.confine_worker`)."""
    children: dict[int, int] = {}   # pid -> worker number
    stopping = {"now": False}
    restarts: list[float] = []

    supervisor = os.getpid()

    def start(number: int) -> None:
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                die_with_parent(supervisor)
                if in_worker is not None:
                    in_worker()
                status = worker_loop(listener, make_backend(), f"worker {number}")
            except Shutdown:
                status = 0
            except BaseException as error:
                print(f"minikvm serve: worker {number}: {type(error).__name__}: {error}",
                      file=sys.stderr, flush=True)
            finally:
                os._exit(status)
        children[pid] = number

    def on_signal(signum: int, frame: object) -> None:
        # Raise, so that the sleep between looks at the workers gives up
        # and the workers are told.
        if not stopping["now"]:
            stopping["now"] = True
            raise Shutdown()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            for number in range(1, workers + 1):
                start(number)
        except Shutdown:
            pass
        while children and not stopping["now"]:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:        # no worker ended: sleep, then look again (see
                    time.sleep(ACCEPT_POLL_SECONDS)   # ACCEPT_POLL_SECONDS for why not wait())
                    continue
            except (ChildProcessError, Shutdown):
                break
            number = children.pop(pid, None)
            if number is None or stopping["now"]:
                continue
            now = time.monotonic()
            restarts[:] = [t for t in restarts if now - t < 60] + [now]
            print(f"minikvm serve: worker {number} ended unexpectedly "
                  f"(status {os.waitstatus_to_exitcode(status)}); "
                  f"{'restarting it' if len(restarts) <= MAX_RESTARTS_PER_MINUTE else 'giving up'}",
                  file=sys.stderr, flush=True)
            if len(restarts) <= MAX_RESTARTS_PER_MINUTE:
                start(number)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in list(children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def serve(snapshot: Snapshot, listen: tuple[str, int] | socket.socket, *, workers: int = 1,
          mechanism: str = "cow", request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
          ready: Callable[[tuple[str, int]], None] | None = None,
          in_worker: Callable[[], None] | None = None, max_processes: int = 1) -> int:
    """Serve HTTP on *listen* (an address, or a listening socket opened
    earlier — before confinement, which allows no ``bind``) from forks of
    *snapshot* until SIGINT/SIGTERM; the socket is closed at the end.
    *in_worker* as in :func:`run_workers`; *max_processes* as in
    :class:`ForkBackend`."""
    listener = listen if isinstance(listen, socket.socket) else open_listener(listen)
    address = listener.getsockname()[:2]
    if ready is not None:
        ready(address)
    try:
        return run_workers(listener, workers,
                           lambda: ForkBackend(snapshot, mechanism, request_timeout,
                                               max_processes),
                           in_worker)
    finally:
        listener.close()


def serve_command(options: argparse.Namespace) -> int:
    """``minikvm serve``: start (or load) the program, snapshot it at its
    first request, then answer requests until SIGINT or SIGTERM."""
    try:
        return _serve(options)
    except ListenError as error:
        print(f"minikvm serve: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (MinikvmError, OSError, ValueError, argparse.ArgumentTypeError) as error:
        print(f"minikvm: {error}", file=sys.stderr)
        return 1


def _serve(options: argparse.Namespace) -> int:
    from minikvm.cli.launch import launch_to_ready_point, load_confined
    from minikvm.cli.snapshot import require_deterministic
    from minikvm.sandbox.confine import confine_worker
    listen = options.listen           # parsed and checked by the command line
    if not (options.from_snapshot or options.program):
        raise ValueError("serve needs a PROGRAM (or --from-snapshot FILE)")
    stdio = _server_stdio()
    # Bind before the walls go up: Landlock then allows no TCP bind at all.
    listener = open_listener(listen)
    try:
        if options.from_snapshot:
            if options.seed is not None:
                raise ValueError("--seed: a snapshot keeps the seed it was saved with (give "
                                 "--seed to 'minikvm snapshot save')")
            snapshot, confinement = load_confined(options.from_snapshot, stdio,
                                                   allow_fork=True)
            if options.deterministic:
                require_deterministic(snapshot, options.from_snapshot)
        else:
            snapshot, confinement = launch_to_ready_point(options, stdio, allow_fork=True)
    except BaseException:
        listener.close()
        raise

    def no_fork() -> None:
        """In each worker: the strict seccomp filter, stacked (no fork) —
        unless requests may make processes (``--max-processes``): then the
        supervisor's filter stays, which allows the host's fork and still
        refuses its execve."""
        if options.max_processes < 2:
            confine_worker(confinement)

    def ready(address: tuple[str, int]) -> None:
        print(f"minikvm serve: listening on http://{address[0]}:{address[1]}/ "
              f"({options.workers} worker{'s' if options.workers != 1 else ''}, "
              f"reset by {options.reset})", file=sys.stderr, flush=True)

    try:
        return serve(snapshot, listener, workers=options.workers, mechanism=options.reset,
                     request_timeout=options.request_timeout, ready=ready,
                     in_worker=no_fork, max_processes=options.max_processes)
    finally:
        snapshot.close()


def _server_stdio() -> tuple[int, int, int]:
    """The guest's stdio under a server: stdin empty, stdout and stderr to
    the server's stderr (its log), so a debugging printf never mixes with
    anything the server says on stdout."""
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return (null, 2, 2)
