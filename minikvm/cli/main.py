"""Layer 8 — the command line: ``minikvm run``, ``minikvm doctor``.

::

    minikvm run [options] [--] PROGRAM [ARG...]

Exit status, like a shell's: the program's own; 128+N when signal N ended
it (with a one-line report on stderr); 124 on timeout; 126 when the file
is not a program minikvm can run; 127 when it does not exist; 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

EXIT_USAGE = 2
EXIT_TIMEOUT = 124
EXIT_NOT_RUNNABLE = 126
EXIT_NOT_FOUND = 127
EXIT_INTERRUPTED = 128 + 2   # SIGINT, as a shell reports a Ctrl-C

SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``512M`` → 536870912 (suffixes K, M, G; powers of 1024)."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    suffix = text[-1] if text and text[-1] in SIZE_SUFFIXES else ""
    number = text[:-1] if suffix else text
    try:
        value = int(float(number) * SIZE_SUFFIXES[suffix])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 256M or 1G)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def positive_int(text: str) -> int:
    """An option's value that must be a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minikvm", description="Run static x86-64 Linux "
                                     "programs in a KVM sandbox.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a static program in a sandbox")
    add_sandbox_options(run, timeout_help="stop the program after this much wall-clock "
                                          "time (exit 124)")
    run.add_argument("--trace", action="store_const", const="-", default=None,
                     help="print each system call, strace-style, to stderr "
                          "(--trace=FILE writes them to FILE)")
    run.add_argument("--trace-file", dest="trace", metavar="FILE", help=argparse.SUPPRESS)
    run.add_argument("--summary", action="store_true",
                     help="print counts and host time per system call at exit")
    run.add_argument("--audit", action="store_true", help="print the denials at exit")
    run.add_argument("--verbose", action="store_true", help="register dump on a crash")
    from minikvm.process.threads import DEFAULT_MAX_THREADS   # run loads it anyway
    run.add_argument("--max-threads", type=positive_int, default=DEFAULT_MAX_THREADS,
                     metavar="N",
                     help=f"most threads the program may have at once (default "
                          f"{DEFAULT_MAX_THREADS}; pthread_create fails with EAGAIN beyond)")
    run.add_argument("program", help="the static executable to run")
    run.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    commands.add_parser("doctor", help="check that this machine can run minikvm")
    add_snapshot_commands(commands)
    return parser


