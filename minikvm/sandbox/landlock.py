"""Layer 4 — Landlock: the kernel confines the minikvm host process itself.

:mod:`minikvm.sandbox.policy` decides what the *guest* may reach, in Python.  This
module is the second wall, for the day a guest finds a bug in that Python:
after :func:`restrict_self`, the kernel itself refuses the minikvm process
any file outside the grants (plus what Python needs to keep running) and any
TCP connection to a port the policy did not allow, whatever the Python code
asks for.  See the kernel's Documentation/userspace-api/landlock.rst and
landlock(7).

Three system calls, reached through ``syscall(2)`` with ctypes::

    fd = landlock_create_ruleset(&attr, sizeof attr, 0)   what is *handled*
    landlock_add_rule(fd, LANDLOCK_RULE_PATH_BENEATH, &rule, 0)  one per directory
    landlock_add_rule(fd, LANDLOCK_RULE_NET_PORT, &port, 0)      one per TCP port
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)                no setuid gains after this
    landlock_restrict_self(fd, 0)                         irreversible

An access right that is *handled* is denied unless a rule allows it; one that
is not handled is not restricted at all.  So the ruleset handles every right
the running kernel's ABI knows (older kernels know fewer, newer ones more):

=====  =======  ==========================================================
ABI    Linux    adds
=====  =======  ==========================================================
1      5.13     file system: execute, read/write files, read dirs, make/remove
2      5.19     ``REFER``: link or rename into another directory
3      6.2      ``TRUNCATE``
4      6.7      TCP ``bind`` and ``connect`` by port (``handled_access_net``)
5      6.10     ``IOCTL_DEV``: ioctl on device files
6      6.12     ``scoped``: abstract unix sockets and signals stay inside
7      6.15     audit logging flags (not used here)
=====  =======  ==========================================================

What the host process still needs after restriction, and why it works:

* ``/dev/kvm``, the VM and vCPU fds, the grant directory fds and stdio are
  already open: Landlock checks *opening*, never fds opened before.  So
  restrict *after* creating the VM and building the :class:`~minikvm.sandbox.policy.Policy`.
* Python imports modules lazily, so :func:`runtime_read_paths` grants read
  access to the standard library, site-packages, the minikvm package, the
  absolute ``sys.path`` entries and the shared-library directories (an
  extension module may pull in a library through ``ld.so``).  Reading is
  all: no directory gets ``EXECUTE`` (minikvm never runs a program; loading a
  shared library is a read and an mmap, which Landlock does not treat as
  execution).
* A worker that starts a new VM after restriction (``minikvm serve``
  replacing a crashed fork) opens ``/dev/kvm`` again: *devices* grants
  exactly that file, read-write with its ioctls — no new power, since the
  process already holds a ``/dev/kvm`` fd.
* ``/proc`` is not granted.  Call :func:`restrict_self` from the main thread
  before starting any other: Landlock restricts the calling thread and its
  future children only (ABI 8 adds a flag to change that), so this module
  refuses to run when the process already has several threads.

Landlock is coarser than the policy — it filters TCP by port, not by
address, and cannot filter UDP or connecting to a path-named unix socket —
which is why it is the second wall, not the first.
"""

from __future__ import annotations

import ctypes
import errno
import os
import site
import stat
import sys
import sysconfig
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

from minikvm.errors import MinikvmError

PathArg = Union[str, "os.PathLike[str]"]

# --- the kernel interface, spelled as in <linux/landlock.h> -------------------

#: x86-64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
SYS_landlock_create_ruleset = 444
SYS_landlock_add_rule = 445
SYS_landlock_restrict_self = 446

PR_SET_NO_NEW_PRIVS = 38

#: ``landlock_create_ruleset()`` flags.
LANDLOCK_CREATE_RULESET_VERSION = 1 << 0   # return the ABI version instead
LANDLOCK_CREATE_RULESET_ERRATA = 1 << 1    # return the fixed-errata bitmask

#: ``enum landlock_rule_type``.
LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_RULE_NET_PORT = 2

