"""Layer 8 — the command line: its parser, ``minikvm run`` and the dispatch of the others.

::

    minikvm run [options] [--] PROGRAM [ARG...]

PROGRAM without a slash is looked up in ``PATH``, as ``execvp`` does
(:func:`~minikvm.cli.launch.find_program`).  Exit status, like a shell's:
the program's own; 128+N when signal N ended it (with a one-line report on
stderr); 124 on timeout; 126 when the file is not a program minikvm can
run (a directory, no execute permission, not an ELF it loads); 127 when it
does not exist or is not found in ``PATH``; 2 for a usage error (a bad
option or ``--policy`` file, ``--here`` in ``/`` or ``$HOME``).  When a
signal sent to minikvm from outside (Ctrl-C, ``kill``) kills the program,
minikvm says nothing and ends by that same signal, after restoring the
terminal: the shell sees what it sees for a native program
(:func:`~minikvm.machine.outside.raise_on_self`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Callable, Sequence

from minikvm.cli import __version__
from minikvm.cli.options import (EXIT_USAGE, PolicyFileError, add_determinism_options,
                                 add_display_options, add_sandbox_options,
                                 here_directory, policy_toml, positive_int, read_policy_file,
                                 seconds)
from minikvm.machine.stops import signal_status

#: A Ctrl-C ended minikvm itself, as a shell reports it.
EXIT_INTERRUPTED = signal_status(signal.SIGINT)


def build_parser(policy: dict[str, object] | None = None) -> argparse.ArgumentParser:
    """The whole command line; *policy* holds the options read from a
    ``--policy`` file, which become the defaults of the sandbox options
    (the command line adds to their lists and overrides their values)."""
    parser = argparse.ArgumentParser(prog="minikvm", description="Run x86-64 Linux "
                                     "programs in a KVM sandbox.")
    parser.add_argument("--version", action="version", version=f"minikvm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a program in a sandbox")
    add_sandbox_options(run, timeout_help="stop the program after this much wall-clock "
                                          "time (exit 124)", policy=policy)
    add_display_options(run)
    add_determinism_options(run)
    run.add_argument("--trace", action="store_const", const="-", default=None,
                     help="print each system call, strace-style, to stderr "
                          "(--trace=FILE writes them to FILE)")
    run.add_argument("--trace-file", dest="trace", metavar="FILE", help=argparse.SUPPRESS)
    run.add_argument("--summary", action="store_true",
                     help="print counts and host time per system call at exit")
    run.add_argument("--audit", action="store_true", help="print the denials at exit")
    run.add_argument("--flamegraph", type=flamegraph_path, default=None, metavar="FILE",
                     help="sample the guest and write a flame graph: FILE.svg (interactive), "
                          "FILE.folded (collapsed stacks) or FILE.json (speedscope)")
    run.add_argument("--sample-hz", type=sample_rate, default=None, metavar="N",
                     help="with --flamegraph: samples per second (default 997)")
    run.add_argument("--gdb", default=None, metavar="HOST:PORT",
                     help="stop before the first instruction and wait for gdb on this "
                          "loopback address (gdb PROG -ex 'target remote HOST:PORT'); "
                          "port 0 picks a free one")
    run.add_argument("--gdb-any-address", action="store_true",
                     help="let --gdb listen on an address other machines can reach "
                          "(anyone who connects can read and change the program)")
    run.add_argument("--verbose", action="store_true", help="register dump on a crash")
    from minikvm.process.threads import DEFAULT_MAX_THREADS   # run loads it anyway
    run.add_argument("--max-threads", type=positive_int, default=DEFAULT_MAX_THREADS,
                     metavar="N",
                     help=f"most threads the program may have at once (default "
                          f"{DEFAULT_MAX_THREADS}; pthread_create fails with EAGAIN beyond)")
    from minikvm.tree.table import DEFAULT_MAX_PROCESSES
    run.add_argument("--max-processes", type=positive_int, default=DEFAULT_MAX_PROCESSES,
                     metavar="N",
                     help=f"most processes the sandbox may hold at once, the first one "
                          f"included (default {DEFAULT_MAX_PROCESSES}; fork fails with EAGAIN "
                          f"beyond); 1 allows no second process")
    run.add_argument("--vdso", choices=("auto", "syscall", "off"), default="auto",
                     help="the vDSO's clock: from the TSC without a VM exit where the host "
                          "allows it (auto), always by system call (syscall), or no vDSO "
                          "at all (off)")
    run.add_argument("--no-vdso", dest="vdso", action="store_const", const="off",
                     help="map no vDSO (the same as --vdso off)")
    run.add_argument("program", nargs="?",
                     help="the static executable to run (looked up in PATH if it has no /)")
    run.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    commands.add_parser("doctor", help="check that this machine can run minikvm")
    add_snapshot_commands(commands, policy)
    return parser


#: The most ``serve --workers``: each is a host process with its own VM.
MAX_WORKERS = 64


def flamegraph_path(text: str) -> Path:
    """``run --flamegraph FILE`` (:func:`minikvm.observe.flamegraph.check_output_path`)."""
    from minikvm.observe.flamegraph import check_output_path
    try:
        return check_output_path(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def sample_rate(text: str) -> int:
    """``run --sample-hz N``: 1 to :data:`~minikvm.observe.sampler.MAX_SAMPLE_HZ`."""
    from minikvm.observe.sampler import MAX_SAMPLE_HZ
    value = positive_int(text)
    if value > MAX_SAMPLE_HZ:
        raise argparse.ArgumentTypeError(f"{value} Hz is more than {MAX_SAMPLE_HZ} (each "
                                         "sample stops the guest for tens of µs)")
    return value


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a
    container or ``taskset`` narrows), at most :data:`MAX_WORKERS`."""
    return min(len(os.sched_getaffinity(0)), MAX_WORKERS)


