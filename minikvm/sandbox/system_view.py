"""Layer 4 — the read-only system view: what every Linux program expects to find.

A program run with no grant of its own still expects its dynamic loader
and libraries, the programs a shell finds in ``PATH``, time zones, locales
and terminal descriptions, and a few ``/etc`` files that say who the users
are and how names are resolved.  None of that is the user's data, so
minikvm shows it by default, read-only — the way a bubblewrap or Flatpak
profile binds ``/usr`` and a chosen handful of ``/etc`` files, never
``/etc`` as a whole.

The list is explicit (:data:`SYSTEM_DIRECTORIES`, :data:`SYSTEM_ETC_FILES`,
:data:`SYSTEM_ETC_DIRECTORIES`); what the host does not have is left out;
and every entry passes :func:`refused_reason` before it is shown, which
refuses what must never be in it — password hashes, sudo rules, SSH keys,
TLS private keys, home directories, ``/var``, ``/run``, the host's
``/tmp`` — whatever the list says, also when an entry is a symlink that
leads there (``/etc/hosts -> shadow`` on a hostile machine is left out).
``--no-system`` turns the view off; ``--print-policy`` shows it.

A file entry is a *file grant* (:class:`~minikvm.sandbox.grants.Grant`
with ``is_file``): the object the host name leads to when the sandbox
starts (``/etc/localtime`` is the zone file it points at), held open,
never looked up again by name.

:func:`system_mounts` builds the view for a root directory, ``/`` by
default; tests pass a temporary fake root holding secrets, to check that
the filter keeps them out.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import posixpath
from typing import Iterable, Optional

from minikvm.sandbox.grants import Mount

#: Directories shown whole: ``/usr`` (the libraries, the programs of
#: ``PATH``, ``/usr/share``'s zoneinfo, locale, terminfo, misc/magic …;
#: whole, as bubblewrap's ``--ro-bind /usr /usr``, since its parts link to
#: each other: ``/usr/share/misc/magic.mgc -> ../../lib/file/magic.mgc``),
#: and the loader's and programs' short spellings, symlinks into ``/usr``
#: on a merged-/usr system (``PT_INTERP`` is ``/lib64/ld-linux-x86-64.so.2``,
#: ``/etc/ld.so.cache`` names ``/lib/x86_64-linux-gnu``): both spellings are
#: granted.  An entry beneath another (``/lib/x86_64-linux-gnu`` beneath
#: ``/lib``) is shown by it already.
SYSTEM_DIRECTORIES = (
    "/usr", "/lib", "/lib64", "/lib32", "/libx32", "/lib/x86_64-linux-gnu",
    "/bin", "/sbin",
)

#: ``/etc`` files that carry no secret: users and groups (no hashes: those
#: are in ``shadow``), name resolution, time zone, the loader's cache,
#: MIME types, the distribution's name, line editing.
SYSTEM_ETC_FILES = (
    "/etc/passwd", "/etc/group", "/etc/hosts", "/etc/host.conf", "/etc/nsswitch.conf",
    "/etc/gai.conf", "/etc/protocols", "/etc/services", "/etc/networks",
    "/etc/localtime", "/etc/timezone", "/etc/locale.alias", "/etc/locale.conf",
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/mime.types", "/etc/os-release",
    "/etc/debian_version", "/etc/shells", "/etc/inputrc", "/etc/magic", "/etc/magic.mime",
    "/etc/ca-certificates.conf",
)

#: ``/etc`` directories shown whole: the loader's extra paths, public CA
#: certificates (never ``/etc/ssl/private``), the alternatives symlink
#: farm ``/usr/bin`` points into, terminal descriptions, fontconfig's
#: configuration (its ``conf.d`` links point into ``/usr/share/fontconfig``:
#: :mod:`minikvm.sandbox.links` follows them there).
SYSTEM_ETC_DIRECTORIES = (
    "/etc/ld.so.conf.d", "/etc/ssl/certs", "/etc/ca-certificates", "/etc/alternatives",
    "/etc/terminfo", "/etc/fonts",
)

#: Paths never shown, nor any directory that holds one (granting ``/etc``
#: would show ``/etc/shadow``).  Glob patterns are matched to whole paths.
NEVER_SHOWN = (
    "/etc/shadow*", "/etc/gshadow*", "/etc/sudoers*", "/etc/ssh/*key*", "/etc/ssh",
    "/etc/ssl/private", "/etc/security/opasswd", "/etc/machine-id", "/etc/resolv.conf",
    "/root", "/home", "/var", "/run", "/tmp", "/proc", "/sys", "/dev", "/boot", "/mnt",
    "/media", "/srv", "/opt",
)

#: ``/etc/resolv.conf`` is left out unless ``--allow-dns`` asks for it:
#: it names the name servers, which a program without network use has no
#: need to know.
RESOLV_CONF = "/etc/resolv.conf"


def never_shown(home: Optional[str] = None) -> tuple[str, ...]:
    """:data:`NEVER_SHOWN` and the user's home directory (``$HOME`` and the
    password database's, which may differ)."""
    homes = {os.path.expanduser("~"), os.environ.get("HOME", "")}
    if home:
        homes.add(home)
    extra = tuple(posixpath.normpath(h) for h in homes if h.startswith("/") and h != "/")
    return NEVER_SHOWN + extra


