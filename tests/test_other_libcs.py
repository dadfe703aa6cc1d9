"""Programs built against the small C libraries start and behave natively.

glibc and musl are covered program by program in test_programs.py; here
dietlibc (``diet gcc -static``) and klibc (``klcc -static``) run the simple
programs, because their start-up code differs: dietlibc sets FS itself with
arch_prctl, klibc never touches it and probes each stdio fd with TCGETS.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.programs.build import program, unavailable_reason

pytestmark = pytest.mark.kvm

SMALL_LIBCS = ("dietlibc-static", "klibc-static")
RUN_TIMEOUT_SECONDS = 60
ROOT = Path(__file__).resolve().parent.parent
#: (program, arguments, expected exit status)
CASES = [("hello", [], 0), ("exitcode", ["42"], 42), ("exitcode", ["0"], 0),
         ("segv", [], 139)]


def run_native(path: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([path, *args], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_SECONDS, check=False)


def run_minikvm(path: str, args: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "minikvm", "run", "--here", "--", path, *args],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS,
                          check=False, cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


@pytest.mark.parametrize("variant", SMALL_LIBCS)
@pytest.mark.parametrize("name, args, status", CASES)
def test_small_libc_program_matches_native(variant: str, name: str, args: list[str],
                                           status: int, tmp_path) -> None:
    reason = unavailable_reason(variant)
    if reason:
        pytest.skip(reason)
    path = str(program(name, variant))
    native = run_native(path, args)
    sandboxed = run_minikvm(path, args, str(tmp_path))
    native_status = 128 - native.returncode if native.returncode < 0 else native.returncode
    assert native_status == status
    assert sandboxed.returncode == status, sandboxed.stderr
    assert sandboxed.stdout == native.stdout
    assert "Traceback" not in sandboxed.stderr
    if status == 139:
        assert sandboxed.stderr.startswith("SIGSEGV: page fault writing 0x0"), sandboxed.stderr
