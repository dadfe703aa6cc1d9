"""Layer 4 — confinement: the kernel's walls around the minikvm process itself.

The guest never makes a host system call: every ``syscall`` it executes
exits the VM and is emulated in Python, and :mod:`minikvm.sandbox.policy` decides
which files and endpoints that Python may reach for it.  This module is for
the day that Python has a bug a hostile guest can exploit.  Right before the
guest's first instruction, :func:`confine` asks the host kernel to hold the
minikvm process to the same policy, so that even a minikvm taken over by
its guest cannot reach more than the guest was granted::

    read the program       its bytes only: nothing parses them yet
    Machine()              /dev/kvm, VM and vCPU fds open,
                           grant directories held open by the Policy
    confine(policy)        Landlock: only the grants (+ what Python reads to
          |                keep running, + /dev/kvm) and the allowed TCP ports
          |                seccomp: no exec, fork, ptrace, mount, bpf, ...
    Process.spawn()        the ELF (a hostile file) parsed and loaded:
          |                already inside the walls
    process.run()          the guest's first instruction

The order matters.  Both walls are irreversible and inherited, and both
check *new* operations only: fds opened before (``/dev/kvm``, the VM, the
guest memory's memfd, the grant directories, a ``--trace`` file) keep
working, which is exactly what the run needs and nothing more.

Every command that runs a guest raises the walls the same way:

``minikvm run``
    as above.
``minikvm serve``
    the listening socket is bound, the machine created, then
    ``confine(policy, allow_fork=True)``; the program is parsed, started and
    snapshotted at its first request inside the walls.  The server forks its
    workers, so its filter lets ``clone`` make processes (never ``execve``);
    each worker, right after the fork, stacks the strict filter with
    :func:`confine_worker` before it accepts a connection.
``minikvm snapshot save``
    the output file is created (``FILE.PID.partial``) and the program read,
    then a child process confines itself, runs the program to its first
    request and writes the snapshot into that open file; the parent, which
    never runs guest code, renames it into place (or removes it).
``minikvm snapshot run`` and ``serve --from-snapshot``
    the file is opened and its header checked (size, magic, version,
    checksum, and the policy it records), the walls go up under that
    policy, and only then are the stored program parsed and the memory and
    files restored.

A new VM after confinement (a worker replacing a crashed fork) opens
``/dev/kvm`` again, so Landlock grants that one device file (read, write,
ioctl): no new power, as the process already holds a ``/dev/kvm`` fd.

Each wall is skipped, with a warning, where the kernel lacks it (Landlock
needs Linux 5.13, TCP ports 6.7; seccomp filters need 4.14): the policy
still confines the guest, only the second wall is missing.  Any *other*
failure is an error — a sandbox that was asked for and could not be built
must not run the guest quietly without it.

See :doc:`/explanation/security-model` for how the layers relate.
"""

from __future__ import annotations

import os
import site
import socket
import sysconfig
from dataclasses import dataclass, field
from typing import Optional

from minikvm.sandbox import landlock

from minikvm.errors import MinikvmError
from minikvm.kvm.system import KVM_DEVICE
from minikvm.sandbox import seccomp
from minikvm.sandbox.policy import Policy


class ConfineError(MinikvmError):
    """A wall the kernel supports could not be raised (the message says why)."""


@dataclass(frozen=True)
class Confinement:
    """What :func:`confine` enforced, and what it had to skip."""

    landlock: Optional[landlock.LandlockStatus]
    seccomp: Optional[seccomp.SeccompStatus]
    warnings: tuple[str, ...] = field(default=())

    @property
    def complete(self) -> bool:
        """True when both walls are up."""
        return self.landlock is not None and self.seccomp is not None

    def __str__(self) -> str:
        lines = [str(self.landlock) if self.landlock else "landlock: not enforced",
                 str(self.seccomp) if self.seccomp else "seccomp: not enforced"]
        if self.landlock:
            lines.extend(f"landlock: {note}" for note in self.landlock.notes)
        return "\n".join(lines)