#: File system access rights (``handled_access_fs``, ``allowed_access``).
LANDLOCK_ACCESS_FS_EXECUTE = 1 << 0
LANDLOCK_ACCESS_FS_WRITE_FILE = 1 << 1
LANDLOCK_ACCESS_FS_READ_FILE = 1 << 2
LANDLOCK_ACCESS_FS_READ_DIR = 1 << 3
LANDLOCK_ACCESS_FS_REMOVE_DIR = 1 << 4
LANDLOCK_ACCESS_FS_REMOVE_FILE = 1 << 5
LANDLOCK_ACCESS_FS_MAKE_CHAR = 1 << 6
LANDLOCK_ACCESS_FS_MAKE_DIR = 1 << 7
LANDLOCK_ACCESS_FS_MAKE_REG = 1 << 8
LANDLOCK_ACCESS_FS_MAKE_SOCK = 1 << 9
LANDLOCK_ACCESS_FS_MAKE_FIFO = 1 << 10
LANDLOCK_ACCESS_FS_MAKE_BLOCK = 1 << 11
LANDLOCK_ACCESS_FS_MAKE_SYM = 1 << 12
LANDLOCK_ACCESS_FS_REFER = 1 << 13        # ABI 2
LANDLOCK_ACCESS_FS_TRUNCATE = 1 << 14     # ABI 3
LANDLOCK_ACCESS_FS_IOCTL_DEV = 1 << 15    # ABI 5

#: Network access rights (``handled_access_net``), ABI 4.
LANDLOCK_ACCESS_NET_BIND_TCP = 1 << 0
LANDLOCK_ACCESS_NET_CONNECT_TCP = 1 << 1

#: Scopes (``scoped``), ABI 6.
LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
LANDLOCK_SCOPE_SIGNAL = 1 << 1


class landlock_ruleset_attr(ctypes.Structure):
    """``struct landlock_ruleset_attr`` as of ABI 6 (24 bytes).

    The struct grew: ABI 1-3 know only ``handled_access_fs``, ABI 4 adds
    ``handled_access_net``, ABI 6 ``scoped``.  The kernel accepts a larger
    struct than it knows as long as the unknown tail is zero, so the full
    struct is always passed and only the fields the ABI knows are set.
    (This machine's ``<linux/landlock.h>`` may be older than its kernel.)
    """

    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class landlock_path_beneath_attr(ctypes.Structure):
    """``struct landlock_path_beneath_attr`` — packed, 12 bytes, no padding."""

    _pack_ = 1
    _fields_ = [
        ("allowed_access", ctypes.c_uint64),
        ("parent_fd", ctypes.c_int32),
    ]


class landlock_net_port_attr(ctypes.Structure):
    """``struct landlock_net_port_attr`` (16 bytes), ABI 4."""

    _fields_ = [
        ("allowed_access", ctypes.c_uint64),
        ("port", ctypes.c_uint64),
    ]


#: The file system rights each ABI version knows (each adds to the last).
FS_ACCESS_BY_ABI = {
    1: (1 << 13) - 1,                                 # EXECUTE .. MAKE_SYM
    2: (1 << 14) - 1,                                 # + REFER
    3: (1 << 15) - 1,                                 # + TRUNCATE
    5: (1 << 16) - 1,                                 # + IOCTL_DEV
}

#: The rights that make sense on a file (the others apply to directory contents).
FS_ACCESS_FILE = (LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE
                  | LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_TRUNCATE
                  | LANDLOCK_ACCESS_FS_IOCTL_DEV)

#: What a read grant allows.
READ_ACCESS = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR

#: What a write grant allows: read, plus change and create ordinary things.
#: Never granted anywhere: EXECUTE (minikvm runs no programs), MAKE_CHAR and
#: MAKE_BLOCK (device nodes), IOCTL_DEV (ioctls on devices opened later;
#: /dev/kvm alone gets it, through :data:`DEVICE_ACCESS`).
WRITE_ACCESS = (READ_ACCESS | LANDLOCK_ACCESS_FS_WRITE_FILE
                | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE
                | LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG
                | LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO
                | LANDLOCK_ACCESS_FS_MAKE_SYM | LANDLOCK_ACCESS_FS_REFER
                | LANDLOCK_ACCESS_FS_TRUNCATE)

