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

from tests.guest_runs import assert_parts_same_as_native
from tests.programs.build import STATIC_VARIANTS, program

GUEST_TIMEOUT_SECONDS = 60
SUBPROCESS_TIMEOUT_SECONDS = 90
PARTS = ("create", "read", "nonblock", "poll", "mask", "alarm", "thread")

pytestmark = pytest.mark.kvm


@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_signalfd_same_as_native(variant: str, tmp_path: Path) -> None:
    assert_parts_same_as_native(program("signalfd", variant), list(PARTS), tmp_path,
                                guest_timeout=GUEST_TIMEOUT_SECONDS,
                                backstop=SUBPROCESS_TIMEOUT_SECONDS)
