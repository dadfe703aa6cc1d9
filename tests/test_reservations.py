"""Large reservations of address space cost only the pages opened.

``tests/programs/reservations.c`` reserves 1 TiB and 1 GiB ``PROT_NONE``
(``MAP_NORESERVE``), opens 8 pages spread over the terabyte with
``mprotect`` and uses them, maps a Go-style 64 KiB arena over the gigabyte
with ``MAP_FIXED``, unmaps parts and gives it all back — natively and
under ``minikvm run --memory=64M``, whose memory is 16,000 times smaller
than the reservation.  Output and status must agree.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guest_runs import run_minikvm, run_native, shell_status
from tests.programs.build import STATIC_VARIANTS, program

pytestmark = pytest.mark.kvm


@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_a_terabyte_reservation_with_a_few_pages_used(variant: str, tmp_path: Path) -> None:
    executable = program("reservations", variant)
    host = run_native([executable], cwd=tmp_path, timeout=60)
    assert host.returncode == 0, host.stdout.decode() + host.stderr.decode()
    assert b"8 pages opened across it, sum 64" in host.stdout
    guest = run_minikvm(["--here", "--memory=64M", "--timeout=60", "--", executable],
                        cwd=tmp_path, timeout=90)
    assert guest.stdout.decode() == host.stdout.decode()
    assert guest.stderr.decode() == host.stderr.decode()
    assert shell_status(guest.returncode) == shell_status(host.returncode)
