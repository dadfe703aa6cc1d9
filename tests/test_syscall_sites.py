"""Patched system-call sites are invisible to programs but for their own bytes.

``tests/programs/syscall_sites.c`` runs a ``syscall`` in its own text and
reads the two bytes back, checks RCX and R11 after 100 system calls from
one site, runs system calls from a writable+executable page (a JIT's:
never patched, and rewritten in place), and from a page made executable,
then writable, rewritten and executable again (W^X) — natively and in the
sandbox, with patching on (the default) and off
(``MINIKVM_SYSCALL_PATCH=0``).  The one difference allowed is the one
documented in :mod:`minikvm.machine.syscall_sites`: with patching on, the
executed site reads ``e6e1`` (``out %al,$0xe1``) instead of ``0f05``.
The rest of the suite covers snapshots, forks and resets with patched
pages (tests/test_snapshot.py, tests/test_serve.py run with patching on).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from minikvm.machine.syscall_sites import PATCH_ENVIRONMENT
from tests.guest_runs import run_minikvm, run_native, shell_status
from tests.programs.build import STATIC_VARIANTS, program

pytestmark = pytest.mark.kvm


@pytest.mark.parametrize("patching", ["1", "0"])
@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_patched_sites_behave_as_syscall(variant: str, patching: str, tmp_path: Path) -> None:
    executable = program("syscall_sites", variant)
    host = run_native([executable], cwd=tmp_path, timeout=60)
    assert host.returncode == 0, host.stderr
    native = host.stdout.decode()
    assert "  site bytes: 0f05\n" in native
    guest = run_minikvm(["--timeout=60", "--", executable], cwd=tmp_path, timeout=90,
                        env=dict(os.environ, **{PATCH_ENVIRONMENT: patching}))
    expected = native if patching == "0" else native.replace("site bytes: 0f05",
                                                             "site bytes: e6e1")
    assert guest.stdout.decode() == expected
    assert guest.stderr.decode() == host.stderr.decode()
    assert shell_status(guest.returncode) == shell_status(host.returncode)
