"""Issue 10, classes 1 and 2: rights follow the object the kernel finds, not the spelling.

Class 1 — a read-only grant nested in a writable one (``W`` read-write,
``W/a/ro`` read-only) must stay read-only whatever way the guest spells its
way in: a symlink it makes in ``W``, a rename of ``W/a``, a hard link, its
working directory.  ``tests/hostile/nested_grants.c`` tries each; every
attempt must be EACCES, every control must work, and the read-only tree
must be byte for byte as it was.

Class 2 — an allowed unix socket must be the object that was allowed: the
guest replaces its name (a symlink, a rename, a swapped parent directory)
by another listening socket; the connection must still reach the allowed
server (it is pinned when the policy is built), never the other.
"""

from __future__ import annotations

import errno
import socket
import threading
from pathlib import Path

import pytest

from tests.test_hostile import VARIANTS, assert_clean, expect, hostile, minikvm, snapshot

EACCES = errno.EACCES

#: What each attack of nested_grants.c must get.  The controls get 0.
NESTED_GRANT_ATTACKS = {
    "control-write": 0, "control-symlink": 0, "control-write-via-symlink": 0,
    "control-dangling": 0, "control-create-via-dangling": 0, "control-read-ro": 0,
    "make-link": 0,
    "symlink-write": EACCES, "symlink-truncate": EACCES, "symlink-create": EACCES,
    "symlink-tmpfile": EACCES, "symlink-truncate-path": EACCES, "symlink-chmod": EACCES,
    "symlink-utimes": EACCES, "symlink-unlink": EACCES, "symlink-mkdir": EACCES,
    "symlink-rmdir": EACCES, "symlink-symlink": EACCES,
    "symlink-rename-out": EACCES, "symlink-rename-in": EACCES, "symlink-access-w": EACCES,
    "make-file-link": 0, "file-symlink-write": EACCES, "file-symlink-chmod": EACCES,
    "hardlink-follow": EACCES, "hardlink-direct": EACCES, "hardlink-write": errno.ENOENT,
    "make-dangling": 0, "dangling-create": EACCES,
    "make-dangling2": 0, "dangling-chain-create": EACCES,
    "rename-parent": EACCES, "renamed-parent-write": errno.ENOENT,
    "rename-grant": EACCES, "rename-grant-via-link": 0,
    "exchange-parent": EACCES, "rmdir-parent": EACCES,
    "fd-open-read": 0, "fd-fchmod": EACCES, "fd-futimens": EACCES,
    "chdir-link": 0, "cwd-write": EACCES, "cwd-create": EACCES, "cwd-dotdot-control": 0,
}


@pytest.fixture
def nested_tree(tmp_path: Path) -> Path:
    w = tmp_path / "w"
    (w / "a" / "ro" / "sub").mkdir(parents=True)
    (w / "a" / "ro" / "secret").write_text("secret\n")
    (w / "mine").write_text("mine\n")
    return w


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_nested_read_only_grant_stays_read_only(variant, nested_tree):
    w, ro = nested_tree, nested_tree / "a" / "ro"
    before = snapshot(ro)
    run = minikvm("--allow-write", w, "--allow-read", ro, hostile("nested_grants", variant), w,
                  cwd=w.parent)
    assert_clean(run)
    assert run.status == 0, run.stderr
    expect(run.results(), NESTED_GRANT_ATTACKS)
    assert snapshot(ro) == before
    assert (w / "mine").read_text() == "mine\nXXX"      # the three controls wrote
    assert (w / "made").exists()                        # created through a dangling link
    assert not (w / "stolen").exists() and not (w / "hard").exists()


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_writable_grant_nested_in_a_read_only_one_is_writable_only_inside(
        variant, tmp_path):
    """The other nesting: ``R`` read-only with ``R/w`` writable.  Writes land
    in ``R/w`` by any spelling, and a symlink in ``R/w`` leading up into
    ``R`` does not carry the write rights along."""
    r = tmp_path / "r"
    (r / "w").mkdir(parents=True)
    (r / "secret").write_text("secret\n")
    before = snapshot(r)
    run = minikvm("--allow-read", r, "--allow-write", r / "w",
                  hostile("escape_files", variant), r / "w", r, cwd=tmp_path)
    assert_clean(run)
    results = run.results()
    assert results["inside-create"] == 0                 # r/w/created: writable
    assert results["outside-write"] == EACCES            # r/secret: read-only
    assert results["outside-create"] == EACCES           # r/new
    assert results["outside-read"] == 0                  # but readable: R is granted
    after = snapshot(r)
    assert {name for name in after if name.startswith("w")} >= {"w", "w/created"}
    assert {k: v for k, v in after.items() if not k.startswith("w")} == \
        {k: v for k, v in before.items() if not k.startswith("w")}


class SocketServer:
    """A unix socket server on a thread that answers every connection with *reply*."""

    def __init__(self, path: Path, reply: bytes) -> None:
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen(4)
        self.listener.settimeout(30)
        self.reply = reply
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(16)
                connection.sendall(self.reply)

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("how", ["none", "symlink", "rename", "parent"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_an_allowed_unix_socket_cannot_be_redirected(variant, how, tmp_path):
    w = tmp_path / "w"
    (w / "run").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    allowed = w / "run" / "app.sock"
    # the other socket is outside the grants, or (for "rename") in the same
    # writable directory, where the guest can move it over the allowed name
    other = (w / "run" / "other.sock") if how == "rename" else (elsewhere / "other.sock")
    servers = [SocketServer(allowed, b"allowed"), SocketServer(other, b"other")]
    try:
        run = minikvm("--allow-write", w, "--allow-connect", f"unix:{allowed}",
                      hostile("redirect_socket", variant), how, allowed, other, cwd=tmp_path)
    finally:
        for server in servers:
            server.close()
    assert_clean(run)
    results = run.results()
    assert results["redirect"] == 0, run.stdout        # the guest did redirect the name
    assert results["connect"] == 0, run.stdout + run.stderr
    assert "reply: allowed" in run.stdout, run.stdout
    assert "reply: other" not in run.stdout
