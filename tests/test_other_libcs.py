"""Programs built against the small C libraries start and behave natively.

glibc and musl are covered program by program in test_programs.py; here
dietlibc (``diet gcc -static``) and klibc (``klcc -static``) run the simple
programs, because their start-up code differs: dietlibc sets FS itself with
arch_prctl, klibc never touches it and probes each stdio fd with TCGETS.
"""

from __future__ import annotations

import pytest

from tests.guest_runs import run_minikvm, run_native, shell_status
from tests.programs.build import program

pytestmark = pytest.mark.kvm

SMALL_LIBCS = ("dietlibc-static", "klibc-static")
RUN_TIMEOUT_SECONDS = 60
#: (program, arguments, expected exit status)
CASES = [("hello", [], 0), ("exitcode", ["42"], 42), ("exitcode", ["0"], 0),
         ("segv", [], 139)]


@pytest.mark.parametrize("variant", SMALL_LIBCS)
@pytest.mark.parametrize("name, args, status", CASES)
def test_small_libc_program_matches_native(variant: str, name: str, args: list[str],
                                           status: int, tmp_path) -> None:
    path = program(name, variant)
    native = run_native([path, *args], text=True, timeout=RUN_TIMEOUT_SECONDS)
    sandboxed = run_minikvm(["--here", "--", path, *args], cwd=tmp_path, text=True,
                            timeout=RUN_TIMEOUT_SECONDS)
    assert shell_status(native.returncode) == status
    assert sandboxed.returncode == status, sandboxed.stderr
    assert sandboxed.stdout == native.stdout
    assert "Traceback" not in sandboxed.stderr
    if status == 139:
        assert sandboxed.stderr.startswith("SIGSEGV: page fault writing 0x0"), sandboxed.stderr
