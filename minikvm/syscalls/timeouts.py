"""Layer 6 — time values a guest passes: read once, checked and saturated as Linux does.

A ``struct timespec`` or ``timeval`` comes from guest memory as two 64-bit
integers the guest chose.  Linux checks them in one place
(``timespec64_valid()``: ``tv_sec >= 0`` and ``0 <= tv_nsec < 10**9``, else
EINVAL) and *saturates* a valid but huge one at ``KTIME_MAX`` nanoseconds
(``timespec64_add_safe()``, ``ktime_set()``): a timeout of ``INT64_MAX``
seconds is simply "forever".  minikvm does both here, once for every
caller, so that no handler does arithmetic or ``struct.pack`` on a raw guest
value (``INT64_MAX`` seconds as a float rounds *up* to 2**63, which no
``int64_t`` holds: that was an "internal error" in ppoll, select, pselect6
and getitimer).

Every function returns seconds as a float no larger than
:data:`MAX_TIMEOUT_SECONDS`, or nanoseconds as an int no larger than
:data:`~minikvm.linux_abi.KTIME_MAX`; writing one back always fits.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from minikvm.errors import SyscallError
from minikvm.linux_abi import KTIME_MAX, NSEC_PER_SEC, TIMESPEC, TIMEVAL, USEC_PER_SEC

if TYPE_CHECKING:
    from minikvm.process.process import Process

#: The longest timeout, in seconds: KTIME_MAX nanoseconds (about 292 years).
MAX_TIMEOUT_SECONDS = KTIME_MAX // NSEC_PER_SEC


def checked_timespec(seconds: int, nanoseconds: int, what: str = "timespec") -> int:
    """``{seconds, nanoseconds}`` as nanoseconds, saturated at KTIME_MAX;
    EINVAL for a negative time or nanoseconds outside ``[0, 10**9)``."""
    if seconds < 0 or not 0 <= nanoseconds < NSEC_PER_SEC:
        raise SyscallError(errno.EINVAL, f"bad {what} {{{seconds}, {nanoseconds}}}")
    return min(seconds * NSEC_PER_SEC + nanoseconds, KTIME_MAX)


def read_timespec_ns(proc: Process, address: int) -> int:
    """A ``struct timespec`` at *address*, checked, as saturated nanoseconds."""
    return checked_timespec(*proc.mm.read_struct(address, TIMESPEC.format))


def read_timeout(proc: Process, address: int) -> float | None:
    """A ``struct timespec *`` timeout in seconds: None for NULL (no limit)."""
    if not address:
        return None
    return read_timespec_ns(proc, address) / NSEC_PER_SEC


def timeval_seconds(seconds: int, microseconds: int, what: str = "timeval") -> float:
    """``{seconds, microseconds}`` (both checked as Linux checks a timeval:
    ``0 <= tv_usec < 10**6``) as saturated seconds."""
    if seconds < 0 or not 0 <= microseconds < USEC_PER_SEC:
        raise SyscallError(errno.EINVAL, f"bad {what} {{{seconds}, {microseconds}}}")
    return min(seconds + microseconds / USEC_PER_SEC, MAX_TIMEOUT_SECONDS)


def read_select_timeout(proc: Process, address: int) -> float | None:
    """select(2)'s ``struct timeval *``: None for NULL.  select is older and
    laxer than the rest: it folds ``tv_usec >= 10**6`` into the seconds
    (``tv_sec + tv_usec / USEC_PER_SEC`` in fs/select.c) and refuses only
    negative values."""
    if not address:
        return None
    seconds, microseconds = proc.mm.read_struct(address, TIMEVAL.format)
    if seconds < 0 or microseconds < 0:
        raise SyscallError(errno.EINVAL, f"bad timeval {{{seconds}, {microseconds}}}")
    whole = min(seconds + microseconds // USEC_PER_SEC, MAX_TIMEOUT_SECONDS)
    return min(whole + microseconds % USEC_PER_SEC / USEC_PER_SEC, MAX_TIMEOUT_SECONDS)


def split_seconds(seconds: float, per_second: int) -> tuple[int, int]:
    """Seconds as (whole, fraction in 1/*per_second*), clamped to
    ``[0, MAX_TIMEOUT_SECONDS]`` so that both fit a ``timespec``/``timeval``."""
    seconds = min(max(seconds, 0.0), float(MAX_TIMEOUT_SECONDS))
    whole = int(seconds)
    return whole, min(int((seconds - whole) * per_second), per_second - 1)


def write_timespec(proc: Process, address: int, seconds: float) -> None:
    proc.mm.write_struct(address, TIMESPEC.format, *split_seconds(seconds, NSEC_PER_SEC))


def write_timeval(proc: Process, address: int, seconds: float) -> None:
    proc.mm.write_struct(address, TIMEVAL.format, *split_seconds(seconds, USEC_PER_SEC))
