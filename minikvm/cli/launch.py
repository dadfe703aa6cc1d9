"""Layer 8 — the launch sequence: from a command line to a confined, loaded program.

Every command that runs a guest goes through the same five steps, in this
order, because each needs what the one before gave and the walls must go
up between reading and parsing (docs/explanation/security-model.md, "When
the walls go up")::

    1 policy     the grants and endpoints of the options        policy_from()
      (files)    what else the command writes: run's --trace    before_walls()
    2 read       the program file's bytes (not parsed yet)      read_program()
    3 machine    /dev/kvm, a VM and its memory                  Machine()
    4 walls      Landlock + seccomp around this process          raise_walls()
    5 spawn      parse the ELF inside the walls, load it         Process.spawn()

:func:`launch` is that sequence for ``minikvm run``; :func:`launch_to_ready_point`
adds the snapshot at the first request for ``serve`` and ``snapshot save``;
:func:`load_confined` is its counterpart for a snapshot file (open and check
the file, raise the walls under the policy it records, then load it).
A step that fails raises :class:`LaunchError`, which carries the exit
status a shell would report (``127`` no such file — the program's, or its
interpreter's —, ``126`` cannot run it,
``2`` a usage error) and one line that says why.

Before step 1, :func:`find_program` finds the file as ``execvp`` does: a
name with no slash is looked up in ``PATH``.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from minikvm.cli.options import EXIT_USAGE, determinism_from, guest_environment, policy_from
from minikvm.errors import MinikvmError
from minikvm.machine.stops import EXIT_CANNOT_RUN, EXIT_NOT_FOUND

if TYPE_CHECKING:
    from minikvm.process.process import Process
    from minikvm.sandbox.confine import Confinement
    from minikvm.sandbox.policy import Policy
    from minikvm.snapshot.snapshot import Snapshot


class LaunchError(MinikvmError):
    """A step of the launch sequence failed: *status* is the exit status to
    report, the message says what failed and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def find_program(name: str) -> str:
    """The file ``minikvm run NAME`` runs, found as ``execvp(3)`` finds it.

    A *name* with a slash is that file.  One without is looked up in the
    directories of minikvm's own ``PATH`` (the host's, as minikvm was
    started — not an ``--env PATH=`` given to the program; ``/bin:/usr/bin``
    when it is unset; an empty entry is the current directory), skipping
    what is not an executable regular file; nothing found is 127, "command
    not found", as a shell says it.  The found file is checked by
    :func:`check_program`."""
    if "/" in name:
        return check_program(name)
    if not name:
        raise LaunchError(EXIT_NOT_FOUND, "'': no such file")
    skipped = None
    for directory in os.get_exec_path():
        candidate = os.path.join(directory, name)
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) and os.access(candidate, os.X_OK):
            return candidate
        skipped = skipped or candidate
    hint = f" ({skipped} was skipped: not an executable file)" if skipped else ""
    raise LaunchError(EXIT_NOT_FOUND, f"{name}: command not found in PATH{hint}")


