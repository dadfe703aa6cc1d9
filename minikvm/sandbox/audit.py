"""Layer 4 — the denial log: what the policy refused, for ``--audit``.

Every refusal the policy makes is recorded here as a :class:`Denial` and
printed, grouped and counted, when the guest exits (``--audit``).  The log
is bounded: a hostile guest looping on a denied call must not grow host
memory, so past :data:`MAX_RECORDED_DENIALS` denials are only counted.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

#: How many denials are kept for the audit log; the rest are only counted,
#: so a hostile guest looping on a denied call cannot exhaust host memory.
MAX_RECORDED_DENIALS = 1000


@dataclass(frozen=True)
class Denial:
    """One refused request, as kept in :attr:`Policy.denials <minikvm.sandbox.policy.Policy>`."""

    syscall: str
    path: str
    errno: int
    reason: str

    def __str__(self) -> str:
        name = errno.errorcode.get(self.errno, str(self.errno))
        return f"{self.syscall}({self.path}) = -{name} ({self.reason})"


class DenialLog(list[Denial]):
    """The first :data:`MAX_RECORDED_DENIALS` denials, and a count of the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def record(self, denial: Denial) -> None:
        if len(self) < MAX_RECORDED_DENIALS:
            self.append(denial)
        else:
            self.dropped += 1

    def summary(self) -> str:
        """The log grouped and counted, most frequent first."""
        if not self:
            return "sandbox: nothing was denied"
        counts: dict[Denial, int] = {}
        for denial in self:
            counts[denial] = counts.get(denial, 0) + 1
        lines = [f"sandbox: {len(self) + self.dropped} request(s) denied:"]
        for denial, count in sorted(counts.items(), key=lambda item: -item[1]):
            lines.append(f"  {count:5d} x {denial}")
        if self.dropped:
            lines.append(f"  ... and {self.dropped} more not recorded "
                         f"(the log keeps the first {MAX_RECORDED_DENIALS})")
        return "\n".join(lines)


__all__ = ["Denial", "DenialLog", "MAX_RECORDED_DENIALS"]