#: What a device grant allows: open the device for reading and writing and
#: use its ioctls (``IOCTL_DEV``, ABI 5) — for ``/dev/kvm``, whose fd the
#: process already holds, so re-opening it gives no new power.
DEVICE_ACCESS = (LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE
                 | LANDLOCK_ACCESS_FS_IOCTL_DEV)

#: Shared-library locations ``ld.so`` may search when an extension loads.
LIBRARY_PATHS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib",
                 "/etc/ld.so.cache")

#: The minikvm package's own directory (this file is minikvm/sandbox/landlock.py):
#: modules imported late, after confinement, are read from it.
MINIKVM_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int


class LandlockError(MinikvmError):
    """Landlock could not be applied (the message says which step and why)."""


class LandlockUnavailable(LandlockError):
    """This kernel has no usable Landlock (too old, or disabled at boot)."""


def fs_access_for_abi(abi: int) -> int:
    """Every file system right ABI version *abi* knows."""
    known = [rights for version, rights in FS_ACCESS_BY_ABI.items() if version <= abi]
    return max(known, default=0)


def _syscall(number: int, *args: ctypes._SimpleCData) -> tuple[int, int]:
    """Raw ``syscall(number, ...)``; return (result, errno)."""
    result = _libc.syscall(ctypes.c_long(number), *args)
    return int(result), (ctypes.get_errno() if result < 0 else 0)