def add_sandbox_options(parser: argparse.ArgumentParser, timeout_help: str =
                        "time limit for the program's start-up (to its first request)") -> None:
    """The policy, limit and environment options shared by ``run``, ``serve``
    and ``snapshot save``; only what ``--timeout`` limits differs."""
    parser.add_argument("--here", action="store_true",
                        help="allow reading and writing the current directory and below")
    parser.add_argument("--allow-read", action="append", default=[], metavar="DIR",
                        help="allow reading DIR and below (repeatable)")
    parser.add_argument("--allow-write", action="append", default=[], metavar="DIR",
                        help="allow reading and writing DIR and below (repeatable)")
    parser.add_argument("--allow-connect", action="append", default=[], metavar="HOST:PORT",
                        help="allow connecting to this endpoint (repeatable; unix:PATH too)")
    parser.add_argument("--memory", type=parse_size, default=None, metavar="SIZE",
                        help="guest memory (default 1G)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help=timeout_help)
    parser.add_argument("--max-fds", type=int, default=1024, metavar="N",
                        help="most open files at once (EMFILE beyond)")
    parser.add_argument("--max-file-size", type=parse_size, default=None, metavar="SIZE",
                        help="largest file the program may write (EFBIG beyond)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="set an environment variable (repeatable)")
    parser.add_argument("--unsetenv", action="append", default=[], metavar="NAME",
                        help="remove an environment variable (repeatable)")
    parser.add_argument("--clearenv", action="store_true",
                        help="start from an empty environment")


def add_snapshot_commands(commands: argparse._SubParsersAction) -> None:
    """``minikvm serve`` and ``minikvm snapshot save|run|info`` (implemented
    in :mod:`minikvm.cli.serve`)."""
    serve = commands.add_parser(
        "serve", help="serve HTTP; every request runs in a fresh copy of the program",
        description="Start PROGRAM, snapshot it at its first minikvm_wait_request, and "
                    "answer each HTTP request with a reset copy of that snapshot.")
    add_sandbox_options(serve)
    serve.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                       help="where to listen (default 127.0.0.1:8080; port 0 picks a free "
                            "port, printed at start)")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="worker processes, each with its own VM (default 1)")
    serve.add_argument("--request-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="answer 504 when a request runs longer (default 30)")
    serve.add_argument("--reset", choices=("cow", "copy"), default="cow",
                       help="how memory is reset between requests: drop the copy-on-write "
                            "copies, or copy the dirty pages back (default cow)")
    serve.add_argument("--from-snapshot", metavar="FILE", default=None,
                       help="serve a file from 'minikvm snapshot save' instead of PROGRAM")
    serve.add_argument("program", nargs="?", help="the static executable to serve")
    serve.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")

    snapshot = commands.add_parser("snapshot", help="save a program at its first request to "
                                   "a file, and resume it from there")
    actions = snapshot.add_subparsers(dest="snapshot_command", required=True)
    save = actions.add_parser(
        "save", help="run PROGRAM to its first minikvm_wait_request and save it to FILE")
    add_sandbox_options(save)
    save.add_argument("-o", "--output", required=True, metavar="FILE",
                      help="the snapshot file to write")
    save.add_argument("--at-first-request", action="store_true", default=True,
                      help="snapshot at the first minikvm_wait_request (the default, and "
                           "for now the only ready point)")
    save.add_argument("program", help="the static executable")
    save.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    run = actions.add_parser(
        "run", help="resume a snapshot: stdin is its one request, the response goes to stdout")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="stop the program after this much wall-clock time (exit 124)")
    run.add_argument("file", help="a file from 'minikvm snapshot save'")
    info = actions.add_parser("info", help="check a snapshot file and describe it")
    info.add_argument("file", help="a file from 'minikvm snapshot save'")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = spell_trace_file(list(sys.argv[1:] if argv is None else argv))
    try:
        options = parser.parse_args(argv)
    except SystemExit as exit:
        return int(exit.code or 0) and EXIT_USAGE
    if options.command == "doctor":
        from minikvm.cli.doctor import main as doctor_main
        return doctor_main()
    if options.command in ("serve", "snapshot"):
        from minikvm.cli.serve import snapshot_commands
        return snapshot_commands(options)
    return run_command(options)


def spell_trace_file(argv: list[str]) -> list[str]:
    """Rewrite ``run --trace=FILE`` as ``--trace-file=FILE``.

    A bare ``--trace`` must not swallow the program name, so it takes no
    value; the FILE form is rewritten here, among minikvm's own options only
    — never in the program's arguments, which start at the first word that
    is neither an option nor an option's value (or after ``--``)."""
    if argv[:1] != ["run"]:
        return argv
    takes_value = {"--allow-read", "--allow-write", "--allow-connect", "--memory", "--timeout",
                   "--max-fds", "--max-file-size", "--env", "--unsetenv", "--trace-file",
                   "--max-threads"}
    rewritten = ["run"]
    expecting_value = False
    for position, word in enumerate(argv[1:], start=1):
        if expecting_value:
            expecting_value = False
        elif word == "--" or not word.startswith("-"):
            return rewritten + argv[position:]
        elif word.startswith("--trace="):
            word = "--trace-file=" + word[len("--trace="):]
        else:
            expecting_value = word in takes_value
        rewritten.append(word)
    return rewritten


def guest_environment(options: argparse.Namespace) -> dict[str, str]:
    env = {} if options.clearenv else dict(os.environ)
    for name in options.unsetenv:
        env.pop(name, None)
    for item in options.env:
        name, _, value = item.partition("=")
        env[name] = value
    return env


