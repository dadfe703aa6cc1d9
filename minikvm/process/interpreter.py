"""Layer 5 — the dynamic loader named by ``PT_INTERP``, read through the guest's view.

A dynamically linked program names its interpreter by path
(``/lib64/ld-linux-x86-64.so.2``), and Linux opens that path as the
program's own ``open`` would: in the program's file system, from its root.
In minikvm the program's file system is the sandbox's view, so the
interpreter is looked up through the :class:`~minikvm.sandbox.policy.Policy`
— never with a plain host ``open``: an interpreter outside the grants does
not exist for the guest, whatever the host has.  (The *program* itself is
read by minikvm before the walls go up, as ``minikvm run PROGRAM`` names
it on the host's command line; the interpreter is chosen by the file, a
hostile one perhaps, so it gets the guest's rights.)

Why a walk of its own: the interpreter path is usually a chain of symlinks,
and on Debian one of them is absolute
(``/lib64 -> usr/lib64``, then
``/usr/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2``).
The policy resolves a path beneath one grant (``RESOLVE_BENEATH``), where an
absolute symlink is an escape.  The kernel resolves an absolute symlink
from the process's root, which for the guest is the view; so
:func:`resolve_in_view` does that walk, one component at a time, asking the
policy for each one (``lstat``, ``readlink``): every step is the guest's
view, and the final open is the policy's own ``open`` of a path with no
symlink left to follow.

Errors are :class:`~minikvm.errors.ElfError` (the launch reports them with
status 126, as a shell reports an ``execve`` that fails): an interpreter
that does not exist gets execve's ``ENOENT`` message, one outside the view
names the path and the ``--allow-read`` flag that grants it.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat as stat_module

from minikvm.errors import ElfError
from minikvm.linux_abi import O_RDONLY
from minikvm.sandbox.grants import MAXSYMLINKS
from minikvm.sandbox.policy import Policy, PolicyDenied

class InterpreterError(ElfError):
    """The interpreter cannot be loaded; ``errno`` is what ``execve`` of the
    program fails with (a guest's ``execve`` returns it,
    :mod:`minikvm.process.exec`)."""

    def __init__(self, message: str, err: int) -> None:
        super().__init__(message)
        self.errno = err


class InterpreterNotFound(InterpreterError):
    """The interpreter does not exist in the view: execve's ``ENOENT``, which
    a shell reports as 127 ("No such file or directory"), as for a missing
    program — the launch does the same."""

    def __init__(self, message: str) -> None:
        super().__init__(message, errno.ENOENT)


#: The largest interpreter minikvm reads: ld.so is about 200 KiB; a larger
#: "interpreter" is not a dynamic loader (and is refused before it fills
#: host memory).
MAX_INTERPRETER_SIZE = 64 << 20


def read_interpreter(policy: Policy, path: str, cwd: str, program: str) -> tuple[str, bytes]:
    """The interpreter *path* of *program* as the guest's view has it: its
    resolved path (for messages and ``/proc/self/maps``) and its bytes.

    A relative *path* is taken from *cwd*, as Linux's ``open_exec`` takes
    it from the process's working directory."""
    about = _about(program, path)
    resolved = resolve_in_view(policy, path, cwd, program)
    try:
        fd = policy.open(resolved, O_RDONLY, 0, "/", syscall="execve")
    except PolicyDenied as denied:
        raise _outside_view(about, resolved, denied, directory=True) from None
    except IsADirectoryError:
        raise InterpreterError(f"{about} is a directory (execve fails with EACCES)",
                               errno.EACCES) from None
    except OSError as error:
        raise InterpreterError(f"{about}: cannot open {_printable(resolved)}: "
                               f"{error.strerror}", error.errno or errno.EIO) from None
    try:
        if not stat_module.S_ISREG(os.fstat(fd).st_mode):
            what = "a directory" if stat_module.S_ISDIR(os.fstat(fd).st_mode) else \
                "not a regular file"
            raise InterpreterError(f"{about} is {what} (execve fails with EACCES)",
                                   errno.EACCES)
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_INTERPRETER_SIZE:
                raise InterpreterError(f"{about} is larger than any dynamic loader "
                                       f"({MAX_INTERPRETER_SIZE >> 20} MiB): refused",
                                       errno.ELIBBAD)
        return resolved, b"".join(chunks)
    except OSError as error:
        raise InterpreterError(f"{about}: cannot read {_printable(resolved)}: "
                               f"{error.strerror}", error.errno or errno.EIO) from None
    finally:
        os.close(fd)


