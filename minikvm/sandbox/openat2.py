"""Layer 4 — openat2(2) and faccessat2(2): path lookups the kernel keeps beneath a directory.

:mod:`minikvm.sandbox.policy` never trusts a string check to keep a guest path inside
a grant; it asks the kernel.  ``openat2`` (Linux 5.6) takes a
``struct open_how`` whose ``resolve`` flags constrain the *whole walk*:
``RESOLVE_BENEATH`` fails with ``EXDEV`` on any step that would leave the
starting directory (``..`` above it, an absolute symlink), and
``RESOLVE_NO_MAGICLINKS`` refuses ``/proc/PID/fd/N``-style jumps.
``faccessat2`` (Linux 5.8) is the ``access`` that accepts ``AT_EMPTY_PATH``,
to ask about a file an ``O_PATH`` fd already holds without a second walk.

Python's ``os`` module has neither call, so they are made here through
libc's ``syscall(2)`` with ctypes, with the open flags they take, named as
in ``<asm-generic/fcntl.h>`` (x86-64 values).  This module is the kernel
interface only; which directory to start from is the policy's business.
"""

from __future__ import annotations

import ctypes
import os

from minikvm.linux_abi import (FASYNC, O_ACCMODE, O_APPEND, O_CLOEXEC, O_CREAT, O_DIRECT,
                               O_DIRECTORY, O_DSYNC, O_EXCL, O_LARGEFILE, O_NOATIME, O_NOCTTY,
                               O_NOFOLLOW, O_NONBLOCK, O_PATH, O_SYNC, O_TMPFILE, O_TRUNC)
# Re-exported: callers of Policy.open spell the access mode with them.
from minikvm.linux_abi import O_RDONLY, O_RDWR, O_WRONLY  # noqa: F401

#: x86-64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
SYS_openat2 = 437
SYS_faccessat2 = 439

#: ``how.resolve`` flags, from ``<linux/openat2.h>``.
RESOLVE_NO_XDEV = 0x01        # no mount-point crossings
RESOLVE_NO_MAGICLINKS = 0x02  # no /proc/PID/fd/N, /proc/PID/root, ... "magic links"
RESOLVE_NO_SYMLINKS = 0x04    # no symlinks at all
RESOLVE_BENEATH = 0x08        # every step must stay beneath dirfd (else EXDEV)
RESOLVE_IN_ROOT = 0x10        # treat dirfd as "/" (chroot-like)
RESOLVE_CACHED = 0x20         # only if the dcache can answer (else EAGAIN)

#: What every guest path is resolved with.
RESOLVE_GUEST = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS



class open_how(ctypes.Structure):
    """``struct open_how`` from ``<linux/openat2.h>`` (24 bytes)."""

    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# open(2) flags as the x86-64 kernel spells them (include/uapi/asm-generic/
# fcntl.h).  Written out rather than taken from ``os`` because the guest uses
# the kernel's values, and glibc's ``O_LARGEFILE`` is 0 in 64-bit userspace.

#: Every flag open(2) knows.  ``openat()`` silently ignores other bits but
#: ``openat2()`` rejects them with EINVAL, so unknown guest bits are dropped
#: first to keep the guest's view the same as ``openat()``'s.
VALID_OPEN_FLAGS = (O_ACCMODE | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_APPEND
                    | O_NONBLOCK | O_DSYNC | FASYNC | O_DIRECT | O_LARGEFILE
                    | O_DIRECTORY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC | O_SYNC
                    | O_PATH | O_TMPFILE)

#: With ``O_PATH`` the kernel ignores every flag but these (openat2 rejects them).
O_PATH_FLAGS = O_DIRECTORY | O_NOFOLLOW | O_PATH | O_CLOEXEC

#: Flags that can change a file, and so need a write grant.  ``O_TMPFILE`` is
#: not among them: its value contains ``O_DIRECTORY``, so a mask test would
#: take every ``O_DIRECTORY`` open for a write; :func:`open_writes` tests it
#: whole.
WRITE_OPEN_FLAGS = O_CREAT | O_TRUNC | O_APPEND


def open_writes(flags: int) -> bool:
    """True if open(2) *flags* can change the file system (need a write grant).

    An access mode of 3, "ioctl only", counts as writing: the conservative
    reading.  ``O_TMPFILE`` (which needs a writable access mode anyway)
    counts only when all its bits are set.
    """
    return (bool(flags & O_ACCMODE) or bool(flags & WRITE_OPEN_FLAGS)
            or flags & O_TMPFILE == O_TMPFILE)


#: How often a lookup that lost a race with a rename (EAGAIN) is retried.
OPENAT2_RETRIES = 8


def openat2(dirfd: int, path: bytes, flags: int, mode: int = 0,
            resolve: int = RESOLVE_GUEST) -> int:
    """Call ``openat2(dirfd, path, &how, sizeof how)``; return the new fd.

    Raises the ``OSError`` the kernel returned (``EXDEV`` when
    ``RESOLVE_BENEATH`` caught an escape, ``ENOSYS`` before Linux 5.6).
    """
    how = open_how(flags=flags, mode=mode, resolve=resolve)
    fd = _libc.syscall(ctypes.c_long(SYS_openat2), ctypes.c_int(dirfd),
                       ctypes.c_char_p(path), ctypes.byref(how),
                       ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fsdecode(path))
    return int(fd)


def faccessat2(dirfd: int, path: bytes, mode: int, flags: int) -> None:
    """Call ``faccessat2(2)`` (Linux 5.8); raise the ``OSError`` on failure.

    Python's ``os.access`` cannot pass ``AT_EMPTY_PATH``, which is how we
    ask about the file an ``O_PATH`` fd already holds, without a second walk.
    """
    result = _libc.syscall(ctypes.c_long(SYS_faccessat2), ctypes.c_int(dirfd),
                           ctypes.c_char_p(path), ctypes.c_int(mode),
                           ctypes.c_int(flags))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
