"""Layer 6 — ``--trace``: system calls printed the way strace prints them.

::

    openat(AT_FDCWD, "in.txt", O_RDONLY) = 3
    read(3, "hello\\n", 4096) = 6
    openat(AT_FDCWD, "/etc/shadow", O_RDONLY) = -1 ENOENT (hidden: outside allowed paths)

Each argument is shown according to its kind in the table entry
(:class:`~minikvm.syscalls.base.Syscall`); buffers are shown like strace,
at most :data:`STRING_LIMIT` bytes, with ``...`` after a cut.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, TextIO

from minikvm.errors import SyscallError
from minikvm.linux_abi import AT_FDCWD, O_ACCMODE
from minikvm.syscalls.base import Syscall, signed32, signed64

if TYPE_CHECKING:
    from minikvm.process.process import Process

STRING_LIMIT = 32  # strace's default -s

OPEN_ACCESS = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR"}
OPEN_FLAGS = [(0o100, "O_CREAT"), (0o200, "O_EXCL"), (0o400, "O_NOCTTY"), (0o1000, "O_TRUNC"),
              (0o2000, "O_APPEND"), (0o4000, "O_NONBLOCK"), (0o4010000, "O_SYNC"),
              (0o200000, "O_DIRECTORY"), (0o400000, "O_NOFOLLOW"), (0o2000000, "O_CLOEXEC"),
              (0o10000000, "O_PATH"), (0o20200000, "O_TMPFILE")]
PROT_FLAGS = [(1, "PROT_READ"), (2, "PROT_WRITE"), (4, "PROT_EXEC")]
MAP_FLAGS = [(0x01, "MAP_SHARED"), (0x02, "MAP_PRIVATE"), (0x10, "MAP_FIXED"),
             (0x20, "MAP_ANONYMOUS"), (0x40, "MAP_32BIT"), (0x100, "MAP_GROWSDOWN"),
             (0x800, "MAP_DENYWRITE"), (0x1000, "MAP_EXECUTABLE"), (0x4000, "MAP_NORESERVE"),
             (0x8000, "MAP_POPULATE"), (0x20000, "MAP_STACK"), (0x100000, "MAP_FIXED_NOREPLACE")]


def quote(data: bytes, truncated: bool = False) -> str:
    """A byte string as strace shows it: C escapes, ``...`` when cut."""
    escapes = {0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\",
               0x0B: "\\v", 0x0C: "\\f"}
    text = "".join(escapes.get(b, chr(b) if 0x20 <= b < 0x7F else f"\\{b:o}") for b in data)
    return f'"{text}"' + ("..." if truncated else "")


def flag_names(value: int, table: list[tuple[int, str]], zero: str = "0") -> str:
    """``A|B|0x40`` for a bit mask."""
    names = []
    for bit, name in table:
        if value & bit == bit and bit:
            names.append(name)
            value &= ~bit
    if value:
        names.append(hex(value))
    return "|".join(names) or zero


def open_flags(value: int) -> str:
    """``O_WRONLY|O_CREAT|O_TRUNC``"""
    value = signed32(value) & 0xFFFF_FFFF
    rest = flag_names(value & ~O_ACCMODE, OPEN_FLAGS, "")
    access = OPEN_ACCESS.get(value & O_ACCMODE, str(value & O_ACCMODE))
    return access + ("|" + rest if rest else "")


def error_text(result: int, reason: str = "") -> str:
    """``-1 ENOENT (No such file or directory)``, or the denial's reason."""
    err = -result
    name = errno.errorcode.get(err, str(err))
    return f"-1 {name} ({reason or os.strerror(err)})"


class Tracer:
    """Writes one strace-style line per system call to *stream*."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        #: Put before each line: ``"[pid 1001] "`` once the sandbox holds
        #: more than one process (set at a fork, as ``strace -f`` shows it).
        self.prefix = ""

    def _string(self, process: Process, address: int, size: int | None = None) -> str:
        if address == 0:
            return "NULL"
        try:
            if size is None:
                return quote(process.mm.read_cstring(address))
            shown = min(size, STRING_LIMIT)
            return quote(process.mm.read(address, shown), truncated=size > shown)
        except SyscallError:
            return hex(address)

    def format_arg(self, process: Process, kind: str, value: int, next_value: int) -> str:
        """One argument, by its kind."""
        if kind in ("fd", "int"):
            return str(signed32(value))
        if kind == "dirfd":
            return "AT_FDCWD" if signed32(value) == AT_FDCWD else str(signed32(value))
        if kind == "long":
            return str(signed64(value))
        if kind == "path":
            return self._string(process, value)
        if kind == "inbuf":
            return self._string(process, value, next_value)
        if kind in ("hex", "ptr"):
            return "NULL" if value == 0 and kind == "ptr" else hex(value)
        if kind == "oflags":
            return open_flags(value)
        if kind == "mode":
            return f"0{value & 0o7777:o}"
        if kind == "prot":
            return flag_names(value, PROT_FLAGS, "PROT_NONE")
        if kind == "mapflags":
            return flag_names(value, MAP_FLAGS)
        return str(value)

    def before(self, process: Process, entry: Syscall, args: tuple[int, ...]) -> list[str]:
        """Format what can be shown before the call (not the out-buffers)."""
        shown = []
        for i, (kind, value) in enumerate(zip(entry.args, args)):
            following = args[i + 1] if i + 1 < len(args) else 0
            shown.append("" if kind == "outbuf" else self.format_arg(process, kind, value, following))
        return shown

    def after(self, process: Process, entry: Syscall, args: tuple[int, ...],
              shown: list[str] | None, result: int, reason: str) -> None:
        """Finish the line with out-buffers and the result, and write it."""
        shown = list(shown or [])
        for i, kind in enumerate(entry.args):
            if kind == "outbuf":
                shown[i] = (self._string(process, args[i], result) if result >= 0
                            else hex(args[i]))
        result_text = error_text(result, reason) if -4096 < result < 0 else (
            hex(result) if entry.name in ("mmap", "mremap", "brk") else str(result))
        self.stream.write(f"{self.prefix}{entry.name}({', '.join(shown)}) = {result_text}\n")
        self.stream.flush()

    def unfinished(self, entry: Syscall, shown: list[str] | None) -> None:
        """A call that did not return (exit, exit_group): ``= ?`` like strace."""
        self.stream.write(f"{self.prefix}{entry.name}({', '.join(shown or [])}) = ?\n")
        self.stream.flush()

    def unknown(self, number: int) -> None:
        """A number minikvm has no handler for."""
        self.stream.write(f"{self.prefix}syscall_{number}(...) = -1 ENOSYS (unknown to minikvm)\n")
        self.stream.flush()
