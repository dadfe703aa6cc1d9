"""Layer 7 — the request channel: where a snapshotted program stops, and how a request ended.

A snapshotted program and its host talk through minikvm's request API
(``include/minikvm.h``, the system calls of :mod:`minikvm.syscalls.requests`):
``minikvm_wait_request`` waits for the next request, ``minikvm_respond``
adds to the response.  A :class:`RequestChannel` is the host's end of it: a
wait leaves the run loop (:class:`~minikvm.machine.stops.WaitingForRequest`),
and so does the return of a function the host called
(:class:`~minikvm.machine.stops.CallReturned`); the response is collected
here, bounded in sum by :data:`~minikvm.syscalls.requests.MAX_RESPONSE`.
:func:`run_until_stop` runs a process to one of those points and says
which, and a :class:`Reply` is what a request or a call came to.  The
snapshot (run to the ready point, :mod:`minikvm.snapshot.snapshot`) and
every fork (a request, a call, :mod:`minikvm.snapshot.fork`) use them, so
they sit in a module of their own below both.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

from minikvm.machine.stops import (EXIT_CANNOT_RUN, CallReturned, ProcessExit, ProcessKilled, Stop,
                                   StopKind, WaitingForRequest, signal_status)
from minikvm.process.process import Process, RunResult
from minikvm.syscalls.dispatch import Dispatcher
from minikvm.syscalls.requests import MAX_RESPONSE


#: Why a reply whose response grew past MAX_RESPONSE is a failure (502).
RESPONSE_TOO_LARGE = (f"the response grew past {MAX_RESPONSE >> 20} MiB (the sum of its "
                      f"minikvm_respond calls): refused, as one over the limit would be")


class RequestChannel:
    """The request channel of a snapshotted process (see
    :mod:`minikvm.syscalls.requests`): waits leave the run loop, responses
    are collected here."""

    def __init__(self) -> None:
        #: One buffer the responses are appended to: a list of pieces
        #: joined at the end would hold the response twice at the join.
        self.response = bytearray()
        #: The bytes of :attr:`response` so far, checked against MAX_RESPONSE
        #: before each ``minikvm_respond`` reads guest memory.
        self.response_size = 0
        #: Set when a respond would have passed MAX_RESPONSE: the reply is a
        #: failure (serve answers 502), whatever the program does next.
        self.response_too_large = False
        self.calling = False

    def wait(self, proc: Process, buffer: int, size: int) -> int:
        raise WaitingForRequest(buffer, size)

    def respond(self, proc: Process, data: bytes | memoryview) -> None:
        """Append *data* (a view on guest memory: copied once, here)."""
        self.response += data
        self.response_size += len(data)

    def clear_response(self) -> None:
        """Start the next request's response (a new buffer: the last one
        may still be on its way to the client)."""
        self.response = bytearray()
        self.response_size = 0
        self.response_too_large = False

    def take_response(self) -> bytearray | None:
        """The response so far, handed over (not copied: a later respond
        goes to a new buffer), or None when it grew past MAX_RESPONSE."""
        response, self.response = self.response, bytearray()
        return None if self.response_too_large else response

    def call_returned(self, proc: Process, value: int) -> int:
        raise CallReturned(value)


class LastRequestChannel(RequestChannel):
    """The channel of a fork that gets one request and then none: its
    waits return 0 (no more requests) instead of leaving the run loop, so
    the request and the program's end are one :meth:`Process.run
    <minikvm.process.process.Process.run>` — what a debugger
    (``snapshot run --gdb``) can follow from the first instruction to the
    exit."""

    def wait(self, proc: Process, buffer: int, size: int) -> int:
        return 0


@dataclass
class Reply:
    """How one request (or call) ended.

    ``status`` is a :class:`~minikvm.machine.stops.StopKind`: WAIT (the
    program answered and waits for the next request: :attr:`ok`), EXIT (it
    exited; ``exit_status``), CRASH (a CPU exception or a fatal signal),
    TIMEOUT or FAILURE (KVM could
    not run it).  ``response`` is what the program passed to
    ``minikvm_respond``, ``message`` the one-line report when not ok.
    """
    status: StopKind
    response: bytes | bytearray = b""
    message: str = ""
    exit_status: int | None = None
    value: int | None = None       # a call's return value

    @property
    def ok(self) -> bool:
        return self.status == StopKind.WAIT


def run_until_stop(process: Process, dispatcher: Dispatcher,
                   timeout: float | None) -> tuple[StopKind, Any]:
    """Run *process* until it waits for a request, a host call returns, it
    exits, crashes or times out.  Returns ``(kind, detail)``, a
    :class:`~minikvm.machine.stops.StopKind` and: for WAIT ``(buffer, size)``,
    for RETURN the value, for EXIT the status, for CRASH, TIMEOUT and
    FAILURE the one-line message.

    Unlike :meth:`Process.run` this keeps the process usable afterwards
    (its files stay open): the caller snapshots or resets it.

    In a process a request forked this never returns (:func:`_run_or_end_child`)."""
    try:
        stop: Stop = _run_or_end_child(process, dispatcher, timeout)
    except WaitingForRequest as waiting:
        # Not the exception itself: its traceback holds the run loop's
        # frames, which hold views of kvm_run and would keep it mapped.
        return StopKind.WAIT, (waiting.buffer, waiting.size)
    except CallReturned as returned:
        return StopKind.RETURN, returned.value
    except ProcessExit as done:
        return StopKind.EXIT, done.status & 0xFF
    except ProcessKilled as killed:
        return StopKind.CRASH, f"{killed.signal.name}: {killed.reason}"
    if stop.kind == StopKind.TIMEOUT:
        return StopKind.TIMEOUT, f"timed out: {stop.message}"
    return stop.kind, stop.message


def _run_or_end_child(process: Process, dispatcher: Dispatcher, timeout: float | None) -> Stop:
    """``machine.run``; but when the request's process forks during it, the
    host's fork returns twice inside this call, and in the child
    (:mod:`minikvm.tree.fork` sets its
    :attr:`~minikvm.process.process.Process.end_hook`) the run ends here:
    its host process ends as its guest did, never unwinding into the
    server's code the host's fork copied — which would answer the request
    a second time."""
    try:
        stop = process.machine.run(dispatcher, timeout)
    except BaseException as error:
        if process.end_hook is None:
            raise
        process.end_hook(_child_result(None, error))
        raise
    if process.end_hook is not None:
        process.end_hook(_child_result(stop, None))
    return stop


def _child_result(stop: Stop | None, error: BaseException | None) -> RunResult:
    """How a forked child's run ended, for its ``end_hook``: its exit
    status, or the signal that killed it (a timeout as SIGKILL would)."""
    if isinstance(error, ProcessExit):
        return RunResult(error.status & 0xFF)
    if isinstance(error, ProcessKilled):
        return RunResult(signal_status(error.signal), error.reason, signal=int(error.signal))
    if stop is not None and stop.crash is not None:
        return RunResult(stop.crash.exit_status, stop.message, stop.crash,
                         signal=int(stop.crash.signal))
    if stop is not None:
        return RunResult(signal_status(signal.SIGKILL), stop.message, signal=int(signal.SIGKILL))
    return RunResult(EXIT_CANNOT_RUN, "minikvm: the process failed")
