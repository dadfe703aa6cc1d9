"""signalfd under minikvm: the same answers as Linux.

``tests/programs/signalfd.c`` tries the errors of ``signalfd4`` (bad flags,
sizes, fds, a bad mask pointer, a fd that is not a signalfd), reads three
blocked signals sent by ``kill``, ``raise`` and ``sigqueue`` as three
records (lowest number first, sender and value in each; a buffer smaller
than a record is EINVAL), sees it through ``poll`` and ``epoll`` only while
a signal of its mask is pending, changes its mask in place (SIGKILL is
dropped from a mask), blocks in ``read`` until an interval timer's SIGALRM,
and has a thread block in ``read`` until the main thread sends a signal —
natively and under ``minikvm run --here``; stdout, stderr and the exit
status must agree.  Nothing is timed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guest_runs import run_minikvm, run_native, shell_status
from tests.programs.build import STATIC_VARIANTS, program

GUEST_TIMEOUT_SECONDS = 60
SUBPROCESS_TIMEOUT_SECONDS = 90
PARTS = ("create", "read", "nonblock", "poll", "mask", "alarm", "thread")

pytestmark = pytest.mark.kvm


@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_signalfd_same_as_native(variant: str, tmp_path: Path) -> None:
    executable = program("signalfd", variant)
    host = run_native([executable], cwd=tmp_path, timeout=SUBPROCESS_TIMEOUT_SECONDS)
    assert host.returncode == 0, host.stdout.decode() + host.stderr.decode()
    printed_parts = [line[:-1] for line in host.stdout.decode().splitlines()
                     if not line.startswith(" ")]
    assert printed_parts == list(PARTS)
    guest = run_minikvm(["--here", f"--timeout={GUEST_TIMEOUT_SECONDS}", "--", executable],
                        cwd=tmp_path, timeout=SUBPROCESS_TIMEOUT_SECONDS)
    assert guest.stdout.decode() == host.stdout.decode()
    assert guest.stderr.decode() == host.stderr.decode()
    assert shell_status(guest.returncode) == shell_status(host.returncode)
