"""Layer 6 — execve and execveat: the system calls that load a new program.

The handlers copy the caller's arguments out of guest memory — the path,
and argv and envp, each a NULL-terminated array of pointers to strings —
with every bound Linux has (fs/exec.c ``copy_strings``): a string of at
most ``MAX_ARG_STRLEN`` bytes, all of them with their pointers within
:data:`~minikvm.process.exec.ARG_SPACE` (2 MiB), else ``E2BIG``; a pointer
that is not mapped, or a string that runs into unmapped memory, ``EFAULT``.
So a hostile argv costs the host at most 2 MiB, whatever its length.

The rest is :mod:`minikvm.process.exec`: find and check the file in the
view, follow ``#!``, parse the ELF (``-errno`` to the old program on any
failure), then replace the image.  Here, past that point, the signal
handlers are reset as ``flush_signal_handlers`` resets them (a caught
signal's action goes back to the default, an ignored one stays ignored,
flags and masks cleared; the blocked mask and pending signals stay), and
the registers are loaded with the new entry: every general register zero
(``ELF_PLAT_INIT``), RIP at the entry, RSP at argc.  Like ``rt_sigreturn``
the call then does not return the usual way: it raises
:class:`~minikvm.machine.stops.RegistersLoaded`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import struct
from typing import TYPE_CHECKING

from minikvm import ioctl as k, x86
from minikvm.errors import SyscallError
from minikvm.linux_abi import (AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW, MAX_ARG_STRINGS,
                               PATH_MAX)
from minikvm.machine.stops import RegistersLoaded
from minikvm.process import exec as exec_image
from minikvm.process.fdtable import HostFile
from minikvm.process.stack import MAX_ARG_STRLEN
from minikvm.syscalls import procfs
from minikvm.syscalls.base import PARTIAL, Syscall, signed32
from minikvm.syscalls.files import guest_path
from minikvm.syscalls.signals import SIG_IGN, refresh_work
from minikvm.x86 import PAGE_SIZE

if TYPE_CHECKING:
    from minikvm.process.process import Process

POINTER_SIZE = 8


def read_string_array(proc: Process, address: int, budget: list[int], what: str) -> list[bytes]:
    """The strings of a NULL-terminated ``char *[]`` at *address* (NULL:
    none, as Linux takes a NULL argv or envp since 5.18, with a warning).
    *budget* is ``[bytes left]``, shared by argv and envp: each string
    takes its length, its NUL and its pointer, and ``E2BIG`` comes as soon
    as it runs out — before the host reads further.  The pointer array is
    read one page at a time, so an array that runs into unmapped memory is
    ``EFAULT`` where it does."""
    strings: list[bytes] = []
    if address == 0:
        return strings
    mm = proc.mm
    while True:
        # the pointers up to the end of this page (one, if it straddles two)
        count = max(1, (PAGE_SIZE - address % PAGE_SIZE) // POINTER_SIZE)
        try:
            raw = mm.read(address, count * POINTER_SIZE)
        except SyscallError:
            raise SyscallError(errno.EFAULT, f"{what}[{len(strings)}] at {address:#x} "
                               "is not readable") from None
        for pointer in struct.unpack(f"<{count}Q", raw):
            if pointer == 0:
                return strings
            if len(strings) >= MAX_ARG_STRINGS or budget[0] < POINTER_SIZE + 1:
                raise SyscallError(errno.E2BIG, f"{what} and the rest need more than "
                                   f"{exec_image.ARG_SPACE} bytes")
            try:
                # (read_cstring's limit counts the NUL: a string of up to
                # limit - 1 bytes comes back)
                string = mm.read_cstring(pointer, min(MAX_ARG_STRLEN,
                                                      budget[0] - POINTER_SIZE))
            except SyscallError as error:
                if error.errno != errno.ENAMETOOLONG:
                    raise SyscallError(errno.EFAULT, f"{what}[{len(strings)}] = {pointer:#x} "
                                       "is not a readable string") from None
                raise SyscallError(errno.E2BIG, f"{what}[{len(strings)}] is longer than "
                                   f"MAX_ARG_STRLEN ({MAX_ARG_STRLEN}) or than the room "
                                   f"left for arguments") from None
            budget[0] -= len(string) + 1 + POINTER_SIZE
            strings.append(string)
        address += count * POINTER_SIZE


def read_arguments(proc: Process, argv: int, envp: int) -> tuple[list[bytes], list[bytes]]:
    """argv and envp, within :data:`~minikvm.process.exec.ARG_SPACE` together."""
    budget = [exec_image.ARG_SPACE]
    arguments = read_string_array(proc, argv, budget, "argv")
    environment = read_string_array(proc, envp, budget, "envp")
    return arguments, environment


def sys_execve(proc: Process, path: int, argv: int, envp: int) -> int:
    """execve(2): run a new program in this process (see the module docstring)."""
    return sys_execveat(proc, AT_FDCWD & 0xFFFF_FFFF, path, argv, envp, 0)


def sys_execveat(proc: Process, dirfd: int, path: int, argv: int, envp: int, flags: int) -> int:
    """execveat(2): *path* from *dirfd*; with ``AT_EMPTY_PATH`` and an empty
    path, the file *dirfd* itself is run (``fexecve``) — the policy
    approved it when it was opened; with ``AT_SYMLINK_NOFOLLOW`` a final
    symlink is ``ELOOP``."""
    flags = signed32(flags)
    if flags & ~(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW):
        raise SyscallError(errno.EINVAL, f"execveat: unknown flags {flags:#x}")
    raw = proc.mm.read_cstring(path, PATH_MAX)
    arguments, environment = read_arguments(proc, argv, envp)
    if not raw and flags & AT_EMPTY_PATH:
        new = _prepare_fd(proc, signed32(dirfd), arguments, environment)
    else:
        if not raw:
            raise SyscallError(errno.ENOENT, "execve: empty path")
        where = guest_path(proc, dirfd, raw)
        where, file = _through_proc(proc, where, follow=not flags & AT_SYMLINK_NOFOLLOW)
        if file is not None:
            new = _prepare_host_file(proc, file, raw, arguments, environment)
        else:
            new = exec_image.prepare(proc, where, raw, arguments, environment,
                                     follow=not flags & AT_SYMLINK_NOFOLLOW)
    # -- the point of no return --
    if proc.family is not None:
        proc.family.give_back_memory(proc)   # a vfork child's stores reach its parent
    entry, stack_pointer = exec_image.replace_image(proc, new)
    reset_signal_handlers(proc)
    if proc.family is not None:
        proc.family.executed(proc)     # a vfork parent goes on (minikvm.tree.family)
    machine = proc.machine
    machine.enter_user_mode()
    regs = machine.vcpu.run_state.s.regs.regs
    ctypes.memset(ctypes.addressof(regs), 0, ctypes.sizeof(k.kvm_regs))
    regs.rip, regs.rsp, regs.rflags = entry, stack_pointer, x86.RFLAGS_FIXED
    refresh_work(proc)
    raise RegistersLoaded()


def _through_proc(proc: Process, path: str, follow: bool) -> tuple[str, HostFile | None]:
    """*path*, or where a link of the synthesized /proc leads: ``/proc/self/exe``
    to the program's path in the view, ``/proc/self/fd/N`` (and ``/dev/fd/N``)
    to the open file itself.  Anything else of /proc is not a program: EACCES."""
    absolute = posixpath.normpath(path)
    if not procfs.owns(absolute):
        return path, None
    found = procfs.lookup(proc, absolute, follow=follow)
    if isinstance(found, procfs.Redirect):
        return found.path, None
    if isinstance(found, procfs.OwnFd):
        file = proc.fds.get(found.fd)
        if isinstance(file, HostFile) and file.host_fd is not None:
            return path, file
    if not follow and found is not None:
        raise SyscallError(errno.ELOOP, f"{path}: a link, and AT_SYMLINK_NOFOLLOW was given")
    raise SyscallError(errno.EACCES, f"{path}: not a program file")


def _prepare_fd(proc: Process, dirfd: int, arguments: list[bytes],
                environment: list[bytes]) -> exec_image.ExecImage:
    """``execveat(fd, "", …, AT_EMPTY_PATH)``: the open file *dirfd* is the program."""
    if dirfd == AT_FDCWD:
        raise SyscallError(errno.EACCES, "execveat: AT_FDCWD with an empty path is the "
                           "working directory, not a program")
    file = proc.fds.get(dirfd)
    if not isinstance(file, HostFile) or file.host_fd is None:
        raise SyscallError(errno.EACCES, f"execveat: fd {dirfd} ({file.kind}) is not a file")
    return _prepare_host_file(proc, file, os.fsencode(f"/dev/fd/{dirfd}"), arguments,
                              environment)


def _prepare_host_file(proc: Process, file: HostFile, execfn: bytes, arguments: list[bytes],
                       environment: list[bytes]) -> exec_image.ExecImage:
    """A program already open in the fd table (fexecve, /proc/self/fd/N)."""
    name = file.path if file.path.startswith("/") else os.fsdecode(execfn)
    return exec_image.prepare(proc, name, execfn, arguments, environment,
                              fd=file.host_fd, fd_path=name)


def reset_signal_handlers(proc: Process) -> None:
    """``flush_signal_handlers(current, 0)``: every caught signal back to
    its default; an ignored one stays ignored; flags, restorer and mask
    cleared.  The blocked mask and the pending signals stay, as on Linux."""
    proc.signal_actions = {sig: (SIG_IGN, 0, 0, 0)
                           for sig, action in proc.signal_actions.items()
                           if action[0] == SIG_IGN}


EXEC_NOTE = ("in the same host process: a new image in the same guest memory; "
             "#! scripts, static, static-PIE and dynamic ELF")

SYSCALLS = [
    Syscall(59, "execve", sys_execve, ("path", "ptr", "ptr"), PARTIAL, EXEC_NOTE),
    Syscall(322, "execveat", sys_execveat, ("dirfd", "path", "ptr", "ptr", "hex"), PARTIAL,
            EXEC_NOTE + "; AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW"),
]
