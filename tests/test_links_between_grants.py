"""Symlinks from one grant into another (:mod:`minikvm.sandbox.links`).

A link whose target is in *another* grant is followed, as in a
bubblewrap view where both are bound; one whose target is in no grant
stays hidden (``ENOENT``), whatever route it takes; loops end in
``ELOOP``; and a write through a link out of a read-only grant stays
refused.  The policy is exercised directly (no guest needed), and once
through a real program: fontconfig's ``conf.d`` links in the system view.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from minikvm.sandbox.audit import PolicyDenied
from minikvm.sandbox.policy import Policy
from tests.guest_runs import run_minikvm, run_native


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """a/ and b/ granted, secret/ not; links in a/ to each."""
    for name in ("a", "b", "secret", "b/sub"):
        (tmp_path / name).mkdir()
    (tmp_path / "b" / "f").write_text("in b\n")
    (tmp_path / "b" / "sub" / "g").write_text("deeper\n")
    (tmp_path / "secret" / "s").write_text("secret\n")
    links = {
        "to_b": "../b/f",                          # relative, into b
        "to_b_absolute": str(tmp_path / "b"),      # absolute, a directory in b
        "to_secret": "../secret/s",                # relative, out of every grant
        "via_b_to_secret": "../b/up",              # into b, then out again
        "loop1": "loop2", "loop2": "loop1",
        "to_b_dir": "../b/sub",
    }
    for name, target in links.items():
        os.symlink(target, tmp_path / "a" / name)
    os.symlink("../secret/s", tmp_path / "b" / "up")
    return tmp_path


def read(policy: Policy, path: Path) -> str:
    fd = policy.open(str(path), os.O_RDONLY, 0, "/")
    with os.fdopen(fd) as file:
        return file.read()


def test_a_link_into_another_grant_is_followed(tree: Path) -> None:
    with Policy(read=[tree / "a", tree / "b"]) as policy:
        assert read(policy, tree / "a" / "to_b") == "in b\n"
        assert read(policy, tree / "a" / "to_b_absolute" / "f") == "in b\n"
        assert read(policy, tree / "a" / "to_b_dir" / "g") == "deeper\n"
        assert policy.stat(str(tree / "a" / "to_b_dir"), "/").st_ino == \
            os.stat(tree / "b" / "sub").st_ino
        # lstat still sees the link itself
        assert os.path.islink(tree / "a" / "to_b")
        assert stat.S_ISLNK(policy.stat(str(tree / "a" / "to_b"), "/", follow=False).st_mode)


@pytest.mark.parametrize("name", ["to_secret", "via_b_to_secret"])
def test_a_link_out_of_every_grant_stays_hidden(tree: Path, name: str) -> None:
    with Policy(read=[tree / "a", tree / "b"]) as policy:
        with pytest.raises(PolicyDenied) as denied:
            read(policy, tree / "a" / name)
        assert denied.value.errno == errno.ENOENT
        with pytest.raises(PolicyDenied):
            policy.stat(str(tree / "a" / name), "/")
        assert any("hidden" in denial.reason for denial in policy.denials)


def test_without_the_other_grant_the_link_is_hidden(tree: Path) -> None:
    with Policy(read=[tree / "a"]) as policy:
        with pytest.raises(PolicyDenied) as denied:
            read(policy, tree / "a" / "to_b")
        assert denied.value.errno == errno.ENOENT


def test_a_loop_is_eloop(tree: Path) -> None:
    with Policy(read=[tree / "a"]) as policy:
        with pytest.raises(OSError) as error:
            read(policy, tree / "a" / "loop1")
        assert error.value.errno == errno.ELOOP


def test_a_write_through_a_link_out_of_a_read_only_grant_stays_refused(tree: Path) -> None:
    with Policy(read=[tree / "a"], write=[tree / "b"]) as policy:
        with pytest.raises(PolicyDenied):
            policy.open(str(tree / "a" / "to_b"), os.O_WRONLY, 0, "/")
    assert (tree / "b" / "f").read_text() == "in b\n"


@pytest.mark.kvm
@pytest.mark.skipif(not os.path.exists("/usr/bin/fc-match") or not os.path.isdir("/etc/fonts"),
                    reason="fontconfig is not installed (apt-get install fontconfig)")
def test_fontconfig_finds_its_aliases_in_the_system_view(tmp_path: Path) -> None:
    # /etc/fonts/conf.d/*.conf are relative links into /usr/share/fontconfig.
    # fontconfig's cache (/var/cache/fontconfig) is not in the view, so it
    # warns on stderr and scans the fonts; the answer must be the native one.
    native = run_native(["/usr/bin/fc-match", "sans"], cwd=tmp_path, timeout=120)
    guest = run_minikvm(["--", "/usr/bin/fc-match", "sans"], cwd=tmp_path, timeout=120)
    assert native.returncode == 0 and native.stdout, native.stderr
    assert (guest.stdout, guest.returncode) == (native.stdout, 0), guest.stderr
