"""Layer 5 — execve: a new program image in the same process.

Linux's ``execve`` (fs/exec.c) has two halves, and so has this module.

**Before the point of no return** everything is checked and read, and any
failure is an errno returned to the old program, which goes on as if
nothing happened:

* the file is found in the sandbox's view (:func:`find_executable`: the
  same walk as the dynamic loader's, :func:`~minikvm.process.interpreter.resolve_in_view`,
  every component asked of the policy; outside the grants it does not
  exist: ``ENOENT``), must be a regular file (``EACCES`` for a directory)
  with an execute bit the caller's ids allow (``EACCES``);
* its first :data:`~minikvm.linux_abi.BINPRM_BUF_SIZE` bytes choose the
  format (``search_binary_handler``): ``#!`` is a script
  (:func:`parse_shebang`, as fs/binfmt_script.c), whose interpreter is
  looked up in turn — at most :data:`MAX_REWRITES` rewrites, then
  ``ELOOP`` as ``exec_binprm`` answers; ``\\x7fELF`` is a program, parsed
  (:func:`~minikvm.process.process.parse_program`) with its ``PT_INTERP``
  read through the view; anything else is ``ENOEXEC``.

The result is an :class:`ExecImage`.  **After the point of no return**
(:func:`replace_image`, ``begin_new_exec`` and ``load_elf_binary``'s second
half) the old program is gone: the other threads are dropped, every mapping
is unmapped, the patched system-call sites are forgotten, ``O_CLOEXEC``
fds are closed, and the new image is loaded by the same loader as the
first program's (:meth:`Process.load <minikvm.process.process.Process.load>`).
A failure there — memory too small for the new segments, say — cannot
return to a program that no longer exists: like Linux, the process dies
of ``SIGSEGV``.

All of it stays in the one host process: no host ``execve``, no new VM,
the same guest memory, the same :class:`~minikvm.machine.mm.AddressSpace`
object (the run loop holds it in a local), emptied in place.
"""

from __future__ import annotations

import errno
import os
import posixpath
import signal as signal_module
import stat as stat_module
from dataclasses import dataclass
from typing import TYPE_CHECKING

from minikvm import ioctl as k
from minikvm.cpu.layout import STACK_SIZE
from minikvm.errors import ElfError, MinikvmError, SyscallError
from minikvm.linux_abi import BINPRM_BUF_SIZE, O_RDONLY
from minikvm.machine.machine import FCW_DEFAULT, MXCSR_DEFAULT
from minikvm.machine.stops import ProcessKilled
from minikvm.process.elf import ELF_MAGIC, ElfImage
from minikvm.process.interpreter import InterpreterError, read_interpreter, resolve_in_view
from minikvm.process.process import TASK_COMM_LEN, parse_program
from minikvm.process.threads import ThreadTable
from minikvm.sandbox.policy import PolicyDenied

if TYPE_CHECKING:
    from minikvm.process.process import Process

#: How many times a file may hand over to an interpreter (``#!``) before
#: ``ELOOP``: fs/exec.c's ``exec_binprm`` stops at ``depth > 5`` ("4 levels
#: of binfmt rewrites" in its comment, counted from the program the caller named).
MAX_REWRITES = 5
#: The room argv and envp may take, strings and pointers together: a quarter
#: of the stack limit (``bprm_stack_limits`` in fs/exec.c: ``rlim_stack / 4``
#: = 2 MiB under the usual 8 MiB).  More is ``E2BIG``.
ARG_SPACE = STACK_SIZE // 4
#: The largest program file read: what it loads must fit the guest's memory
#: anyway, and the host holds the whole file while it loads it.
MAX_PROGRAM_SIZE = 256 << 20
#: The shebang's separators (fs/binfmt_script.c's ``spacetab``).
SPACE_TAB = b" \t"


