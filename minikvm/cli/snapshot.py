"""Layer 8 — ``minikvm snapshot save|run|info``: a program saved at its
first request, to a file, and resumed from it.

::

    minikvm snapshot save -o FILE [policy options] -- PROGRAM [ARG...]
    minikvm snapshot run [--timeout S] FILE < request > response
    minikvm snapshot info FILE

``save`` runs the program to its first ``minikvm_wait_request`` in a
confined child process (:func:`~minikvm.cli.launch.launch_to_ready_point`)
and writes the snapshot (:mod:`minikvm.snapshot.file`); ``run`` confines
itself under the policy the file records before it parses the stored
program (:func:`~minikvm.cli.launch.load_confined`), answers one request
read from stdin, and lets the program run on to its end; ``info`` checks
the file and says what is in it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from minikvm.machine.stops import EXIT_TIMEOUT, StopKind, signal_status
from minikvm.snapshot.channel import Reply

if TYPE_CHECKING:
    import socket

    from minikvm.snapshot.fork import Fork
    from minikvm.snapshot.snapshot import Snapshot


def exit_status(reply: Reply) -> int:
    """A reply as a shell would report it (see ``minikvm run``)."""
    if reply.status == StopKind.EXIT and reply.exit_status is not None:
        return reply.exit_status
    if reply.status == StopKind.TIMEOUT:
        return EXIT_TIMEOUT
    name = reply.message.split(":", 1)[0]
    if name.startswith("SIG") and name in signal.Signals.__members__:
        return signal_status(signal.Signals[name])
    return signal_status(signal.SIGKILL)


def require_deterministic(snapshot: "Snapshot", name: str) -> None:
    """``--deterministic`` on a saved snapshot: its process state must hold
    the seeded sources (:mod:`minikvm.process.determinism`), else every run
    of it would read the host's clocks and random bytes.  ValueError says so."""
    if snapshot.process_state.get("determinism") is None:
        raise ValueError(f"{name} was saved without --deterministic: its runs would read the "
                         f"host's clocks and random bytes; save it again with 'minikvm "
                         f"snapshot save --deterministic [--seed N] ...'")


def gdb_listener(address: str) -> "socket.socket":
    """``snapshot run --gdb HOST:PORT``: the listening socket (loopback
    only, as for ``run --gdb``); ValueError says why there is none."""
    from minikvm.debug.address import GdbAddressError, parse_gdb_address
    from minikvm.debug.session import listen
    try:
        host, port = parse_gdb_address(address, any_address=False)
        return listen(host, port)
    except GdbAddressError as error:
        raise ValueError(str(error)) from None
    except OSError as error:
        raise ValueError(f"--gdb {address}: cannot listen there: {error.strerror}") from None


def _run_under_gdb(fork: "Fork", request: bytes, server: "socket.socket",
                   options: argparse.Namespace) -> int:
    """The request and the program's end as one run that gdb follows: it
    stops where ``minikvm_wait_request`` returns the request."""
    from minikvm.debug.session import DebugSession, accept
    fork.hand_over(request)
    session = DebugSession(fork.process, fork.dispatcher,
                           accept(server, fork.process.exe_path))
    result = session.run(timeout=options.timeout)
    sys.stdout.buffer.write(fork.channel.take_response() or b"")
    sys.stdout.flush()
    if result.message:
        print(result.message, file=sys.stderr)
    return result.exit_status


def read_request(name: str) -> bytes:
    """``snapshot run --request FILE``: the request's bytes; ValueError names
    the file and what went wrong."""
    try:
        with open(name, "rb") as file:
            return file.read()
    except OSError as error:
        raise ValueError(f"--request {name}: {error.strerror}") from None