def check_program(path: str) -> str:
    """*path* if ``execve(2)`` would start it, else the LaunchError a shell
    reports: 127 when it does not exist; 126 when it is a directory or
    another kind of non-regular file (a FIFO would block the read
    forever), has no execute permission (execve's EACCES), or cannot be
    reached."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise LaunchError(EXIT_NOT_FOUND, f"{path}: no such file") from None
    except OSError as error:
        raise LaunchError(EXIT_CANNOT_RUN, f"{path}: {error.strerror}") from None
    if stat.S_ISDIR(mode):
        raise LaunchError(EXIT_CANNOT_RUN, f"{path}: is a directory")
    if not stat.S_ISREG(mode):
        raise LaunchError(EXIT_CANNOT_RUN, f"{path}: not a regular file")
    if not os.access(path, os.X_OK):
        raise LaunchError(EXIT_CANNOT_RUN, f"{path}: permission denied: the file is not "
                                           f"executable (chmod +x {path} if it should be)")
    return path


@dataclass
class Launched:
    """A program loaded behind the walls, ready to run."""
    process: "Process"
    policy: "Policy"
    confinement: "Confinement"


def raise_walls(policy: "Policy | None", *, allow_fork: bool = False,
                verbose: bool = False) -> "Confinement":
    """Step 4: :func:`minikvm.sandbox.confine.confine` under *policy* (None:
    an empty one, only the runtime).  A wall the kernel lacks is a
    ``minikvm: warning:`` line and the command goes on; with *verbose*, what
    was enforced is printed too.  A wall the kernel has but that fails to go
    up is a LaunchError (126): the command must not run the guest."""
    from minikvm.sandbox.confine import ConfineError, confine
    from minikvm.sandbox.policy import Policy
    try:
        confinement = confine(policy if policy is not None else Policy(), allow_fork=allow_fork)
    except ConfineError as error:
        raise LaunchError(EXIT_CANNOT_RUN, str(error)) from None
    for warning in confinement.warnings:
        print(f"minikvm: warning: {warning}", file=sys.stderr, flush=True)
    if verbose:
        print(f"minikvm: {confinement}".replace("\n", "\nminikvm: "), file=sys.stderr)
    return confinement


def launch(options: argparse.Namespace, *, stdio: tuple[int, int, int] = (0, 1, 2),
           program: bytes | None = None, allow_fork: bool = False,
           anonymous_memory: bool = False,
           before_walls: Callable[[], None] | None = None) -> Launched:
    """Steps 1 to 5 for ``options.program`` with ``options.args``: the
    file is ``options.program_path`` (what :func:`find_program` found, set
    by the command line), argv[0] the name as typed, as execvp passes it.

    *program* is the file's bytes when the caller read them already (before
    a fork, say); *stdio* the host fds of the guest's 0, 1 and 2;
    *allow_fork* the seccomp variant of a server that forks its workers
    (and of a run, whose guest processes are host processes);
    *anonymous_memory* a machine no snapshot is taken of, whose memory the
    host's fork shares copy-on-write (:class:`~minikvm.machine.machine.Machine`);
    *before_walls* opens what else the command needs once the policy is
    known to be good (it may raise LaunchError).  ``options.verbose``, where
    the command has it, prints the walls."""
    from minikvm.cpu.layout import DEFAULT_MEMORY_SIZE
    from minikvm.machine.machine import Machine
    from minikvm.process.elf import read_program
    from minikvm.process.process import Process
    from minikvm.sandbox.policy import PolicyError

    path = options.program_path
    try:
        policy = policy_from(options)
    except (PolicyError, ValueError, OSError) as error:
        raise LaunchError(EXIT_USAGE, str(error)) from None
    if getattr(options, "allow_pty", False) or getattr(options, "x11", False):
        from minikvm.sandbox.ptys import PtyError, SandboxPtys
        try:
            policy.ptys = SandboxPtys.start()      # the broker, outside the walls
        except PtyError as error:
            policy.close()
            raise LaunchError(EXIT_CANNOT_RUN, str(error)) from None
    if before_walls is not None:
        before_walls()
    # Read the program and create the VM while every file is reachable; the
    # ELF is *parsed* only after confinement (a malicious file meets the
    # parser inside the walls).
    try:
        if program is None:
            program = read_program(path)
        machine = Machine(options.memory or DEFAULT_MEMORY_SIZE,
                          anonymous_memory=anonymous_memory)
    except MinikvmError as error:    # ElfError (unreadable), KvmUnavailable, ...
        policy.close()
        raise LaunchError(EXIT_CANNOT_RUN, str(error)) from None
    try:
        confinement = raise_walls(policy, allow_fork=allow_fork,
                                  verbose=getattr(options, "verbose", False))
        process = Process.spawn(path, [options.program, *options.args],
                                guest_environment(options), policy,
                                machine=machine, program=program, stdio=stdio,
                                vdso=getattr(options, "vdso", "auto"),
                                determinism=determinism_from(options))
    except LaunchError:
        machine.close()
        raise
    except MinikvmError as error:    # ElfError: not a program minikvm can run
        machine.close()
        from minikvm.process.interpreter import InterpreterNotFound
        status = EXIT_NOT_FOUND if isinstance(error, InterpreterNotFound) else EXIT_CANNOT_RUN
        raise LaunchError(status, str(error)) from None
    return Launched(process, policy, confinement)


def launch_to_ready_point(options: argparse.Namespace, stdio: tuple[int, int, int], *,
                          program: bytes | None = None,
                          allow_fork: bool = False) -> tuple["Snapshot", "Confinement"]:
    """:func:`launch`, then run the program to its first request and take
    the snapshot there (``serve``, ``snapshot save``).  SnapshotError says
    why there is none (the program exited or crashed first)."""
    from minikvm.errors import SnapshotError
    from minikvm.snapshot.snapshot import snapshot_at_ready_point
    launched = launch(options, stdio=stdio, program=program, allow_fork=allow_fork)
    try:
        snapshot, reply = snapshot_at_ready_point(launched.process, timeout=options.timeout)
    finally:
        launched.process.close()
    if snapshot is None:
        raise SnapshotError(f"{options.program}: {reply.message}")
    return snapshot, launched.confinement


def load_confined(name: str, stdio: Sequence[int], *,
                  allow_fork: bool = False) -> tuple["Snapshot", "Confinement"]:
    """The launch sequence of a snapshot file: open it and check its header
    and checksum, raise the walls under the policy it records, then load it
    (the stored program is parsed inside the walls)."""
    from minikvm.errors import SnapshotError
    from minikvm.snapshot.file import load, read_header, saved_policy
    try:
        file = open(name, "rb")
    except OSError as error:
        raise SnapshotError(f"{name}: {error.strerror}") from None
    with file:
        header = read_header(name, file)
        policy = saved_policy(header)
        confinement = raise_walls(policy, allow_fork=allow_fork)
        return load(name, policy=policy, stdio=stdio, file=file, header=header), confinement