def worker_count(text: str) -> int:
    """``serve --workers``: 1 to :data:`MAX_WORKERS`, or ``auto``: one per
    core (:func:`available_cores`), so that each core runs a VM of its own."""
    if text == "auto":
        return available_cores()
    try:
        value = positive_int(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error} (or auto: one worker per core)") from None
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{value} is more than {MAX_WORKERS} workers (each "
                                         f"is a process with its own VM)")
    return value


def listen_address(text: str) -> tuple[str, int]:
    """``serve --listen HOST:PORT`` (the server module is imported only when
    ``serve`` is the command: ``run`` never pays for http.server)."""
    from minikvm.cli.serve import parse_listen
    return parse_listen(text)


def loopback_gdb_address(text: str) -> str:
    """``snapshot run --gdb HOST:PORT``: checked as ``run --gdb`` checks it,
    loopback only (:func:`minikvm.debug.address.parse_gdb_address`)."""
    from minikvm.debug.address import GdbAddressError, parse_gdb_address
    try:
        parse_gdb_address(text)
    except GdbAddressError as error:
        message = str(error).removeprefix(f"--gdb {text!r}: ")
        raise argparse.ArgumentTypeError(message.split("; use 127.0.0.1")[0]) from None
    return text


def add_snapshot_commands(commands: argparse._SubParsersAction,
                          policy: dict[str, object] | None = None) -> None:
    """``minikvm serve`` and ``minikvm snapshot save|run|info`` (implemented
    in :mod:`minikvm.cli.serve` and :mod:`minikvm.cli.snapshot`)."""
    serve = commands.add_parser(
        "serve", help="serve HTTP; every request runs in a fresh copy of the program",
        description="Start PROGRAM, snapshot it at its first minikvm_wait_request, and "
                    "answer each HTTP request with a reset copy of that snapshot.")
    add_sandbox_options(serve, policy=policy)
    add_determinism_options(serve)
    serve.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT", type=listen_address,
                       help="where to listen (default 127.0.0.1:8080; port 0 picks a free "
                            "port, printed at start)")
    serve.add_argument("--workers", type=worker_count, default="auto", metavar="N",
                       help="worker processes, each with its own VM (default auto: one per "
                            "core this process may run on)")
    serve.add_argument("--request-timeout", type=seconds, default=30.0, metavar="SECONDS",
                       help="answer 504 when a request runs longer (default 30)")
    # The values of snapshot.fork.ResetMechanism, spelled here so that
    # building the parser does not import the snapshot layer (run needs none of it).
    serve.add_argument("--reset", choices=("cow", "copy", "keep"), default="keep",
                       help="how memory is reset between requests: drop the copy-on-write "
                            "copies, copy the dirty pages back, or copy the working set back "
                            "and keep it writable (default keep: fastest when requests write "
                            "the same pages; 'copy' where KVM cannot)")
    serve.add_argument("--max-processes", type=positive_int, default=1, metavar="N",
                       help="most processes a request may hold at once, its own included "
                            "(default 1: fork is refused); the processes a request made "
                            "are killed when it is answered")
    serve.add_argument("--from-snapshot", metavar="FILE", default=None,
                       help="serve a file from 'minikvm snapshot save' instead of PROGRAM")
    serve.add_argument("program", nargs="?", help="the static executable to serve")
    serve.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")

    snapshot = commands.add_parser("snapshot", help="save a program at its first request to "
                                   "a file, and resume it from there")
    actions = snapshot.add_subparsers(dest="snapshot_command", required=True)
    save = actions.add_parser(
        "save", help="run PROGRAM to its first minikvm_wait_request and save it to FILE")
    add_sandbox_options(save, policy=policy)
    add_determinism_options(save)
    save.add_argument("-o", "--output", required=True, metavar="FILE",
                      help="the snapshot file to write")
    save.add_argument("--at-first-request", action="store_true", default=True,
                      help="snapshot at the first minikvm_wait_request (the default, and "
                           "for now the only ready point)")
    save.add_argument("program", nargs="?", help="the static executable")
    save.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    run = actions.add_parser(
        "run", help="resume a snapshot: stdin is its one request, the response goes to stdout")
    run.add_argument("--timeout", type=seconds, default=None, metavar="SECONDS",
                     help="stop the program after this much wall-clock time (exit 124)")
    run.add_argument("--request", metavar="FILE", default=None,
                     help="read the request from FILE instead of stdin (as serve hands it "
                          "to the program: request line, headers, empty line, body)")
    run.add_argument("--deterministic", action="store_true", default=False,
                     help="refuse a snapshot saved without --deterministic (whose clocks and "
                          "random bytes would differ from run to run)")
    run.add_argument("--gdb", default=None, metavar="HOST:PORT", type=loopback_gdb_address,
                     help="stop where the request is handed over and wait for gdb on this "
                          "loopback address (port 0 picks a free one)")
    run.add_argument("file", help="a file from 'minikvm snapshot save'")
    info = actions.add_parser("info", help="check a snapshot file and describe it")
    info.add_argument("file", help="a file from 'minikvm snapshot save'")