@dataclass
class ExecImage:
    """Everything found before the point of no return: the program, its
    interpreter's file, and the argv/envp the new image starts with."""
    image: ElfImage
    interpreter_file: tuple[str, bytes] | None
    #: The program file's path in the view (``/proc/self/exe``).
    path: str
    #: What the caller passed as the file name (``AT_EXECFN``).
    execfn: bytes
    argv: list[bytes]
    env: list[bytes]
    #: The new ``comm``: the base name of the name the caller passed (of a
    #: script, not of its interpreter), or of the file an fd names.
    comm: bytes


def _fail(err: int, reason: str) -> SyscallError:
    return SyscallError(err, reason)


def find_executable(proc: Process, path: str, *, follow: bool = True) -> str:
    """The view's path of the file *path* names (absolute, or from the
    working directory), symlinks followed through the policy.  Errno as
    execve: ``ENOENT`` outside the grants, ``ELOOP`` for too many links
    (or, without *follow*, a final symlink), ``ENOTDIR``."""
    try:
        return resolve_in_view(proc.policy, path, proc.cwd, path, follow_last=follow,
                               about=f"execve {path!r}")
    except InterpreterError as error:
        raise _fail(error.errno, str(error)) from None


def open_executable(proc: Process, resolved: str) -> int:
    """A host fd on *resolved* (a path :func:`find_executable` returned),
    checked as ``do_open_execat`` and ``may_open`` check it: a regular file
    (``EACCES`` for a directory or a device) with an execute bit for the
    caller.  The caller closes it."""
    try:
        fd = proc.policy.open(resolved, O_RDONLY, 0, "/", syscall="execve")
    except PolicyDenied:
        raise
    except OSError as error:
        raise _fail(error.errno or errno.EACCES, f"{resolved}: {error.strerror}") from None
    try:
        check_executable(os.fstat(fd), resolved)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_executable(st: os.stat_result, name: str) -> None:
    """``EACCES`` unless *st* is a regular file the caller may execute: the
    owner's, group's or others' x bit, chosen by the host ids the guest has
    (root needs any x bit, as ``generic_permission`` grants it)."""
    if not stat_module.S_ISREG(st.st_mode):
        what = "a directory" if stat_module.S_ISDIR(st.st_mode) else "not a regular file"
        raise _fail(errno.EACCES, f"{name} is {what}")
    uid = os.getuid()
    if uid == 0:
        allowed = bool(st.st_mode & 0o111)
    elif st.st_uid == uid:
        allowed = bool(st.st_mode & stat_module.S_IXUSR)
    elif st.st_gid == os.getgid() or st.st_gid in os.getgroups():
        allowed = bool(st.st_mode & stat_module.S_IXGRP)
    else:
        allowed = bool(st.st_mode & stat_module.S_IXOTH)
    if not allowed:
        raise _fail(errno.EACCES, f"{name} is not executable (mode {st.st_mode & 0o7777:o})")


def read_head(fd: int) -> bytes:
    """The file's first :data:`BINPRM_BUF_SIZE` bytes (``bprm->buf``)."""
    return os.pread(fd, BINPRM_BUF_SIZE, 0)


def read_whole(fd: int, name: str) -> bytes:
    """The whole program file, at most :data:`MAX_PROGRAM_SIZE` bytes
    (``ENOMEM`` beyond it: it could not be loaded)."""
    size = os.fstat(fd).st_size
    if size > MAX_PROGRAM_SIZE:
        raise _fail(errno.ENOMEM, f"{name} is {size} bytes; minikvm loads programs of at "
                    f"most {MAX_PROGRAM_SIZE >> 20} MiB")
    chunks, total = [], 0
    while total <= MAX_PROGRAM_SIZE and (chunk := os.pread(fd, 1 << 20, total)):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)[:MAX_PROGRAM_SIZE + 1]


