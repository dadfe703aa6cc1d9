"""The legacy vsyscall page (minikvm/syscalls/vsyscall.py), as Linux emulates it.

tests/programs/vsyscall.c calls the three entries through function pointers
and checks each against its real system call; the wrong uses (an address
inside the page that is no entry, a bad pointer, a bad stack, a read) must
be the SIGSEGV Linux gives.  Compared with the native run where the host
has a ``[vsyscall]`` page.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guest_runs import run_minikvm, run_native, shell_status
from tests.programs.build import program

pytestmark = pytest.mark.kvm
RUN_TIMEOUT_SECONDS = 60
CASES = [("calls", 0), ("misaligned", 139), ("badpointer", 139), ("badstack", 139),
         ("read", 139)]


def host_has_vsyscall() -> bool:
    return "[vsyscall]" in Path("/proc/self/maps").read_text()


@pytest.mark.parametrize("mode, status", CASES)
@pytest.mark.parametrize("vdso", ["auto", "off"])
def test_vsyscall_entries_as_linux(mode: str, status: int, vdso: str, tmp_path: Path) -> None:
    path = program("vsyscall", "glibc-static")
    sandboxed = run_minikvm(["--vdso", vdso, path, mode], cwd=tmp_path, text=True,
                            timeout=RUN_TIMEOUT_SECONDS)
    assert sandboxed.returncode == status, sandboxed.stdout + sandboxed.stderr
    assert "Traceback" not in sandboxed.stderr
    if status == 0:
        assert sandboxed.stdout == "gettimeofday ok\ntime ok\ngetcpu ok\n"
    else:
        assert sandboxed.stderr.startswith("SIGSEGV: page fault"), sandboxed.stderr
    if not host_has_vsyscall():
        pytest.skip("the host has no [vsyscall] page (vsyscall=none): no native comparison")
    native = run_native([path, mode], text=True, timeout=RUN_TIMEOUT_SECONDS)
    assert shell_status(native.returncode) == status
    assert native.stdout == sandboxed.stdout


def test_trace_shows_the_emulated_calls(tmp_path: Path) -> None:
    path = program("vsyscall", "glibc-static")
    result = run_minikvm(["--trace", path, "calls"], cwd=tmp_path, text=True,
                         timeout=RUN_TIMEOUT_SECONDS)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("gettimeofday(") == 3
    assert result.stderr.count("getcpu(") == 2