def abi_version() -> int:
    """The kernel's Landlock ABI version, or 0 when Landlock cannot be used."""
    version, _ = _syscall(SYS_landlock_create_ruleset, ctypes.c_void_p(None),
                          ctypes.c_size_t(0),
                          ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return max(version, 0)


def unavailable_reason() -> str:
    """Why Landlock cannot be used here, or "" when it can."""
    version, err = _syscall(SYS_landlock_create_ruleset, ctypes.c_void_p(None),
                            ctypes.c_size_t(0),
                            ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    if version > 0:
        return ""
    release = os.uname().release
    if err == errno.ENOSYS:
        return (f"kernel {release} has no Landlock (it needs Linux 5.13 or newer "
                "built with CONFIG_SECURITY_LANDLOCK=y)")
    if err == errno.EOPNOTSUPP:
        return (f"kernel {release} has Landlock but it is disabled at boot: add "
                "'landlock' to the lsm= kernel parameter")
    return f"landlock_create_ruleset failed: {errno.errorcode.get(err, err)}"


def available() -> bool:
    """True when this kernel can enforce a Landlock ruleset."""
    return abi_version() > 0


@dataclass(frozen=True)
class LandlockStatus:
    """What :func:`restrict_self` enforced; ``str()`` of it is one line."""

    abi: int
    handled_access_fs: int
    handled_access_net: int
    scoped: int
    read_paths: tuple[str, ...]
    write_paths: tuple[str, ...]
    connect_ports: tuple[int, ...]
    bind_ports: tuple[int, ...]
    skipped: tuple[str, ...] = field(default=())   # runtime paths that do not exist
    notes: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        enforced = ["filesystem"]
        if self.handled_access_net:
            enforced.append("TCP ports")
        if self.scoped:
            enforced.append("scoping")
        text = f"landlock ABI {self.abi}: {' + '.join(enforced)} enforced"
        if not self.handled_access_net:
            text += " (TCP not restricted: needs ABI 4, Linux 6.7)"
        return text


def runtime_read_paths() -> list[str]:
    """What the minikvm process may still need to read after restriction.

    The standard library, site-packages (system and user), the minikvm
    package, absolute ``sys.path`` entries (never ``""``, the current
    directory, which may be the user's home) and the shared-library
    directories.  Paths that do not exist are left for the caller to skip.
    """
    paths: list[str] = []
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        value = sysconfig.get_paths().get(key)
        if value:
            paths.append(value)
    paths.extend(site.getsitepackages())
    paths.append(site.getusersitepackages())
    paths.append(MINIKVM_PACKAGE)
    paths.extend(p for p in sys.path if os.path.isabs(p))
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        paths.append(libdir)
    paths.extend(LIBRARY_PATHS)
    return list(dict.fromkeys(os.path.normpath(p) for p in paths))


def restrict_self(read_paths: Iterable[PathArg], write_paths: Iterable[PathArg] = (),
                  connect_ports: Iterable[int] = (), bind_ports: Iterable[int] = (),
                  extra_read: Optional[Iterable[PathArg]] = None, *,
                  connect_any_port: bool = False,
                  devices: Iterable[PathArg] = (),
                  scope_signals: bool = True,
                  scope_abstract_unix: bool = True) -> LandlockStatus:
    """Restrict this process, irreversibly, to the given paths and TCP ports.

    *read_paths* get ``READ_FILE|READ_DIR``; *write_paths* get
    :data:`WRITE_ACCESS`; *extra_read* (default :func:`runtime_read_paths`)
    gets read access too, silently skipping paths that do not exist;
    *devices* (device files, e.g. ``/dev/kvm``) get :data:`DEVICE_ACCESS`,
    also skipped when missing.  Where
    the ABI is 4 or more, TCP ``connect`` is allowed only to *connect_ports*
    and ``bind`` only to *bind_ports* (both empty: no TCP at all);
    *connect_any_port* leaves TCP ``connect`` to the policy alone (it
    allows some host on every port, or the whole network).  Where it
    is 6 or more, signals to processes outside this sandbox are blocked
    (*scope_signals*) and so are abstract unix sockets created outside it
    (*scope_abstract_unix*; turn it off when the policy allows a
    ``unix:@name`` endpoint).

    Raises :class:`LandlockUnavailable` when the kernel cannot do it and
    :class:`LandlockError` when a step fails; returns a :class:`LandlockStatus`.
    """
    abi = abi_version()
    if abi == 0:
        raise LandlockUnavailable(f"cannot restrict with Landlock: {unavailable_reason()}")
    threads = _thread_count()
    if threads > 1:
        raise LandlockError(
            f"restrict_self must run while the process has one thread, but it has "
            f"{threads}: Landlock restricts only the calling thread, so restrict "
            "before starting any other")
    connect = tuple(sorted({_check_port(p, "connect") for p in connect_ports}))
    bind = tuple(sorted({_check_port(p, "bind") for p in bind_ports}))
    handled_fs = fs_access_for_abi(abi)
    handled_net = (LANDLOCK_ACCESS_NET_BIND_TCP
                   | (0 if connect_any_port else LANDLOCK_ACCESS_NET_CONNECT_TCP)
                   if abi >= 4 else 0)
    scoped = 0
    if abi >= 6:
        scoped = ((LANDLOCK_SCOPE_SIGNAL if scope_signals else 0)
                  | (LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET if scope_abstract_unix else 0))
    notes: list[str] = []
    if abi < 2:
        notes.append("links and renames across directories are refused: ABI 1 "
                     "always denies reparenting")
    if not handled_net and (connect or bind):
        notes.append(f"TCP ports {connect + bind} not enforced: ABI {abi} < 4")

    reads = [os.path.abspath(os.fspath(p)) for p in read_paths]
    writes = [os.path.abspath(os.fspath(p)) for p in write_paths]
    extras = runtime_read_paths() if extra_read is None else [
        os.path.abspath(os.fspath(p)) for p in extra_read]
    device_files = [os.path.abspath(os.fspath(p)) for p in devices]
    skipped = tuple(p for p in (*extras, *device_files) if not os.path.exists(p))

    rules: list[tuple[str, int, int]] = []    # (path, fd, allowed access)
    try:
        for paths, access, required in ((reads, READ_ACCESS, True),
                                        (writes, WRITE_ACCESS, True),
                                        (extras, READ_ACCESS, False),
                                        (device_files, DEVICE_ACCESS, False)):
            for path in paths:
                if not required and path in skipped:
                    continue
                fd = _open_rule_path(path)
                rules.append((path, fd, access & handled_fs))

        _prctl_no_new_privs()
        ruleset_fd, scoped = _create_ruleset(handled_fs, handled_net, scoped, notes)
        try:
            for path, fd, access in rules:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    access &= FS_ACCESS_FILE   # directory rights are EINVAL on a file
                _add_path_rule(ruleset_fd, path, fd, access)
            if handled_net & LANDLOCK_ACCESS_NET_CONNECT_TCP:
                for port in connect:
                    _add_port_rule(ruleset_fd, port, LANDLOCK_ACCESS_NET_CONNECT_TCP)
            if handled_net:
                for port in bind:
                    _add_port_rule(ruleset_fd, port, LANDLOCK_ACCESS_NET_BIND_TCP)
            result, err = _syscall(SYS_landlock_restrict_self, ctypes.c_int(ruleset_fd),
                                   ctypes.c_uint32(0))
            if result < 0:
                raise LandlockError(f"landlock_restrict_self failed: "
                                    f"{errno.errorcode.get(err, err)}: {os.strerror(err)}")
        finally:
            os.close(ruleset_fd)
    finally:
        for _, fd, _ in rules:
            os.close(fd)

    return LandlockStatus(abi, handled_fs, handled_net, scoped, tuple(reads),
                          tuple(writes), connect if handled_net else (),
                          bind if handled_net else (), skipped, tuple(notes))


# --- steps ---------------------------------------------------------------------


def _thread_count() -> int:
    """How many threads this process has (1 if /proc cannot tell)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _check_port(port: int, what: str) -> int:
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise LandlockError(f"{what} port {port!r} is not a TCP port number (0-65535)")
    return port


def _open_rule_path(path: str) -> int:
    try:
        return os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as error:
        raise LandlockError(f"cannot grant {path} to Landlock: {error.strerror} "
                            "(grant a directory that exists)") from None


def _prctl_no_new_privs() -> None:
    """Set no_new_privs: required (without CAP_SYS_ADMIN) and never undone."""
    if _libc.prctl(ctypes.c_int(PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), ctypes.c_ulong(0),
                   ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise LandlockError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(err)}")


def _create_ruleset(handled_fs: int, handled_net: int, scoped: int,
                    notes: list[str]) -> tuple[int, int]:
    """Create the ruleset; return its fd and the scopes actually handled."""
    attr = landlock_ruleset_attr(handled_fs, handled_net, scoped)
    fd, err = _syscall(SYS_landlock_create_ruleset, ctypes.byref(attr),
                       ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    if fd < 0 and err == errno.EINVAL and scoped:
        # Some vendor kernels claim ABI 6 without every scope: retry without.
        notes.append(f"scoping not enforced: the kernel refused scoped={scoped:#x}")
        scoped = 0
        attr.scoped = 0
        fd, err = _syscall(SYS_landlock_create_ruleset, ctypes.byref(attr),
                           ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    if fd < 0:
        raise LandlockError(
            f"landlock_create_ruleset(handled_access_fs={handled_fs:#x}, "
            f"handled_access_net={handled_net:#x}, scoped={scoped:#x}) failed: "
            f"{errno.errorcode.get(err, err)}: {os.strerror(err)}")
    return fd, scoped


def _add_path_rule(ruleset_fd: int, path: str, fd: int, access: int) -> None:
    rule = landlock_path_beneath_attr(allowed_access=access, parent_fd=fd)
    result, err = _syscall(SYS_landlock_add_rule, ctypes.c_int(ruleset_fd),
                           ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule),
                           ctypes.c_uint32(0))
    if result < 0:
        raise LandlockError(f"landlock_add_rule({path}, allowed_access={access:#x}) "
                            f"failed: {errno.errorcode.get(err, err)}: {os.strerror(err)}")


def _add_port_rule(ruleset_fd: int, port: int, access: int) -> None:
    rule = landlock_net_port_attr(allowed_access=access, port=port)
    result, err = _syscall(SYS_landlock_add_rule, ctypes.c_int(ruleset_fd),
                           ctypes.c_int(LANDLOCK_RULE_NET_PORT), ctypes.byref(rule),
                           ctypes.c_uint32(0))
    if result < 0:
        raise LandlockError(f"landlock_add_rule(port {port}, allowed_access={access:#x}) "
                            f"failed: {errno.errorcode.get(err, err)}: {os.strerror(err)}")


__all__: Sequence[str] = [
    "abi_version", "available", "unavailable_reason", "restrict_self", "DEVICE_ACCESS",
    "runtime_read_paths", "LandlockStatus", "LandlockError", "LandlockUnavailable",
]

if __name__ == "__main__":
    reason = unavailable_reason()
    print(f"landlock ABI {abi_version()}" + (f" ({reason})" if reason else ""))