def run_command(options: argparse.Namespace) -> int:
    from minikvm.process.elf import read_program
    from minikvm.errors import MinikvmError
    from minikvm.cpu.layout import DEFAULT_MEMORY_SIZE
    from minikvm.machine.machine import Machine
    from minikvm.sandbox.policy import Policy, PolicyError
    from minikvm.process.process import Process
    from minikvm.syscalls.dispatch import Dispatcher
    from minikvm.syscalls.trace import Tracer

    path = options.program
    if not os.path.exists(path):
        print(f"minikvm: {path}: no such file", file=sys.stderr)
        return EXIT_NOT_FOUND
    if os.path.isdir(path):
        print(f"minikvm: {path}: is a directory", file=sys.stderr)
        return EXIT_NOT_RUNNABLE
    read, write = list(options.allow_read), list(options.allow_write)
    if options.here:
        write.append(os.getcwd())
    try:
        policy = Policy(read=read, write=write, connect=options.allow_connect,
                        max_fds=options.max_fds, max_file_size=options.max_file_size)
    except (PolicyError, ValueError, OSError) as error:
        print(f"minikvm: {error}", file=sys.stderr)
        return EXIT_USAGE
    trace_stream = None
    if options.trace == "-":
        trace_stream = sys.stderr
    elif options.trace:
        try:
            trace_stream = open(options.trace, "w")
        except OSError as error:
            print(f"minikvm: cannot write the trace to {options.trace}: {error.strerror}",
                  file=sys.stderr)
            return EXIT_USAGE
    # Read the program and create the VM while every file is reachable; the
    # ELF is *parsed* only after confinement (a malicious file meets pyelftools
    # inside the walls).
    try:
        program = read_program(path)
        machine = Machine(options.memory or DEFAULT_MEMORY_SIZE)
    except MinikvmError as error:    # ElfError (unreadable), KvmUnavailable, ...
        print(f"minikvm: {error}", file=sys.stderr)
        return EXIT_NOT_RUNNABLE
    # The second wall: from here on the kernel holds minikvm itself to the
    # policy (Landlock) and to the calls a VM monitor needs (seccomp).
    confinement = confine_or_report(policy, options.verbose)
    if confinement is None:
        machine.close()
        return EXIT_NOT_RUNNABLE
    try:
        process = Process.spawn(path, [path, *options.args], guest_environment(options), policy,
                                machine=machine, program=program)
    except MinikvmError as error:    # ElfError: not a program minikvm can run
        print(f"minikvm: {error}", file=sys.stderr)
        machine.close()
        return EXIT_NOT_RUNNABLE
    process.threads.max_threads = options.max_threads
    dispatcher = Dispatcher(process, Tracer(trace_stream) if trace_stream else None,
                            count=options.summary)
    try:
        result = process.run(dispatcher, timeout=options.timeout)
    except KeyboardInterrupt:
        sys.stdout.flush()
        print("minikvm: interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if trace_stream is not None and trace_stream is not sys.stderr:
            trace_stream.close()
    if result.message:
        sys.stdout.flush()
        print(result.message, file=sys.stderr)
        if options.verbose and result.crash is not None:
            from minikvm.machine.crash import register_dump
            print(register_dump(process.machine.vcpu.run_state.s.regs.regs), file=sys.stderr)
    if options.summary and dispatcher.counts is not None:
        print(format_summary(dispatcher.counts), file=sys.stderr)
    if options.audit:
        print(policy.summary(), file=sys.stderr)
    process.close()
    return result.exit_status


def confine_or_report(policy: object, verbose: bool) -> object | None:
    """:func:`minikvm.sandbox.confine.confine` for ``run``: print its warnings (a
    wall the kernel lacks: the run goes on) and, with *verbose*, what was
    enforced; on a :class:`~minikvm.sandbox.confine.ConfineError` print it and
    return None (the run must stop: exit status 126)."""
    from minikvm.sandbox.confine import ConfineError, confine
    try:
        confinement = confine(policy)  # type: ignore[arg-type]
    except ConfineError as error:
        print(f"minikvm: {error}", file=sys.stderr)
        return None
    for warning in confinement.warnings:
        print(f"minikvm: warning: {warning}", file=sys.stderr)
    if verbose:
        print(f"minikvm: {confinement}".replace("\n", "\nminikvm: "), file=sys.stderr)
    return confinement


def format_summary(counts: dict[str, list[float]]) -> str:
    """An ``strace -c``-style table: calls, errors, host time per syscall."""
    total = sum(stats[1] for stats in counts.values()) or 1e-9
    lines = ["% time     seconds  usecs/call     calls    errors syscall",
             "------ ----------- ----------- --------- --------- ----------------"]
    for name, (calls, seconds, errors) in sorted(counts.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"{100 * seconds / total:6.2f} {seconds:11.6f} {seconds / calls * 1e6:11.0f} "
                     f"{calls:9d} {errors or '':>9} {name}")
    calls = sum(int(stats[0]) for stats in counts.values())
    errors = sum(int(stats[2]) for stats in counts.values())
    lines.append("------ ----------- ----------- --------- --------- ----------------")
    lines.append(f"100.00 {total:11.6f} {total / max(calls, 1) * 1e6:11.0f} {calls:9d} "
                 f"{errors or '':>9} total")
    return "\n".join(lines)