def parse_shebang(head: bytes) -> tuple[bytes, bytes | None]:
    """The interpreter and its optional argument of a ``#!`` line, exactly as
    fs/binfmt_script.c's ``load_script`` cuts it out of *head* (the file's
    first :data:`BINPRM_BUF_SIZE` bytes): the line ends at the first
    newline; with none in the buffer, the name must end inside it (a space,
    tab or NUL after it) or the file is refused (``ENOEXEC``: "the
    interpreter path is truncated"); leading and trailing spaces and tabs
    go; the interpreter ends at the first space, tab or NUL; the argument is
    the rest of the line after the blanks that follow (spaces inside it kept).
    """
    buf = head.ljust(BINPRM_BUF_SIZE, b"\0")
    buf_end = BINPRM_BUF_SIZE - 1      # the kernel keeps the last byte for a NUL
    newline = buf.find(b"\n", 0, BINPRM_BUF_SIZE)
    if newline < 0:
        start = _next_non_spacetab(buf, 2, buf_end)
        if start is None:
            raise _fail(errno.ENOEXEC, "#! line of only spaces and tabs")
        if _next_terminator(buf, start, buf_end) is None:
            raise _fail(errno.ENOEXEC, f"#! line longer than {BINPRM_BUF_SIZE} bytes "
                        "(the interpreter's name would be cut)")
        end = buf_end
    else:
        end = newline
    while end > 2 and buf[end - 1:end] in (b" ", b"\t"):
        end -= 1
    name = _next_non_spacetab(buf, 2, end)
    if name is None or name == end:
        raise _fail(errno.ENOEXEC, "#! line names no interpreter")
    separator = _next_terminator(buf, name, end)
    argument = None
    if separator is not None and buf[separator] != 0:
        first = _next_non_spacetab(buf, separator, end)
        if first is not None:
            argument = buf[first:end]
    interpreter = buf[name:separator if separator is not None else end]
    if argument is not None and b"\0" in argument:
        argument = argument[:argument.index(b"\0")]   # a C string ends at its NUL
    return interpreter, argument


def _next_non_spacetab(buf: bytes, start: int, end: int) -> int | None:
    for index in range(start, end):
        if buf[index:index + 1] not in (b" ", b"\t"):
            return index
    return None


def _next_terminator(buf: bytes, start: int, end: int) -> int | None:
    for index in range(start, end):
        if buf[index:index + 1] in (b" ", b"\t", b"\0"):
            return index
    return None


def check_arg_space(argv: list[bytes], env: list[bytes]) -> None:
    """``E2BIG`` when the strings (with their NULs) and pointers of *argv*
    and *env* need more than :data:`ARG_SPACE` (rechecked after a script
    adds its interpreter's words, as ``copy_string_kernel`` does)."""
    need = sum(len(s) + 1 for s in argv) + sum(len(s) + 1 for s in env)
    need += 8 * (len(argv) + len(env))
    if need > ARG_SPACE:
        raise _fail(errno.E2BIG, f"argv and envp need {need} bytes; at most {ARG_SPACE}")