def resolve_in_view(policy: Policy, path: str, cwd: str, program: str, *,
                    about: str | None = None, follow_last: bool = True) -> str:
    """*path* with every symlink followed as the guest's kernel would follow
    it — absolute targets from the view's root — each step asked of the
    policy.  At most :data:`~minikvm.sandbox.grants.MAXSYMLINKS` links (more:
    ``ELOOP``, as the kernel's path walk).  The guest's own ``execve`` walks
    its path here too (:mod:`minikvm.process.exec`): *about* starts its
    messages instead of the interpreter's, and without *follow_last* a
    final symlink is ``ELOOP`` (``AT_SYMLINK_NOFOLLOW``)."""
    about = about or _about(program, path)
    pending = posixpath.join(cwd, path).split("/")
    done = "/"
    links = 0
    while pending:
        component = pending.pop(0)
        if component in ("", "."):
            continue
        if component == "..":
            done = posixpath.dirname(done)
            continue
        candidate = posixpath.join(done, component)
        try:
            link = _symlink_target(policy, candidate)
        except PolicyDenied as denied:
            raise _outside_view(about, candidate, denied, directory=not pending) from None
        except FileNotFoundError:
            detail = "" if candidate == path else f" ({_printable(candidate)} does not exist)"
            raise InterpreterNotFound(f"{about} was not found{detail}; execve fails with "
                                      f"ENOENT: {os.strerror(errno.ENOENT)}") from None
        except NotADirectoryError:
            raise InterpreterError(f"{about}: {_printable(done)} is not a directory (execve "
                                   f"fails with ENOTDIR)", errno.ENOTDIR) from None
        except OSError as error:
            raise InterpreterError(f"{about}: {_printable(candidate)}: {error.strerror}",
                                   error.errno or errno.EIO) from None
        if link is None:
            done = candidate
            continue
        if not pending and not follow_last:
            raise InterpreterError(f"{about}: {_printable(candidate)} is a symlink and "
                                   f"AT_SYMLINK_NOFOLLOW was given (ELOOP)", errno.ELOOP)
        links += 1
        if links > MAXSYMLINKS:
            raise InterpreterError(f"{about} goes through more than {MAXSYMLINKS} symlinks "
                                   f"(execve fails with ELOOP: {os.strerror(errno.ELOOP)})",
                                   errno.ELOOP)
        pending = link.split("/") + pending
        if link.startswith("/"):
            done = "/"
    return done


def _about(program: str, path: str) -> str:
    """The start of every message: which program, which interpreter."""
    return f"{_printable(program)}: cannot run: its interpreter {_printable(path)} (PT_INTERP)"


def _printable(text: str) -> str:
    """*text* for a message: control characters and undecodable bytes of a
    hostile path escaped (``\\x01``), so one error stays one readable line."""
    if text.isprintable():
        return text
    return ascii(text)[1:-1]


def _symlink_target(policy: Policy, path: str) -> str | None:
    """The target of *path* if the view shows a symlink there, else None."""
    st = policy.stat(path, "/", follow=False, syscall="execve")
    if not stat_module.S_ISLNK(st.st_mode):
        return None
    return policy.readlink(path, "/", syscall="execve")


def _outside_view(about: str, where: str, denied: PolicyDenied, *,
                  directory: bool) -> InterpreterError:
    """The message for an interpreter the sandbox does not show: the path
    that is not in the view, and the grant that shows it (the directory of
    the file, or the missing directory itself when the walk stopped on the
    way)."""
    grant = (posixpath.dirname(where) or "/") if directory else where
    return InterpreterError(f"{about} is outside the sandbox's view ({_printable(where)}: "
                            f"{denied.detail}); grant it with --allow-read {_printable(grant)}",
                            denied.errno)
