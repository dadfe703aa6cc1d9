"""timerfd under minikvm: the same answers as Linux.

``tests/programs/timerfd.c`` creates timers on every clock a timerfd
accepts (and the errors of the others, and of bad flags), tries hostile
values on ``timerfd_settime`` (negative and 10**9 nanoseconds, negative
seconds, bad flags, bad pointers, ``INT64_MAX`` seconds that must saturate),
reads a 10 ms interval timer 5 times blocking and 5 times through
``epoll_wait`` (level, then edge-triggered: one edge per read, as Linux's
timer stops until a read), sees it through ``poll`` and ``select``, checks
``timerfd_gettime`` and the old value, ``TFD_TIMER_ABSTIME`` on
CLOCK_MONOTONIC and CLOCK_REALTIME (in the past: the missed expirations at
once), and a thread blocked in ``read`` while the main thread joins it —
natively and under ``minikvm run --here``; stdout, stderr and the exit
status must agree.  Every line is a count or a range check: nothing is timed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guest_runs import assert_parts_same_as_native
from tests.programs.build import STATIC_VARIANTS, program

GUEST_TIMEOUT_SECONDS = 60
SUBPROCESS_TIMEOUT_SECONDS = 90
PARTS = ("create", "settime", "loop", "nonblock", "epoll", "poll", "gettime", "abstime",
         "thread")

pytestmark = pytest.mark.kvm


@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_timerfd_same_as_native(variant: str, tmp_path: Path) -> None:
    assert_parts_same_as_native(program("timerfd", variant), list(PARTS), tmp_path,
                                guest_timeout=GUEST_TIMEOUT_SECONDS,
                                backstop=SUBPROCESS_TIMEOUT_SECONDS)
