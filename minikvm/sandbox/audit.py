"""Layer 4 — denials: the errnos of a refusal, the exception that carries it, and the log.

Every refusal the policy makes is a :class:`PolicyDenied` (an ordinary
:class:`~minikvm.errors.SyscallError`, so the dispatcher turns it into
``-errno``) with one of three errnos — hidden, denied, refused — and is
recorded as a :class:`Denial`, printed grouped and counted when the guest
exits (``--audit``).  The log is bounded: a hostile guest looping on a
denied call must not grow host memory, so past :data:`MAX_RECORDED_DENIALS`
denials are only counted.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from minikvm.errors import SyscallError

#: The errno of a write the policy does not allow, or an endpoint outside it.
DENIED_ERRNO = errno.EACCES

#: The errno of a path outside every grant: it does not exist for the guest.
HIDDEN_ERRNO = errno.ENOENT

#: The errno of an operation refused whatever its arguments.
REFUSED_ERRNO = errno.EPERM

#: Operations the syscall layer refuses with :data:`REFUSED_ERRNO`, and why.
#: This table is the one place the documentation cites; the syscall layer
#: raises them with :meth:`Policy.refuse` so they appear in the audit log.
#: (kill, tkill and tgkill are refused only when aimed outside the sandbox.)
REFUSED_SYSCALLS = {
    "fork":              "a process alone has no tree of processes (only minikvm run gives one)",
    "vfork":             "a process alone has no tree of processes (only minikvm run gives one)",
    "clone":             "a process alone has no tree of processes (only minikvm run gives one)",
    "clone3":            "a process alone has no tree of processes (only minikvm run gives one)",
    "ptrace":            "there is no other process to trace",
    "process_vm_readv":  "there is no other process to read",
    "process_vm_writev": "there is no other process to write",
    "kill":              "signals may go only to the sandbox's own processes",
    "tkill":             "signals may go only to the sandbox's own processes",
    "tgkill":            "signals may go only to the sandbox's own processes",
    "mount":             "the guest cannot change the host's mounts",
    "umount2":           "the guest cannot change the host's mounts",
    "pivot_root":        "the guest cannot change the host's mounts",
    "chroot":            "the guest's root is the host's root, filtered by this policy",
}

#: How many denials are kept for the audit log; the rest are only counted,
#: so a hostile guest looping on a denied call cannot exhaust host memory.
MAX_RECORDED_DENIALS = 1000


class PolicyDenied(SyscallError):
    """The policy refused a guest request; the guest gets ``-errno``.

    ``errno`` is :data:`HIDDEN_ERRNO` (a path outside the grants, when
    *hidden*), :data:`DENIED_ERRNO` (not allowed), :data:`REFUSED_ERRNO`
    (refused outright) or a limit's errno (``EMFILE``, ``EFBIG``); ``reason``
    is the short text ``--trace`` prints, starting with ``hidden:`` or
    ``denied:``, so a policy answer stands out from the host kernel's own
    errors (``= -1 ENOENT (hidden: outside allowed paths)``); ``path`` is
    what was asked for.
    """

    def __init__(self, err: int, reason: str, path: str = "", hidden: bool = False) -> None:
        if hidden:
            shown = f"hidden: {reason}"
        elif err in (DENIED_ERRNO, REFUSED_ERRNO):
            shown = f"denied: {reason}"
        else:
            shown = reason
        super().__init__(err, shown)
        self.hidden = hidden
        self.path = path
        self.detail = reason

    def __str__(self) -> str:
        name = errno.errorcode.get(self.errno, str(self.errno))
        where = f"{self.path}: " if self.path else ""
        return f"{name}: {where}{self.detail}"


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


__all__ = ["Denial", "DenialLog", "PolicyDenied", "REFUSED_SYSCALLS", "MAX_RECORDED_DENIALS",
           "DENIED_ERRNO", "HIDDEN_ERRNO", "REFUSED_ERRNO"]