def snapshot_command(options: argparse.Namespace) -> int:
    """``minikvm snapshot save|run|info``; 1 with a one-line message when it fails."""
    from minikvm.cli.launch import load_confined
    from minikvm.errors import MinikvmError
    from minikvm.snapshot.file import read_header
    try:
        if options.snapshot_command == "save":
            return _save_command(options)
        if options.snapshot_command == "info":
            print(describe_header(options.file, read_header(options.file)))
            return 0
        # gdb's socket is bound and the request file read before the walls,
        # which may refuse a bind and hide the file.
        gdb_server = gdb_listener(options.gdb) if options.gdb is not None else None
        if options.request is not None:
            request = read_request(options.request)
            snapshot, _ = load_confined(options.file, (0, 1, 2))
        else:
            snapshot, _ = load_confined(options.file, (0, 1, 2))
            request = sys.stdin.buffer.read()
        with snapshot:
            if options.deterministic:
                require_deterministic(snapshot, options.file)
            with snapshot.fork() as fork:
                if gdb_server is not None:
                    return _run_under_gdb(fork, request, gdb_server, options)
                reply = fork.request(request, timeout=options.timeout, reset=False)
                sys.stdout.buffer.write(reply.response)
                sys.stdout.flush()
                if reply.ok:
                    reply = fork.end(timeout=options.timeout)
                    sys.stdout.buffer.write(reply.response)
                    sys.stdout.flush()
                if reply.message:
                    print(reply.message, file=sys.stderr)
                return exit_status(reply)
    except (MinikvmError, OSError, ValueError, argparse.ArgumentTypeError) as error:
        print(f"minikvm: {error}", file=sys.stderr)
        return 1


def _save_command(options: argparse.Namespace) -> int:
    """``minikvm snapshot save``: the program runs to its first request in a
    confined child process, which writes the snapshot into a file this
    process created (``FILE.PID.partial``); this process, which runs no
    guest code, renames it into place when the child succeeded, or
    removes it.  Landlock would not let the child create or rename files
    outside the grants, and the output need not be in one."""
    from minikvm.cli.launch import launch_to_ready_point
    from minikvm.errors import MinikvmError
    from minikvm.process.elf import read_program
    from minikvm.snapshot.file import save_into
    target = options.output
    partial = f"{target}.{os.getpid()}.partial"
    program = read_program(options.program_path)
    fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            with os.fdopen(fd, "w+b") as out:
                snapshot, _ = launch_to_ready_point(options, (0, 1, 2), program=program)
                with snapshot:
                    save_into(snapshot, out, elf=program)
            status = 0
        except (MinikvmError, OSError, ValueError) as error:
            print(f"minikvm: {error}", file=sys.stderr)
        except KeyboardInterrupt:
            print("minikvm: interrupted (Ctrl-C)", file=sys.stderr)
        except BaseException:                 # a bug in minikvm: say where
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    os.close(fd)
    status = _wait_for(pid)
    if status != 0:
        os.unlink(partial)
        return status
    os.replace(partial, target)
    print(f"minikvm: saved {options.program} at its first request to {target} "
          f"({os.stat(target).st_size} bytes)", file=sys.stderr)
    return 0


def _wait_for(pid: int) -> int:
    """The exit status of child *pid*, as a shell reports it (128+N for
    signal N).  A Ctrl-C reaches the child too, so keep waiting for it."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except KeyboardInterrupt:
            continue
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code


def describe_header(name: str, header: dict[str, Any]) -> str:
    """What ``minikvm snapshot info`` prints."""
    memory = header["memory"]
    stored = sum(length for _, length in memory["extents"])
    wait = header["wait"]
    policy = header["policy"] or {}
    lines = [f"{name}: minikvm snapshot, format version {header['version']}, checksum ok",
             f"program:  {header['image']['name']}",
             f"memory:   {memory['size'] >> 20} MiB guest memory, {stored >> 10} KiB stored "
             f"in {len(memory['extents'])} extents",
             f"ready at: " + (f"minikvm_wait_request(buffer={wait[0]:#x}, size={wait[1]})"
                              if wait else "not a request wait"),
             f"files:    " + ", ".join(f"{r['fd']}={r['path']}" for r in header["fds"]),
             f"policy:   read {policy.get('read', [])}, write {policy.get('write', [])}, "
             f"connect {policy.get('connect', [])}"]
    return "\n".join(lines)