def refused_reason(path: str, patterns: Iterable[str] = ()) -> Optional[str]:
    """Why absolute *path* must not be in the view, or None if it may be.

    Refused: a path that is, or is beneath, one of *patterns* (default
    :func:`never_shown`), and a directory that holds one (``/``, ``/etc``,
    ``/var/lib`` … would show it whole).  Patterns are globs on whole
    paths, matched component by component."""
    patterns = tuple(patterns) or never_shown()
    normal = posixpath.normpath(path)
    if not normal.startswith("/"):
        return f"{path} is not an absolute path"
    for pattern in patterns:
        if _at_or_beneath(normal, pattern):
            return f"{normal} is {pattern} or inside it: never shown"
        if _holds(normal, pattern):
            return f"{normal} holds {pattern}: never shown"
    return None


def system_mounts(root: str = "/", *, dns: bool = False,
                  patterns: Iterable[str] = ()) -> list[Mount]:
    """The view of the system under host directory *root*: each entry of the
    lists that exists there and passes :func:`refused_reason` — by its guest
    path and by where its host name really leads (so a symlink into a
    secret is left out) — as a read-only :class:`Mount` at its guest path.
    *dns* adds ``/etc/resolv.conf`` (``--allow-dns``)."""
    root = os.path.abspath(root)
    patterns = tuple(patterns) or never_shown()
    real_root = os.path.realpath(root)
    chosen: list[str] = []
    for guest in (*SYSTEM_DIRECTORIES, *SYSTEM_ETC_DIRECTORIES, *SYSTEM_ETC_FILES):
        if any(_at_or_beneath(guest, other) for other in chosen):
            continue
        chosen.append(guest)
    if dns:
        chosen.append(RESOLV_CONF)
    allowed = tuple(p for p in patterns if not (dns and p == RESOLV_CONF))
    mounts = []
    for guest in chosen:
        host = _host_path(root, guest)
        if not os.path.exists(host):
            continue
        real = os.path.realpath(host)
        # Where the name leads, seen from the root: outside it, or at a
        # refused path inside it, it is not shown.
        if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
            continue
        seen_as = "/" + os.path.relpath(real, real_root) if real != real_root else "/"
        if refused_reason(guest, allowed) or refused_reason(seen_as, allowed):
            continue
        above = None if root == "/" else _host_path(root, posixpath.dirname(guest))
        mounts.append(Mount(guest, host, False, above))
    return mounts


def _host_path(root: str, guest: str) -> str:
    return guest if root == "/" else os.path.join(root, guest.lstrip("/"))


def _at_or_beneath(path: str, pattern: str) -> bool:
    """True if *path* is *pattern* (a glob per component) or beneath it."""
    parts, wanted = _components(path), _components(pattern)
    return (len(parts) >= len(wanted)
            and all(_matches(part, want) for part, want in zip(parts, wanted)))


def _holds(path: str, pattern: str) -> bool:
    """True if directory *path* is above what *pattern* names."""
    parts, wanted = _components(path), _components(pattern)
    return (len(parts) < len(wanted)
            and all(_matches(part, want) for part, want in zip(parts, wanted)))


#: What makes a component a glob (fnmatch's special characters).
GLOB_CHARACTERS = frozenset("*?[")


def _matches(part: str, want: str) -> bool:
    """One component against one of a pattern: a plain name is compared as
    a string, a glob through fnmatch (most components are plain, and
    fnmatch costs ~1 µs each: the view is checked at every start-up)."""
    if GLOB_CHARACTERS.isdisjoint(want):
        return part == want
    return fnmatch.fnmatchcase(part, want)


@functools.lru_cache(maxsize=1024)
def _components(path: str) -> tuple[str, ...]:
    """*path*'s names, cached: the same few dozen paths and patterns are
    split thousands of times when the view is chosen at start-up."""
    return tuple(part for part in path.split("/") if part)


__all__ = ["SYSTEM_DIRECTORIES", "SYSTEM_ETC_FILES", "SYSTEM_ETC_DIRECTORIES", "NEVER_SHOWN",
           "RESOLV_CONF", "never_shown", "refused_reason", "system_mounts"]