def prepare(proc: Process, path: str, execfn: bytes, argv: list[bytes], env: list[bytes],
            *, follow: bool = True, fd: int | None = None, fd_path: str | None = None) -> ExecImage:
    """Everything before the point of no return: find the file (or take the
    host *fd* of an ``execveat(AT_EMPTY_PATH)``, named *fd_path* in the
    view), follow ``#!`` interpreters, parse the ELF and read its
    ``PT_INTERP``.  *execfn* is the name the caller gave (``AT_EXECFN``, and
    the script's name in its interpreter's argv).  Raises SyscallError."""
    script_name = execfn
    for depth in range(MAX_REWRITES + 1):
        if fd is None:
            resolved = find_executable(proc, path, follow=follow or depth > 0)
            fd = open_executable(proc, resolved)
        else:
            resolved = fd_path or path
            check_executable(os.fstat(fd), resolved)
            fd = os.dup(fd)
        try:
            head = read_head(fd)
            if head.startswith(b"#!"):
                interpreter, argument = parse_shebang(head)
                # load_script(): argv[0] goes, the script's name comes in
                # its place, the argument and the interpreter before it.
                argv = ([interpreter] + ([argument] if argument is not None else [])
                        + [script_name] + argv[1:])
                check_arg_space(argv, env)
                path = os.fsdecode(interpreter)
                script_name = interpreter
                continue
            if not head.startswith(ELF_MAGIC):
                raise _fail(errno.ENOEXEC, f"{resolved}: neither an ELF program nor a #! script")
            data = read_whole(fd, resolved)
        finally:
            os.close(fd)
            fd = None
        try:
            image = parse_program(data, resolved)
        except (ElfError, ValueError) as error:
            raise _fail(errno.ENOEXEC, str(error)) from None
        interpreter_file = None
        if image.interpreter is not None:
            try:
                interpreter_file = read_interpreter(proc.policy, image.interpreter, proc.cwd,
                                                    resolved)
            except InterpreterError as error:
                raise _fail(error.errno, str(error)) from None
        comm = os.fsencode(posixpath.basename(fd_path)) if fd_path else \
            posixpath.basename(execfn.rstrip(b"/"))
        return ExecImage(image, interpreter_file, resolved, execfn, argv, env,
                         comm[:TASK_COMM_LEN - 1])
    raise _fail(errno.ELOOP, f"more than {MAX_REWRITES} #! interpreters in a row")


# -- past the point of no return ------------------------------------------------------
def replace_image(proc: Process, new: ExecImage) -> tuple[int, int]:
    """Throw the old program away and load *new* (``begin_new_exec`` and
    the rest of ``load_elf_binary``).  Returns the entry and the stack
    pointer; the caller loads the registers.  Any failure from here on
    kills the process with SIGSEGV, as Linux's ``force_fatal_sig``.

    What goes and what stays, as on Linux:

    * other threads: gone (``de_thread``); the caller, whichever thread it
      was, goes on as the only one, with the pid as its tid, its own
      signal mask and pending signals; its ``clear_child_tid`` and robust
      list are dropped (``exec_mm_release``);
    * memory: every mapping, the break, the patched system-call sites;
      FS.base, GS.base and the x87/SSE state are reset;
    * fds: the ``O_CLOEXEC`` ones are closed, the rest stay;
    * the alternate signal stack is disabled (the caller resets the
      handlers, which are the signal code's: one layer up);
    * ``/proc/self/exe``, ``cmdline``, ``environ`` and the name (``comm``:
      the file's base name, 15 bytes) are the new program's;
    * the pid, cwd, umask, limits, alarm and the policy stay.
    """
    machine = proc.machine
    mm = proc.mm
    # de_thread(): the caller becomes the leader, every other thread ends.
    if len(proc.threads) > 1:
        machine.stop_time_slices()
    table = proc.threads
    proc.threads = ThreadTable(proc.pid, table.max_threads)
    proc.threads.xsave = table.xsave
    # exec_mmap(): the old address space goes, the same record emptied in place.
    for vma in list(mm.vmas):
        mm.unmap(vma.start, vma.size)
    mm.patched_sites.clear()
    machine.syscall_sites.seen.clear()
    mm.brk_start = mm.brk_end = 0
    mm.stale_translations = True
    for number in [n for n, entry in proc.fds.entries.items() if entry.cloexec]:
        proc.fds.close(number)
    proc.alternate_stack = (0, 0)
    proc.signal_saved_mask = None
    proc.fs_base = 0
    machine.set_fs_base(0)
    machine.set_gs_base(0)
    machine.vcpu.set_fpu(k.kvm_fpu(fcw=FCW_DEFAULT, mxcsr=MXCSR_DEFAULT))
    proc.argv, proc.env = new.argv, new.env
    proc.exe_path = new.path
    proc.name = new.comm
    try:
        return proc.load(new.image, new.execfn, new.interpreter_file)
    except (MinikvmError, ValueError, AssertionError) as error:
        raise ProcessKilled(signal_module.SIGSEGV,
                            f"execve of {new.path}: the new image could not be loaded "
                            f"after the old one was gone: {error}") from None
