"""Layer 4 — symlinks from one grant into another, followed as the guest sees them.

Every lookup is made by the kernel beneath one grant's directory fd
(``openat2`` with ``RESOLVE_BENEATH``), so a symlink whose target leaves
that grant fails with EXDEV and the path is hidden.  That is right when
the target is outside every grant, and wrong when it is in another one:
in a bubblewrap view of ``/etc/fonts`` and ``/usr``, the relative link
``/etc/fonts/conf.d/10-hinting-slight.conf ->
../../../usr/share/fontconfig/conf.avail/10-hinting-slight.conf`` works,
because the kernel resolves it in the mount namespace, where both are
bound.  Without it fontconfig sees no aliases and ``fc-match sans`` picks
the wrong font.

:func:`follow_between_grants` does that resolution in the guest's
namespace: it walks the path a component at a time, from ``/``; each
component is looked at with ``O_PATH | O_NOFOLLOW`` beneath the grant
that holds it (or as a directory above a grant), and a symlink's text is
spliced in — an absolute target from ``/``, a relative one from the
directory holding the link — at most :data:`~minikvm.sandbox.grants.MAXSYMLINKS`
times, as the kernel's ``MAXSYMLINKS``.  The result is a path with no
symlinks; the caller then looks *it* up with every usual check, so this
can only find objects that are in a grant through a spelling of their
own: a link to ``/etc/shadow`` still leads nowhere, and a link swapped
between this walk and the lookup can only land inside a grant as well.
Only lookups that do not write use it; a write through such a link stays
refused, as the rights of the object must be checked where it is
(:mod:`minikvm.sandbox.grants`)."""

from __future__ import annotations

import os
import posixpath
import stat as stat_module
from typing import Optional

from minikvm.linux_abi import O_CLOEXEC, O_NOFOLLOW, O_PATH
from minikvm.sandbox.grants import MAXSYMLINKS, GrantTree, Refusal



#: The most components one walk looks at.  A path is at most PATH_MAX
#: (4096) bytes, so ~2048 components, and each of the MAXSYMLINKS links
#: may splice in as many again; a walk longer than this is a guest making
#: the host work, and ends hidden.
MAX_STEPS = 8192


def _look(tree: GrantTree, absolute: str) -> Optional[int]:
    """An ``O_PATH | O_NOFOLLOW`` fd on *absolute*, a path with no symlink
    before its last component, or None where the guest sees nothing."""
    above = tree.open_above(absolute)
    if above is not None:
        return above
    grant = tree.find(absolute)
    if grant is None:
        return None
    root, relative = tree.beneath_root(grant, absolute)
    if root.is_file:
        return os.dup(root.dirfd)
    try:
        return tree.openat2(root, relative, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0, absolute)
    except (Refusal, OSError):
        return None


def follow_between_grants(tree: GrantTree, absolute: str, follow_last: bool) -> Optional[str]:
    """*absolute* (normalized, from ``/``) with every symlink on its way
    resolved in the guest's view — the last component's too when
    *follow_last* — or None if a step is not in the view or there are
    too many links."""
    pending = [part for part in absolute.split("/") if part]
    if not pending:
        return None
    resolved = "/"
    links = steps = 0
    while pending:
        steps += 1
        if steps > MAX_STEPS:
            return None
        name = pending.pop(0)
        if name == ".":
            continue
        if name == "..":
            resolved = posixpath.dirname(resolved)   # resolved holds no symlink
            continue
        candidate = posixpath.join(resolved, name)
        if not pending and not follow_last:
            return candidate
        fd = _look(tree, candidate)
        if fd is None:
            return None
        try:
            if not stat_module.S_ISLNK(os.fstat(fd).st_mode):
                resolved = candidate
                continue
            target = os.readlink("", dir_fd=fd)
        finally:
            os.close(fd)
        links += 1
        if links > MAXSYMLINKS or not target:
            return None
        if target.startswith("/"):
            resolved = "/"
        pending[:0] = [part for part in target.split("/") if part]
    return resolved
