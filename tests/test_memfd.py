"""memfd_create under minikvm: the same answers as Linux, within a budget.

``tests/programs/memfd.c`` creates memfds (flags, the 249-byte name limit,
bad flags and pointers, the ``/memfd:NAME (deleted)`` link), writes,
reads, truncates and maps one privately, and seals one (each seal's
effect, ``F_SEAL_SEAL``, no seals without ``MFD_ALLOW_SEALING``) —
natively and under ``minikvm run --here``; stdout, stderr and the exit
status must agree.  Then, in the sandbox only, the budget: memfds are host
memory, so together they hold at most the guest's memory size — a
truncate or write past it is ENOSPC, and closing one gives its share back.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guest_runs import assert_parts_same_as_native, run_minikvm
from tests.programs.build import STATIC_VARIANTS, program

GUEST_TIMEOUT_SECONDS = 60
SUBPROCESS_TIMEOUT_SECONDS = 90
BUDGET_MIB = 64

pytestmark = pytest.mark.kvm


@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_memfd_same_as_native(variant: str, tmp_path: Path) -> None:
    assert_parts_same_as_native(program("memfd", variant), ["create", "data", "seals"], tmp_path,
                                guest_timeout=GUEST_TIMEOUT_SECONDS,
                                backstop=SUBPROCESS_TIMEOUT_SECONDS)


def test_memfds_hold_at_most_the_guest_memory(tmp_path: Path) -> None:
    executable = program("memfd")
    guest = run_minikvm(["--here", f"--memory={BUDGET_MIB}M", f"--timeout={GUEST_TIMEOUT_SECONDS}",
                         "--", executable, "budget", str(BUDGET_MIB)],
                        cwd=tmp_path, timeout=SUBPROCESS_TIMEOUT_SECONDS)
    assert guest.returncode == 0, guest.stderr.decode()
    assert guest.stdout.decode().splitlines() == [
        "ftruncate twice the memory: No space left on device",
        "writes stopped: No space left on device, within the memory size: 1",
        "a second memfd cannot grow: No space left on device",
        "after closing the first: ok",
    ]
