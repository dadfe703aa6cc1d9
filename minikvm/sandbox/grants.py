"""Layer 4 — grants: the directories a guest may use, and where a path really lands.

A grant is a host directory opened once, ``O_PATH|O_DIRECTORY``, when the
policy is built (:class:`Grant`).  This module owns the two questions the
policy asks of grants:

*Beneath which grant is a guest path resolved?*  Guest paths are matched to
grants by their spelling (:func:`absolute_path`, :meth:`Grant.contains`), but
resolved by the kernel beneath the **root** grant — the outermost grant
that really holds the one the spelling picked (:class:`GrantTree`).  With
``/w`` writable and ``/w/ro`` read-only, ``/w/ro/x`` is resolved beneath
``/w``, so a symlink in ``/w/ro`` to ``../y`` reaches ``/w/y`` (which the
policy allows) instead of failing, and, more to the point:

*Which grant does the object the kernel found belong to?*  Not the one the
spelling picked: ``/w/l/secret`` with ``/w/l -> ro`` is ``/w/ro/secret``.
:meth:`GrantTree.holding` asks the kernel for the object's own name
(``readlink("/proc/self/fd/N")``, the kernel's ``d_path`` of the dentry the
fd holds) and picks the most specific grant whose directory — again by the
kernel's current name for it — contains that name.  Renames do not fool it:
both names are the kernel's, read at the moment of the check.

Only a root with grants of *different* rights nested inside it needs the
second question; for every other root (the usual ``--here``) the answer is
the root itself and no ``/proc`` lookup is made (:meth:`GrantTree.uniform`).

Landlock cannot do this for us: its rules add up along the path (a
read-only rule on ``/w/ro`` inside a read-write rule on ``/w`` still allows
writing ``/w/ro``), so nested read-only grants are enforced by this layer
alone; Landlock is the second wall around the union of the grants.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat as stat_module
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Optional, Union

from minikvm.errors import MinikvmError
from minikvm.linux_abi import O_CLOEXEC, O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW, O_PATH
from minikvm.sandbox.openat2 import (OPENAT2_RETRIES, RESOLVE_GUEST, RESOLVE_NO_SYMLINKS,
                                     openat2)

PathArg = Union[str, bytes, "os.PathLike[str]"]

#: How many symlinks one lookup may follow, as ``MAXSYMLINKS`` in the
#: kernel's fs/namei.c (more is ``ELOOP``).
MAXSYMLINKS = 40

#: What ``/proc/self/fd/N`` appends to the name of an unlinked file.
DELETED_SUFFIX = " (deleted)"

Identity = tuple[int, int]   # (st_dev, st_ino): a directory, whatever its name


class GrantError(MinikvmError):
    """A grant cannot be used (the policy turns it into a PolicyError)."""


class Refusal(Exception):
    """A lookup would leave its grant or write where it may not.

    Raised by :class:`GrantTree`'s lookups with a short *reason*; the policy
    records it as a denial.  *hidden* is true when the object the kernel
    found is outside the grants (a symlink or ``..`` leading out): the
    guest then gets ``ENOENT``, as if the target did not exist, the way a
    bind-mounted view shows it; otherwise (a write where only reading is
    allowed) ``EACCES``.
    """

    def __init__(self, reason: str, hidden: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hidden = hidden


@dataclass(frozen=True)
class Grant:
    """A directory (or one file) the guest may use, and the fd it is held open by.

    Most grants show a host directory at its own host path.  A *mount*
    (:class:`Mount`) shows one elsewhere — the private ``/tmp`` is a host
    temporary directory shown at ``/tmp`` — and the system view grants
    single files (``/etc/passwd``) as well as directories.  Both need to
    know what the directory *above* them is, since climbing ``..`` from
    the fd would reach the host's parent of the host directory (or fail,
    from a file): *up_fd* holds it.
    """

    path: str        # absolute and lexically normal: the prefix guest paths match
    writable: bool
    dirfd: int       # O_PATH|O_DIRECTORY|O_CLOEXEC, opened once (O_PATH on the file itself
                     # for a file grant: the object the host name led to when granted)
    is_file: bool = False
    host: Optional[str] = None   # the host path when it is not *path* (a mount)
    up_fd: Optional[int] = None  # O_PATH|O_DIRECTORY on the host directory shown as
                                 # posixpath.dirname(path) (mounts and file grants)

    @property
    def host_path(self) -> str:
        """Where the granted object is on the host (for Landlock, and to say so)."""
        return self.host or self.path

    def contains(self, path: str) -> bool:
        """True if normalised absolute *path* is this directory or beneath it
        (for a file grant: is the file)."""
        if self.is_file:
            return path == self.path
        return _beneath(path, self.path)

    def relative(self, path: str) -> str:
        """*path* (which :meth:`contains` accepted) relative to the grant."""
        rest = path[len(self.path):].lstrip("/")
        return rest or "."


def real_path(fd: int) -> str:
    """The kernel's current name of what host *fd* holds (``/proc/self/fd``).

    An unlinked file keeps the name of the directory it was in, with
    :data:`DELETED_SUFFIX`, which is cut off (only when the file really has
    no links, so a file *named* "x (deleted)" stays itself).
    """
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError as error:
        raise GrantError(f"cannot read /proc/self/fd/{fd} ({error.strerror}): minikvm "
                         "needs /proc to decide nested grants (mount proc, or do not "
                         "nest grants of different rights)") from None
    if name.endswith(DELETED_SUFFIX) and os.fstat(fd).st_nlink == 0:
        name = name[:-len(DELETED_SUFFIX)]
    return name


def identity(fd: int, name: Optional[str] = None) -> Identity:
    """``(st_dev, st_ino)`` of *fd*, or of entry *name* in directory *fd*
    (not following a final symlink)."""
    st = os.stat(name, dir_fd=fd, follow_symlinks=False) if name else os.fstat(fd)
    return st.st_dev, st.st_ino


class GrantTree:
    """The grants of one policy, with which holds which.

    Built once from the grants (longest path first, as the policy keeps
    them).  For each grant it records its *root* — the outermost grant whose
    directory really contains it, by the kernel's names at build time — and
    the path from that root (so a grant spelled through a symlink, or
    nested, is resolved beneath its root).  It also records the directories
    that must not move: every nested grant and each directory between it and
    its root, by identity (:attr:`protected`).
    """

    def __init__(self, grants: Iterable[Grant]) -> None:
        self.grants = tuple(grants)
        names = {grant.path: self._name_at_build(grant) for grant in self.grants}
        self.root: dict[str, Grant] = {}
        self.from_root: dict[str, str] = {}
        for grant in self.grants:
            # A file grant is its own root: it shows the object it holds,
            # never a name looked up again beneath another grant.
            roots = [grant] if grant.is_file else [
                other for other in self.grants
                if not other.is_file and _beneath(names[grant.path], names[other.path])]
            root = min(roots, key=lambda other: len(names[other.path]))
            self.root[grant.path] = root
            rest = names[grant.path][len(names[root.path]):].lstrip("/")
            self.from_root[grant.path] = rest or "."
        # Most specific first, by the kernel's names: the first that holds wins.
        self.inside: dict[str, tuple[Grant, ...]] = {
            root.path: tuple(sorted((g for g in self.grants if self.root[g.path] is root),
                                    key=lambda g: len(names[g.path]), reverse=True))
            for root in self.grants}
        self.protected: frozenset[Identity] = frozenset(
            ident for grant in self.grants if self.root[grant.path] is not grant
            for ident in self._directories_up_to_root(grant))
        self.roots: frozenset[Identity] = frozenset(identity(g.dirfd) for g in self.grants)
        # The grants whose host directory is at their guest path: climbing
        # ".." from those reaches the directories really above them (not so
        # from /lib -> usr/lib, whose ".." is /usr).
        self.at_own_path: frozenset[str] = frozenset(
            g.path for g in self.grants if g.up_fd is None and names[g.path] == g.path)
        # Every lookup asks "which grant?" and "is it above one?": by a walk
        # up the path's own prefixes in these two tables, a few dict lookups
        # whatever the number of grants (the system view has some thirty).
        self.by_path: dict[str, Grant] = {}
        for grant in reversed(self.grants):     # the first of a path wins, as in a scan
            self.by_path[grant.path] = grant
        above: dict[str, set[str]] = {}
        for grant in self.grants:
            parts = grant.path.strip("/").split("/") if grant.path != "/" else []
            for depth in range(len(parts)):
                above.setdefault("/" + "/".join(parts[:depth]), set()).add(parts[depth])
        self.above: dict[str, frozenset[str]] = {path: frozenset(names_)
                                                 for path, names_ in above.items()}

    def find(self, absolute: str) -> Optional[Grant]:
        """The most specific grant containing normalised absolute *absolute*
        (the longest prefix), or None."""
        path = absolute
        while True:
            grant = self.by_path.get(path)
            if grant is not None and grant.contains(absolute):
                return grant
            if path == "/":
                return None
            path = posixpath.dirname(path)

    def uniform(self, root: Grant) -> bool:
        """True if every grant inside *root* has *root*'s rights (no check needed)."""
        return all(g.writable == root.writable for g in self.inside.get(root.path, ()))

    def beneath_root(self, grant: Grant, path: str) -> tuple[Grant, str]:
        """The root grant to resolve *path* (in *grant*) beneath, and the relative path."""
        root = self.root[grant.path]
        prefix, rest = self.from_root[grant.path], grant.relative(path)
        if prefix == ".":
            return root, rest
        return root, prefix if rest == "." else f"{prefix}/{rest}"

    def holding(self, fd: int, root: Grant) -> Optional[Grant]:
        """The most specific grant inside *root* holding what *fd* holds, or None."""
        if self.uniform(root):
            return root
        where = real_path(fd)
        for grant in self.inside[root.path]:          # longest path first
            if _beneath(where, real_path(grant.dirfd)):
                return grant
        return None

    def is_above(self, absolute: str) -> bool:
        """True if normalised absolute *absolute* is a directory *above* a grant
        (``/`` and ``/tmp`` for a grant ``/tmp/x``) and inside none."""
        return absolute in self.above and self.find(absolute) is None

    def entries_above(self, absolute: str) -> frozenset[str]:
        """The names a directory above the grants shows: the next component of
        the way down to each grant below it (empty if it is above none)."""
        return self.above.get(absolute, frozenset())

    def open_above(self, absolute: str) -> Optional[int]:
        """An ``O_PATH`` fd on the directory *above* a grant that *absolute*
        names, or None if it names none (the caller closes the fd).

        Reached by ``..`` steps from the grant's fd, so what is opened is the
        directory really above the grant, whatever the path string says.
        """
        if absolute not in self.above or self.find(absolute) is not None:
            return None
        # A grant seen at its own path is climbed from first: it is the
        # directory really above; a mount or a file is climbed from the
        # host directory it was told stands above it.
        below = sorted((grant for grant in self.grants
                        if grant.path.startswith(absolute.rstrip("/") + "/")),
                       key=lambda grant: (grant.path not in self.at_own_path,
                                          grant.up_fd is None))
        for grant in below:
            start, top = grant.dirfd, grant.path
            if grant.up_fd is not None:
                start, top = grant.up_fd, posixpath.dirname(grant.path)
            levels = _depth(top) - _depth(absolute)
            return os.open("/".join([".."] * levels) or ".", O_PATH | O_DIRECTORY | O_CLOEXEC,
                           dir_fd=start)
        return None

    def stat_above(self, absolute: str) -> Optional[os.stat_result]:
        """``stat`` of a directory *above* a grant, or None if *absolute* is not one."""
        fd = self.open_above(absolute)
        if fd is None:
            return None
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def relative_to_root(self, fd: int, root: Grant) -> Optional[str]:
        """Where directory *fd* is, relative to *root*, by the kernel's names."""
        where, top = real_path(fd), real_path(root.dirfd)
        if not _beneath(where, top):
            return None
        return where[len(top):].lstrip("/") or "."

    def open_for_writing(self, root: Grant, relative: str, flags: int, mode: int,
                         absolute: str) -> int:
        """Open for writing beneath a *root* that holds grants of other rights.

        The kernel's resolution decides which grant the file is in, so the
        file is first found without writing (an ``O_PATH`` probe; its
        directory when it is to be created), checked, and only then opened
        for real — through the probe itself (``/proc/self/fd/N`` reopens
        exactly that inode) or, for a new file, by its one name in the
        checked directory with ``RESOLVE_NO_SYMLINKS``, so nothing can be
        swapped in between.  A dangling final symlink is followed as the
        kernel would for ``O_CREAT`` (up to :data:`MAXSYMLINKS`), each step
        checked again.  Nothing is created or truncated before the check.
        """
        exclusive = bool(flags & O_CREAT) and bool(flags & O_EXCL)
        for _ in range(MAXSYMLINKS + 1):
            if not exclusive:
                probe_flags = O_PATH | O_CLOEXEC | (flags & (O_NOFOLLOW | O_DIRECTORY))
                try:
                    probe: Optional[int] = self.openat2(root, relative, probe_flags, 0,
                                                        absolute)
                except FileNotFoundError:
                    if not flags & O_CREAT:
                        raise
                    probe = None
                if probe is not None:
                    try:
                        self.require_writable(probe, root)
                        if stat_module.S_ISLNK(os.fstat(probe).st_mode):
                            raise OSError(errno.ELOOP, "a symbolic link (O_NOFOLLOW)",
                                          absolute)
                        return reopen(probe, flags & ~(O_CREAT | O_EXCL | O_NOFOLLOW),
                                      mode, absolute)
                    finally:
                        os.close(probe)
            where, name = posixpath.split(relative)
            if not name:
                raise OSError(errno.EISDIR, "is a directory", absolute)
            parent = self.openat2(root, where or ".", O_PATH | O_DIRECTORY | O_CLOEXEC, 0,
                                  absolute)
            try:
                self.require_writable(parent, root)
                if not exclusive and not flags & O_NOFOLLOW and is_symlink(parent, name):
                    target = os.readlink(name, dir_fd=parent)
                    here = self.relative_to_root(parent, root)
                    if target.startswith("/") or here is None:
                        raise Refusal(f"resolves outside grant {root.path} (a symlink "
                                      "leads out)", hidden=True)
                    relative = target if here == "." else f"{here}/{target}"
                    continue
                return self.openat2_in(parent, name, flags, mode, absolute)
            finally:
                os.close(parent)
        raise OSError(errno.ELOOP, "too many levels of symbolic links", absolute)

    def openat2_in(self, parent: int, name: str, flags: int, mode: int,
                   absolute: str) -> int:
        """Open or create the one entry *name* of checked directory *parent*."""
        try:
            return openat2(parent, os.fsencode(name), flags, mode,
                           RESOLVE_GUEST | RESOLVE_NO_SYMLINKS)
        except OSError as error:
            if error.errno == errno.ELOOP and not flags & O_NOFOLLOW:
                raise Refusal("could not be resolved safely: a symlink appeared "
                              "during the lookup") from None
            raise OSError(error.errno, error.strerror, absolute) from None

    def require_writable(self, fd: int, root: Grant) -> None:
        """Refuse unless what *fd* holds is in a write grant inside *root*."""
        holder = self.holding(fd, root)
        if holder is None:
            raise Refusal(f"resolves outside grant {root.path}", hidden=True)
        if not holder.writable:
            raise Refusal(f"resolves into read-only grant {holder.path}")

    def refuse_protected(self, dirfd: int, name: str) -> None:
        """Refuse changing entry *name* if it is a nested grant or on the way to one."""
        try:
            ident = identity(dirfd, name)
        except (FileNotFoundError, NotADirectoryError):
            return
        if ident in self.protected or ident in self.roots:
            raise Refusal("a grant directory, or a directory holding one, cannot be "
                          "removed, renamed or replaced")

    def openat2(self, grant: Grant, relative: str, flags: int, mode: int,
                absolute: str) -> int:
        """``openat2`` beneath *grant*, turning an escape into a :class:`Refusal`."""
        for _ in range(OPENAT2_RETRIES):
            try:
                return openat2(grant.dirfd, os.fsencode(relative), flags, mode)
            except OSError as error:
                if error.errno == errno.EXDEV:
                    raise Refusal(f"resolves outside grant {grant.path} (a symlink or "
                                  "'..' leads out)", hidden=True) from None
                if error.errno != errno.EAGAIN:
                    raise OSError(error.errno, error.strerror, absolute) from None
        raise Refusal("could not be resolved safely: the directory tree kept changing "
                      "during the lookup")

    @staticmethod
    def _name_at_build(grant: Grant) -> str:
        try:
            return real_path(grant.dirfd)
        except GrantError:
            return grant.path       # no /proc: nesting is by spelling only

    def _directories_up_to_root(self, grant: Grant) -> list[Identity]:
        """*grant* and the directories above it, up to (not with) its root."""
        stop = identity(self.root[grant.path].dirfd)
        found, fd = [], os.dup(grant.dirfd)
        try:
            for _ in range(self.from_root[grant.path].count("/") + 1):
                ident = identity(fd)
                if ident == stop:
                    break
                found.append(ident)
                parent = os.open("..", O_PATH | O_DIRECTORY | O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = parent
        finally:
            os.close(fd)
        return found


def reopen(probe: int, flags: int, mode: int, absolute: str) -> int:
    """Open the very inode O_PATH fd *probe* holds, with real *flags*.

    ``/proc/self/fd/N`` is a magic link to the probed file itself, so no
    name is looked up again: what was checked is what gets opened.
    """
    try:
        return os.open(f"/proc/self/fd/{probe}", flags, mode)
    except OSError as error:
        raise OSError(error.errno, error.strerror, absolute) from None



class Parent(NamedTuple):
    """What :meth:`Policy.resolve_parent` returns: a directory fd and one name.

    Unpack it (``dirfd, name = ...``) and close ``dirfd`` yourself, or use it
    as a context manager, which closes it::

        with policy.resolve_parent("/tmp/x/new", cwd, write=True) as parent:
            os.mkdir(parent.name, 0o755, dir_fd=parent.dirfd)
    """

    dirfd: int
    name: str

    def close(self) -> None:
        os.close(self.dirfd)

    def __enter__(self) -> "Parent":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- paths as the guest spells them -------------------------------------------------


def absolute_path(path: PathArg, cwd: str) -> tuple[str, bool]:
    """Join a guest path to the guest cwd and normalise it lexically.

    Returns the absolute path and whether the guest wrote a trailing slash.
    An empty path is ``ENOENT``, as for the kernel.
    """
    text = os.fsdecode(path)
    if not text:
        raise OSError(errno.ENOENT, "empty path", text)
    if "\0" in text:
        raise ValueError(f"path {text!r} contains a NUL byte: the syscall layer must "
                         "cut guest strings at their terminating NUL")
    if not cwd.startswith("/"):
        raise ValueError(f"guest cwd {cwd!r} is not absolute: the syscall layer "
                         "must keep the guest's cwd as an absolute path")
    joined = text if text.startswith("/") else f"{cwd}/{text}"
    normal = posixpath.normpath(joined)
    if normal.startswith("//"):   # POSIX lets normpath keep a leading "//"
        normal = "/" + normal.lstrip("/")
    return normal, joined.endswith("/") and normal != "/"


def normalise_grant(path: PathArg) -> str:
    """A grant as the absolute, lexically normal path guest paths are matched to."""
    text = os.fsdecode(os.fspath(path))
    if not text:
        raise GrantError("an empty path was given as a grant: name a directory")
    normal = posixpath.normpath(os.path.join(os.getcwd(), text))
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    return normal


class Mount(NamedTuple):
    """A host file or directory shown to the guest at a path of its own.

    *guest* is where the guest sees it, *host* where it is (the same path
    for the system view on the real root; another for the private ``/tmp``
    or a system view read from a test's fake root); *above* is the host
    directory shown as the guest path's parent (default: the host's own
    directory of that name), what ``stat("/")`` and ``stat("/etc")`` see.
    """

    guest: str
    host: str
    writable: bool = False
    above: Optional[str] = None


def open_mount(mount: Mount) -> Grant:
    """Open *mount*'s host object (a directory, or a regular file reached
    through its symlinks as they are now) and the directory above it."""
    guest = normalise_grant(mount.guest)
    try:
        st = os.stat(mount.host)
    except OSError as error:
        raise GrantError(f"{mount.guest}: cannot use {mount.host}: {error.strerror}") from None
    if stat_module.S_ISDIR(st.st_mode):
        fd, is_file = open_grant(mount.host), False
    elif stat_module.S_ISREG(st.st_mode) and not mount.writable:
        fd, is_file = os.open(mount.host, O_PATH | O_CLOEXEC), True
    else:
        raise GrantError(f"{mount.guest}: {mount.host} is not a directory or (read-only) "
                         "regular file: only those can be shown")
    if not is_file and guest == normalise_grant(mount.host) and mount.above is None:
        return Grant(guest, mount.writable, fd)
    above = mount.above or posixpath.dirname(guest)
    try:
        up_fd = os.open(above, O_PATH | O_DIRECTORY | O_CLOEXEC)
    except OSError as error:
        os.close(fd)
        raise GrantError(f"{mount.guest}: cannot open {above}, the directory shown above "
                         f"it: {error.strerror}") from None
    host = None if guest == normalise_grant(mount.host) else os.path.abspath(mount.host)
    return Grant(guest, mount.writable, fd, is_file=is_file, host=host, up_fd=up_fd)


def close_grant(grant: Grant) -> None:
    """Close the fds *grant* holds."""
    os.close(grant.dirfd)
    if grant.up_fd is not None:
        os.close(grant.up_fd)


def open_grant(path: str) -> int:
    """Open a grant directory ``O_PATH|O_DIRECTORY|O_CLOEXEC``, or say why not."""
    try:
        return os.open(path, O_PATH | O_DIRECTORY | O_CLOEXEC)
    except FileNotFoundError:
        raise GrantError(f"grant {path}: no such directory (create it, or remove "
                         "it from the policy)") from None
    except NotADirectoryError:
        raise GrantError(f"grant {path}: not a directory (grants are directories: "
                         "grant the directory that holds the file, or copy the "
                         "file into a granted one)") from None
    except OSError as error:
        raise GrantError(f"grant {path}: cannot open: {error.strerror}") from None


def check_openat2(grant: Grant) -> None:
    """Fail early, and clearly, on a kernel without openat2 (Linux < 5.6)."""
    try:
        os.close(openat2(grant.dirfd, b".", O_PATH | O_CLOEXEC))
    except OSError as error:
        if error.errno == errno.ENOSYS:
            raise GrantError(
                f"openat2 is not available (kernel {os.uname().release}): minikvm "
                "needs Linux 5.6 or newer to confine guest paths safely, and will "
                "not fall back to string checks") from None
        raise GrantError(f"grant {grant.path}: openat2 failed: {error.strerror}") from None


def is_symlink(dirfd: int, name: str) -> bool:
    """True if entry *name* of directory *dirfd* is a symlink (False if absent)."""
    try:
        return stat_module.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _depth(path: str) -> int:
    """How many components absolute normal *path* has (``/`` has none)."""
    return 0 if path == "/" else path.count("/")


def _beneath(path: str, directory: str) -> bool:
    """True if *path* is *directory* or inside it (both absolute and normal)."""
    if directory == "/":
        return path.startswith("/")
    return path == directory or path.startswith(directory + "/")


__all__ = ["Grant", "GrantTree", "Parent", "Mount", "open_mount", "close_grant", "GrantError", "Refusal", "reopen", "MAXSYMLINKS",
           "absolute_path",
           "normalise_grant",
           "open_grant", "check_openat2", "real_path", "identity", "is_symlink"]