def landlock_read_paths() -> list[str]:
    """What the minikvm process may read after confinement, besides the grants.

    :func:`minikvm.sandbox.landlock.runtime_read_paths` (the standard library,
    site-packages, the minikvm package, shared libraries) minus the current
    directory: ``python -m`` puts it on ``sys.path``, but minikvm imports
    nothing from it, and it is the directory a user is most likely *not* to
    grant (``--here`` grants it explicitly when wanted).  Unless, that is,
    the current directory *is* one of the places Python imports from.
    """
    cwd = os.path.normpath(os.getcwd())
    needed = {os.path.normpath(path) for path in (*sysconfig.get_paths().values(),
                                                  *site.getsitepackages(),
                                                  landlock.MINIKVM_PACKAGE)}
    return [path for path in landlock.runtime_read_paths() if path != cwd or path in needed]


def _abstract_unix_allowed(policy: Policy) -> bool:
    """True when the policy allows an abstract unix socket (``unix:@name``)."""
    return any(e.family == socket.AF_UNIX and e.path.startswith("@")
               for e in policy.endpoints)


def confine(policy: Policy, *, use_landlock: bool = True,
            use_seccomp: bool = True, allow_fork: bool = False) -> Confinement:
    """Hold this process to *policy* with Landlock and seccomp, irreversibly.

    Call it once, from the main thread, after everything the run needs is
    open and before the guest runs.  Landlock grants the policy's read and
    write directories, read access to :func:`landlock_read_paths`, TCP
    connect to the ports of the policy's IP endpoints (any port when one
    allows every port) and TCP bind to its listening ports;
    seccomp installs :func:`minikvm.sandbox.seccomp.build_filter`'s deny list
    (*allow_fork*: its variant for a supervisor that forks workers, each of
    which must then call :func:`confine_worker`).  Landlock also grants
    ``/dev/kvm`` (see the module docstring).  *use_landlock* /
    *use_seccomp* turn a wall off (for tests and for measuring what each
    costs).

    Returns a :class:`Confinement`; its ``warnings`` say which wall the
    kernel could not provide.  Raises :class:`ConfineError` when a wall the
    kernel supports fails to go up.
    """
    warnings: list[str] = []
    landlock_status = None
    seccomp_status = None
    if use_landlock:
        try:
            landlock_status = landlock.restrict_self(
                policy.read_paths, policy.write_paths,
                connect_ports=policy.connect_ports, bind_ports=policy.listen_ports,
                connect_any_port=policy.connect_any_port,
                extra_read=landlock_read_paths(), devices=(KVM_DEVICE,),
                scope_abstract_unix=not _abstract_unix_allowed(policy))
        except landlock.LandlockUnavailable as error:
            warnings.append(f"{error}; the policy still confines the guest, but the "
                            "minikvm process itself is not restricted by the kernel")
        except landlock.LandlockError as error:
            raise ConfineError(f"cannot confine minikvm with Landlock: {error}") from None
        else:
            if not landlock_status.handled_access_net and policy.connect_ports:
                warnings.append(f"Landlock ABI {landlock_status.abi} cannot filter TCP "
                                "ports (needs Linux 6.7): connections are checked by the "
                                "policy only")
    if use_seccomp:
        if not seccomp.available():
            warnings.append(f"seccomp filters are unavailable on kernel "
                            f"{os.uname().release} (need Linux 4.14 with "
                            "CONFIG_SECCOMP_FILTER); the minikvm process can still "
                            "call execve, fork, ptrace ...")
        else:
            try:
                seccomp_status = seccomp.install(allow_fork=allow_fork)
            except seccomp.SeccompError as error:
                raise ConfineError(f"cannot confine minikvm with seccomp: {error}") from None
    return Confinement(landlock_status, seccomp_status, tuple(warnings))


def confine_worker(supervisor: Confinement) -> Confinement:
    """In a process forked by a supervisor confined with ``allow_fork=True``:
    stack the strict seccomp filter, so the worker cannot fork.

    Landlock needs nothing more (a child inherits its parent's domain).
    Where the supervisor had no seccomp filter (kernel without it, or
    ``use_seccomp=False``), nothing is installed.  Raises
    :class:`ConfineError` when the filter cannot be installed.
    """
    if supervisor.seccomp is None:
        return supervisor
    try:
        status = seccomp.install()
    except seccomp.SeccompError as error:
        raise ConfineError(f"cannot confine the worker with seccomp: {error}") from None
    return Confinement(supervisor.landlock, status, supervisor.warnings)


__all__ = ["confine", "confine_worker", "Confinement", "ConfineError", "landlock_read_paths"]
