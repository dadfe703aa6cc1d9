"""Layer 11 — the command line: ``minikvm run``, ``minikvm doctor``.

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minikvm", description="Run static x86-64 Linux "
                                     "programs in a KVM sandbox.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a static program in a sandbox")
    run.add_argument("--here", action="store_true",
                     help="allow reading and writing the current directory and below")
    run.add_argument("--allow-read", action="append", default=[], metavar="DIR",
                     help="allow reading DIR and below (repeatable)")
    run.add_argument("--allow-write", action="append", default=[], metavar="DIR",
                     help="allow reading and writing DIR and below (repeatable)")
    run.add_argument("--allow-connect", action="append", default=[], metavar="HOST:PORT",
                     help="allow connecting to this endpoint (repeatable; unix:PATH too)")
    run.add_argument("--memory", type=parse_size, default=None, metavar="SIZE",
                     help="guest memory (default 1G)")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="stop the program after this much wall-clock time (exit 124)")
    run.add_argument("--max-fds", type=int, default=1024, metavar="N",
                     help="most open files at once (EMFILE beyond)")
    run.add_argument("--max-file-size", type=parse_size, default=None, metavar="SIZE",
                     help="largest file the program may write (EFBIG beyond)")
    run.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                     help="set an environment variable (repeatable)")
    run.add_argument("--unsetenv", action="append", default=[], metavar="NAME",
                     help="remove an environment variable (repeatable)")
    run.add_argument("--clearenv", action="store_true", help="start from an empty environment")
    run.add_argument("--trace", action="store_const", const="-", default=None,
                     help="print each system call, strace-style, to stderr "
                          "(--trace=FILE writes them to FILE)")
    run.add_argument("--trace-file", dest="trace", metavar="FILE", help=argparse.SUPPRESS)
    run.add_argument("--summary", action="store_true",
                     help="print counts and host time per system call at exit")
    run.add_argument("--audit", action="store_true", help="print the denials at exit")
    run.add_argument("--verbose", action="store_true", help="register dump on a crash")
    run.add_argument("program", help="the static executable to run")
    run.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    commands.add_parser("doctor", help="check that this machine can run minikvm")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # ``--trace=FILE`` is spelled like strace's -o; a bare ``--trace`` must not
    # swallow the program name, so the FILE form is rewritten here.
    argv = [f"--trace-file={a[len('--trace='):]}" if a.startswith("--trace=") else a
            for a in argv]
    try:
        options = parser.parse_args(argv)
    except SystemExit as exit:
        return int(exit.code or 0) and EXIT_USAGE
    if options.command == "doctor":
        from minikvm.doctor import main as doctor_main
        return doctor_main()
    return run_command(options)


def guest_environment(options: argparse.Namespace) -> dict[str, str]:
    env = {} if options.clearenv else dict(os.environ)
    for name in options.unsetenv:
        env.pop(name, None)
    for item in options.env:
        name, _, value = item.partition("=")
        env[name] = value
    return env


def run_command(options: argparse.Namespace) -> int:
    from minikvm.errors import ElfError, MinikvmError
    from minikvm.layout import DEFAULT_MEMORY_SIZE
    from minikvm.policy import Policy, PolicyError
    from minikvm.process import Process
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
        trace_stream = open(options.trace, "w")
    try:
        process = Process.spawn(path, [path, *options.args], guest_environment(options), policy,
                                memory_size=options.memory or DEFAULT_MEMORY_SIZE)
    except ElfError as error:
        print(f"minikvm: {error}", file=sys.stderr)
        return EXIT_NOT_RUNNABLE
    except MinikvmError as error:
        print(f"minikvm: {error}", file=sys.stderr)
        return EXIT_NOT_RUNNABLE
    dispatcher = Dispatcher(process, Tracer(trace_stream) if trace_stream else None,
                            count=options.summary)
    try:
        result = process.run(dispatcher, timeout=options.timeout)
    finally:
        if trace_stream is not None and trace_stream is not sys.stderr:
            trace_stream.close()
    if result.message:
        sys.stdout.flush()
        print(result.message, file=sys.stderr)
        if options.verbose and result.crash is not None:
            from minikvm.crash import register_dump
            print(register_dump(process.machine.vcpu.run_state.s.regs.regs), file=sys.stderr)
    if options.summary and dispatcher.counts is not None:
        print(format_summary(dispatcher.counts), file=sys.stderr)
    if options.audit:
        print(policy.summary(), file=sys.stderr)
    process.close()
    return result.exit_status


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
