"""Run a program natively or under ``python -m minikvm run``, in a subprocess.

Many tests compare a program's native run with its run in the sandbox, or
drive ``minikvm run`` the way a user types it.  Both runs are plain
``subprocess.run`` calls with captured output and a backstop timeout (a
guest that spins must not hang the suite); the minikvm one also needs
``PYTHONPATH`` pointing at this checkout, so that ``-m minikvm`` finds the
package under test rather than an installed copy.  These helpers hold
those details once; each test still spells out its own arguments, its
working directory, its environment and whether it reads bytes or text.

:func:`shell_status` puts the two return codes on one scale: minikvm
exits with 128+N when its guest dies of signal N, as a shell reports it,
while ``subprocess`` gives a native signal death as -N.

This is a helper module, not a conftest: import it as
``from tests.guest_runs import run_minikvm, run_native, shell_status``;
:func:`assert_parts_same_as_native` is the whole comparison for a program
that prints its parts as headings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: The checkout's root: what ``PYTHONPATH`` must hold for ``-m minikvm``.
ROOT = Path(__file__).resolve().parent.parent


def shell_status(returncode: int) -> int:
    """A subprocess return code as a shell reports it: -N (signal N) is 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def run_native(argv: list[Any], *, timeout: float, cwd: Path | str | None = None,
               env: dict[str, str] | None = None, input: bytes | str | None = None,
               text: bool = False) -> subprocess.CompletedProcess:
    """Run *argv* (paths are turned into strings) directly on the host.

    *env* None inherits this process's environment, as ``subprocess`` does;
    *timeout* is the backstop that fails a test whose program hangs.
    """
    return subprocess.run([str(argument) for argument in argv], cwd=cwd, env=env, input=input,
                          capture_output=True, text=text, timeout=timeout)


def run_minikvm(arguments: list[Any], *, timeout: float, cwd: Path | str | None = None,
                env: dict[str, str] | None = None, input: bytes | str | None = None,
                text: bool = False) -> subprocess.CompletedProcess:
    """``python -m minikvm run ARGUMENTS`` in a subprocess, as a user types it.

    *arguments* is everything after ``run`` (options, ``--``, the program
    and its arguments; paths are turned into strings).  minikvm runs with
    *env* (None: this process's environment) plus ``PYTHONPATH`` set to
    :data:`ROOT`; a guest started without ``--clearenv`` inherits it.
    *timeout* is the test's backstop, not minikvm's ``--timeout``, which
    the caller passes in *arguments* when it wants one.
    """
    return subprocess.run(minikvm_command(arguments), cwd=cwd, env=minikvm_environment(env),
                          input=input, capture_output=True, text=text, timeout=timeout)


def start_minikvm(arguments: list[Any]) -> subprocess.Popen[bytes]:
    """``python -m minikvm run ARGUMENTS`` started, not waited for: for a
    test that talks to the guest while it runs.  stdin, stdout and stderr
    are pipes (bytes); use it in a ``with`` block and kill it in a
    ``finally``, so that a failing test leaves no guest behind."""
    return subprocess.Popen(minikvm_command(arguments), env=minikvm_environment(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def minikvm_command(arguments: list[Any]) -> list[str]:
    """The argv of ``python -m minikvm run ARGUMENTS``, with this interpreter."""
    return [sys.executable, "-m", "minikvm", "run", *(str(argument) for argument in arguments)]


def minikvm_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """*env* (None: this process's environment) with ``PYTHONPATH`` set to
    :data:`ROOT`, so that ``-m minikvm`` imports this checkout."""
    return dict(os.environ if env is None else env, PYTHONPATH=str(ROOT))


def assert_parts_same_as_native(executable: Path, parts: list[str], cwd: Path, *,
                                guest_timeout: float = 60, backstop: float = 90) -> None:
    """Run a test program that prints ``PART:`` headings (and indented lines
    under each) natively and under ``minikvm run --here``: natively it must
    succeed and print exactly *parts*, so a program that skipped a part
    cannot pass; in the sandbox stdout, stderr and the status must be the
    same bytes."""
    host = run_native([executable], cwd=cwd, timeout=backstop)
    assert host.returncode == 0, host.stdout.decode() + host.stderr.decode()
    headings = [line for line in host.stdout.decode().splitlines() if not line.startswith(" ")]
    assert headings == [f"{part}:" for part in parts]
    guest = run_minikvm(["--here", f"--timeout={guest_timeout}", "--", executable],
                        cwd=cwd, timeout=backstop)
    assert guest.stdout.decode() == host.stdout.decode()
    assert guest.stderr.decode() == host.stderr.decode()
    assert shell_status(guest.returncode) == shell_status(host.returncode)