def main(argv: Sequence[str] | None = None) -> int:
    argv = spell_trace_file(list(sys.argv[1:] if argv is None else argv))
    misplaced = run_only_option(argv)
    if misplaced is not None:
        print(f"minikvm: {misplaced}", file=sys.stderr)
        return EXIT_USAGE
    try:
        options = build_parser().parse_args(argv)
        if getattr(options, "policy", None):
            # Parse again with the file's options as the defaults.
            options = build_parser(read_policy_file(options.policy)).parse_args(argv)
    except SystemExit as exit:
        return int(exit.code or 0) and EXIT_USAGE
    except PolicyFileError as error:
        print(f"minikvm: {error}", file=sys.stderr)
        return EXIT_USAGE
    if hasattr(options, "print_policy"):      # run, serve, snapshot save
        status = prepare_sandboxed(options)
        if status is not None:
            return status
    if options.command == "doctor":
        from minikvm.cli.doctor import main as doctor_main
        return doctor_main()
    if options.command == "serve":
        from minikvm.cli.serve import serve_command
        return serve_command(options)
    if options.command == "snapshot":
        from minikvm.cli.snapshot import snapshot_command
        return snapshot_command(options)
    return run_command(options)


def prepare_sandboxed(options: argparse.Namespace) -> int | None:
    """What a command with the sandbox options checks before it starts
    anything: ``--print-policy`` (print, exit 0), ``--here`` in ``/`` or
    ``$HOME`` (exit 2), a PROGRAM (exit 2 without one), and its file, found
    in ``PATH`` when its name has no slash (set as
    ``options.program_path``; 127 or 126 as a shell says).  None: go on."""
    from minikvm.cli.launch import LaunchError, find_program
    try:
        if options.print_policy:
            sys.stdout.write(policy_toml(options))
            return 0
        if options.here:
            here_directory()
    except ValueError as error:
        print(f"minikvm: {error}", file=sys.stderr)
        return EXIT_USAGE
    if options.program is None:
        if options.command == "serve":       # it may serve --from-snapshot; serve checks
            return None
        print(f"minikvm {options.command}: the following arguments are required: program",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        options.program_path = find_program(options.program)
    except LaunchError as error:
        print(f"minikvm: {error}", file=sys.stderr)
        return error.status
    return None


#: minikvm's options that take a value as the next word (the command line's
#: own options end at the first other word that does not start with "-").
OPTIONS_WITH_VALUES = frozenset({
    "--allow-read", "--allow-write", "--allow-connect", "--allow-listen", "--memory",
    "--timeout", "--max-fds", "--max-file-size", "--env", "--unsetenv", "--trace-file",
    "--max-threads", "--max-processes", "--policy", "--vdso", "--system-root", "--keep-tmp",
    "--resolv-conf", "--x11-size", "--flamegraph", "--sample-hz", "--gdb", "-o", "--output",
    "--listen", "--workers", "--request-timeout", "--reset", "--from-snapshot", "--seed"})

#: ``run``'s options that ``serve`` and ``snapshot save`` do not take, and why.
RUN_ONLY_OPTIONS = {
    "--x11": "only run starts a nested X server (a served or saved program has no display)",
    "--x11-size": "only run starts a nested X server (a served or saved program has no display)",
    "--allow-pty": "only run starts the pty broker",
}


def run_only_option(argv: list[str]) -> str | None:
    """The usage error for a ``run``-only option (:data:`RUN_ONLY_OPTIONS`)
    given to ``serve`` or ``snapshot``, among minikvm's own options (never
    the program's, after ``--`` or its name); None when there is none.
    argparse alone would say "unrecognized arguments", which does not say
    that the option exists, for run."""
    if argv[:1] not in (["serve"], ["snapshot"]):
        return None
    expecting_value = False
    for word in argv[1:]:
        if expecting_value:
            expecting_value = False
        elif word == "--" or not word.startswith("-"):
            if argv[:1] == ["snapshot"] and word in ("save", "run", "info"):
                continue
            return None
        else:
            name = word.partition("=")[0]
            if name in RUN_ONLY_OPTIONS:
                return f"{argv[0]}: {name} is an option of run only: {RUN_ONLY_OPTIONS[name]}"
            expecting_value = word in OPTIONS_WITH_VALUES
    return None


def spell_trace_file(argv: list[str]) -> list[str]:
    """Rewrite ``run --trace=FILE`` as ``--trace-file=FILE``.

    A bare ``--trace`` must not swallow the program name, so it takes no
    value; the FILE form is rewritten here, among minikvm's own options only
    — never in the program's arguments, which start at the first word that
    is neither an option nor an option's value (or after ``--``)."""
    if argv[:1] != ["run"]:
        return argv
    takes_value = OPTIONS_WITH_VALUES
    rewritten = ["run"]
    expecting_value = False
    for position, word in enumerate(argv[1:], start=1):
        if expecting_value:
            expecting_value = False
        elif word == "--" or not word.startswith("-"):
            return rewritten + argv[position:]
        elif word.startswith("--trace="):
            word = "--trace-file=" + word[len("--trace="):]
        elif word.startswith("--x11="):      # --x11 alone must not take the program name
            rewritten.append("--x11")
            word = "--x11-server=" + word[len("--x11="):]
        else:
            expecting_value = word in takes_value
        rewritten.append(word)
    return rewritten


def run_command(options: argparse.Namespace) -> int:
    """``minikvm run``: the launch sequence (:mod:`minikvm.cli.launch`),
    then the program's run to its end, reported as a shell would."""
    from minikvm.cli.launch import LaunchError
    from minikvm.cli.terminal import SavedTerminals
    from minikvm.machine.outside import raise_on_self

    trace_stream = None

    def open_trace() -> None:
        nonlocal trace_stream
        if options.trace == "-":
            trace_stream = sys.stderr
        elif options.trace:
            try:
                trace_stream = open(options.trace, "w")
            except OSError as error:
                raise LaunchError(EXIT_USAGE, f"cannot write the trace to {options.trace}: "
                                              f"{error.strerror}") from None
        # gdb's listening socket, bound while the walls are down (Landlock
        # may refuse a bind after them); the connection is accepted later.
        options.gdb_server = None
        if options.gdb_any_address and options.gdb is None:
            raise LaunchError(EXIT_USAGE, "--gdb-any-address needs --gdb HOST:PORT")
        if options.gdb is not None:
            from minikvm.debug.address import GdbAddressError, parse_gdb_address
            from minikvm.debug.session import listen
            try:
                host, port = parse_gdb_address(options.gdb, any_address=options.gdb_any_address)
                options.gdb_server = listen(host, port)
            except GdbAddressError as error:
                raise LaunchError(EXIT_USAGE, str(error)) from None
            except OSError as error:
                raise LaunchError(EXIT_USAGE, f"--gdb {options.gdb}: cannot listen there: "
                                              f"{error.strerror}") from None
        # The flame graph's file too: after the walls minikvm itself may
        # write nothing outside the grants.
        options.flamegraph_file = None
        if options.sample_hz is not None and options.flamegraph is None:
            raise LaunchError(EXIT_USAGE, "--sample-hz needs --flamegraph FILE")
        if options.flamegraph is not None:
            try:
                options.flamegraph_file = open(options.flamegraph, "w")
            except OSError as error:
                raise LaunchError(EXIT_USAGE, f"cannot write the flame graph to "
                                              f"{options.flamegraph}: {error.strerror}") from None

    terminals = SavedTerminals.save()
    try:
        status, signalled = _run_to_end(options, open_trace, lambda: trace_stream)
    finally:
        terminals.restore()      # however the run ended (see minikvm.cli.terminal)
        if trace_stream is not None and trace_stream is not sys.stderr:
            trace_stream.close()
    if signalled:
        # Killed by a signal the user sent (Ctrl-C, kill): end by it too, as
        # the native program would — a shell script then stops at a Ctrl-C.
        sys.stdout.flush()
        sys.stderr.flush()
        from minikvm.sandbox.private_tmp import finish_all
        finish_all()            # atexit does not run for a death by signal
        raise_on_self(signalled)
    return status


def _run_to_end(options: argparse.Namespace, open_trace: Callable[[], None],
                trace_stream: Callable[[], object]) -> tuple[int, int]:
    """The launch, the run with the signals from outside forwarded to the
    program, and the report of its end (:func:`run_command`): the exit
    status, and the signal from outside that killed the program (0: none)."""
    from minikvm.cli.launch import LaunchError, launch
    from minikvm.syscalls.dispatch import Dispatcher
    from minikvm.syscalls.trace import Tracer
    # The process tree's modules, imported while the walls are down: after
    # them Landlock lets Python write no bytecode cache beside the sources,
    # and it would compile these again at every run (~10 ms).
    import minikvm.tree.family, minikvm.tree.fork, minikvm.tree.wait  # noqa: F401, E401
    import minikvm.tree.vfork_memory  # noqa: F401

    nested = None
    try:
        nested = start_x11(options)
        # allow_fork: guest processes are host processes (minikvm.tree.fork).
        launched = launch(options, before_walls=open_trace, allow_fork=True,
                          anonymous_memory=True)
    except LaunchError as error:
        if nested is not None:
            nested.close()
        print(f"minikvm: {error}", file=sys.stderr)
        return error.status, 0
    try:
        return _run_launched(options, launched, trace_stream)
    finally:
        if nested is not None:
            nested.close()      # the server goes with the sandbox (minikvm.cli.x11)


def start_x11(options: argparse.Namespace) -> "NestedDisplay | None":
    """``--x11``: start the private server and give the program DISPLAY,
    XAUTHORITY, a connect grant for that server's socket and a read grant
    for its cookie (:mod:`minikvm.cli.x11`).  None without ``--x11``."""
    from minikvm.cli.launch import LaunchError
    if not getattr(options, "x11", False):
        if getattr(options, "x11_size", None) is not None:
            raise LaunchError(EXIT_USAGE, "--x11-size needs --x11")
        return None
    # Imported only now: ~8 ms of start-up a run without --x11 skips.
    from minikvm.cli.options import endpoint
    from minikvm.cli.x11 import (DEFAULT_SIZE, X11_CACHE_HOME, X11Error, choose_mode,
                                 start_nested_display)
    from minikvm.machine.stops import EXIT_CANNOT_RUN
    try:
        mode = choose_mode(options.x11_server or "auto", dict(os.environ))
        nested = start_nested_display(mode, options.x11_size or DEFAULT_SIZE)
    except X11Error as error:
        raise LaunchError(EXIT_CANNOT_RUN, str(error)) from None
    options.allow_connect = [*options.allow_connect, endpoint(f"unix:{nested.socket_path}")]
    options.allow_read = [*options.allow_read, nested.directory]
    # Fontconfig's cache (and any other XDG cache) in the private /tmp:
    # the user's ~/.cache is hidden, and without a writable cache each
    # client says "No writable cache directories" and scans every font.
    # First, so that the user's own --env XDG_CACHE_HOME=... wins.
    options.env = [f"XDG_CACHE_HOME={X11_CACHE_HOME}", *options.env,
                   f"DISPLAY=:{nested.display}", f"XAUTHORITY={nested.auth_file}"]
    return nested


def _run_launched(options: argparse.Namespace, launched: "Launched",
                  trace_stream: Callable[[], object]) -> tuple[int, int]:
    """The run of a launched program to its end (:func:`_run_to_end`)."""
    from minikvm.syscalls.dispatch import Dispatcher
    from minikvm.syscalls.trace import Tracer
    process, policy = launched.process, launched.policy
    process.threads.max_threads = options.max_threads
    stream = trace_stream()
    dispatcher = Dispatcher(process, Tracer(stream) if stream else None,  # type: ignore[arg-type]
                            count=options.summary)
    from minikvm.tree.family import Family
    from minikvm.tree.table import DEFAULT_SANDBOX_MEMORY
    pool = process.mm.user_pool
    family = Family.start(options.max_processes, process.pgid, process.sid, pool.used,
                          options.memory or DEFAULT_SANDBOX_MEMORY)
    process.family = family
    family.publish(process)
    process.new_id = family.table.new_id
    pool.charge = family.charge     # --memory bounds the sandbox's processes together
    tree_summary = None
    if dispatcher.counts is not None:
        from minikvm.tree.summary import TreeSummary
        tree_summary = TreeSummary()
        counts = dispatcher.counts

        def count_anew() -> None:
            counts.clear()          # a child counts its own calls only

        def hand_on_counts() -> None:
            tree_summary.add(counts)
        family.in_child.append(count_anew)
        family.at_end.append(hand_on_counts)
    if dispatcher.tracer is not None:
        # Once there are two processes, each line says whose it is (strace -f).
        tracer = dispatcher.tracer

        def name_the_pid() -> None:
            tracer.prefix = f"[pid {process.pid}] "
        family.on_fork.append(name_the_pid)
        family.in_child.append(name_the_pid)
    sampler = None
    if options.flamegraph is not None:
        from minikvm.observe.sampler import DEFAULT_SAMPLE_HZ, Sampler
        sampler = Sampler(process, options.sample_hz or DEFAULT_SAMPLE_HZ)
    try:
        session = None
        if options.gdb_server is not None:
            # Before the signals are forwarded: a Ctrl-C while waiting for
            # gdb ends minikvm, as it would any command that waits.
            from minikvm.debug.session import DebugSession, accept
            session = DebugSession(process, dispatcher, accept(options.gdb_server,
                                                               options.program))
            family.in_child.append(session.let_child_go)   # gdb follows the first process
        process.machine.forward_outside_signals().mailbox = family.mail
        if sampler is not None:
            sampler.start()
        if session is not None:
            result = session.run(timeout=options.timeout)
        else:
            result = process.run(dispatcher, timeout=options.timeout)
    except KeyboardInterrupt:    # a Ctrl-C before the handlers were in place
        sys.stdout.flush()
        print("minikvm: interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED, 0
    finally:
        family.end_all()         # the first process ended: the sandbox's others end too
        if sampler is not None:
            sampler.stop()
        process.machine.stop_forwarding()
    if sampler is not None:
        from minikvm.observe.flamegraph import write_flamegraph
        with options.flamegraph_file as stream:
            try:
                summary = write_flamegraph(options.flamegraph, stream, sampler,
                                           f"minikvm run {' '.join([options.program, *options.args])}")
            except OSError as error:
                summary = (f"minikvm: the flame graph could not be written to "
                           f"{options.flamegraph}: {error.strerror}")
        sys.stdout.flush()
        print(summary, file=sys.stderr)
    if result.message:
        sys.stdout.flush()
        print(result.message, file=sys.stderr)
        if options.verbose and result.crash is not None:
            from minikvm.machine.crash import register_dump
            print(register_dump(process.machine.vcpu.run_state.s.regs.regs), file=sys.stderr)
    if options.summary and dispatcher.counts is not None:
        if tree_summary is not None:
            tree_summary.merge_into(dispatcher.counts)     # the children's calls too
        print(format_summary(dispatcher.counts), file=sys.stderr)
    if options.audit:
        print(policy.summary(), file=sys.stderr)
    process.close()
    return result.exit_status, (result.signal or 0) if result.outside else 0


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
