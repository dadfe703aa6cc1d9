"""The private ``/tmp`` and ``/var/tmp`` (:mod:`minikvm.sandbox.private_tmp`).

Each run gets a writable, empty directory of its own at ``/tmp`` (and
``/var/tmp``): ``mktemp`` works under ``--here``; what the program put
there is not in the host's ``/tmp`` and is gone when minikvm is — after a
normal exit, a crash, a death by signal; ``--keep-tmp DIR`` keeps it in
DIR.  The host's ``/tmp`` files are not visible.

minikvm makes the directory in its own ``TMPDIR``; the tests point that at
a directory of their own (and unset it for the program, which would
otherwise make its files there), so that "nothing is left" is checked in
a place no other test writes to.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.guest_runs import run_minikvm, run_native

pytestmark = pytest.mark.kvm

BUSYBOX = shutil.which("busybox")
RUN_TIMEOUT_SECONDS = 90        # a subprocess limit, never an assertion
MKTEMP_NAME = re.compile(r"^/tmp/tmp\.[A-Za-z0-9]{6,}\n$")


def run_in(work: Path, host_tmp: Path, *arguments: object, text: bool = True):
    """``minikvm run --here`` in *work* with minikvm's TMPDIR *host_tmp*."""
    env = dict(os.environ, TMPDIR=str(host_tmp))
    return run_minikvm(["--here", "--unsetenv", "TMPDIR", *arguments], cwd=work, env=env,
                       text=text, timeout=RUN_TIMEOUT_SECONDS)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    work, host_tmp = tmp_path / "work", tmp_path / "hosttmp"
    work.mkdir()
    host_tmp.mkdir()
    return work, host_tmp


@pytest.mark.parametrize("mktemp", ["/usr/bin/mktemp", "busybox"])
def test_mktemp_works_under_here_and_its_file_is_gone_after(mktemp: str, dirs) -> None:
    work, host_tmp = dirs
    command = [mktemp] if mktemp != "busybox" else [BUSYBOX, "mktemp"]
    if command[0] is None or not os.access(command[0], os.X_OK):
        pytest.skip(f"{mktemp} is not installed")
    native = run_native(command, cwd=work, env={"PATH": "/usr/bin"}, text=True,
                        timeout=RUN_TIMEOUT_SECONDS)
    assert native.returncode == 0 and MKTEMP_NAME.match(native.stdout), native.stderr
    os.unlink(native.stdout.strip())
    guest = run_in(work, host_tmp, "--", *command)
    assert (guest.returncode, guest.stderr) == (0, "")
    assert MKTEMP_NAME.match(guest.stdout), guest.stdout
    made = guest.stdout.strip()
    assert not os.path.exists(made)            # it was never the host's /tmp
    assert list(host_tmp.iterdir()) == []      # and the private one is gone
    assert list(work.iterdir()) == []


@pytest.mark.skipif(BUSYBOX is None, reason="needs a static busybox (busybox-static)")
def test_tmp_is_writable_empty_and_shared_with_var_tmp(dirs) -> None:
    work, host_tmp = dirs
    script = ("echo one > /tmp/a; read x < /var/tmp/a; echo $x; echo two > /var/tmp/b; "
              "read y < /tmp/b; echo $y")
    guest = run_in(work, host_tmp, "--", BUSYBOX, "sh", "-c", script)
    assert (guest.stdout, guest.stderr, guest.returncode) == ("one\ntwo\n", "", 0)
    assert list(host_tmp.iterdir()) == []


@pytest.mark.skipif(BUSYBOX is None, reason="needs a static busybox (busybox-static)")
def test_the_hosts_tmp_files_are_not_visible(dirs, tmp_path: Path) -> None:
    work, host_tmp = dirs
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="host-visible-") as host_file:
        guest = run_in(work, host_tmp, "--", BUSYBOX, "sh", "-c",
                       f"test -e {host_file.name} && echo visible; "
                       f"test -e {tmp_path / 'hosttmp'} && echo visible; echo done")
        assert (guest.stdout, guest.returncode) == ("done\n", 0), guest.stderr
        listing = run_in(work, host_tmp, "--", BUSYBOX, "ls", "-a", "/tmp")
    # only the way down to the --here directory, which is under the host's /tmp
    way = work.relative_to("/tmp").parts[0]
    assert listing.stdout.split() == sorted([".", "..", way]), listing.stderr


@pytest.mark.skipif(BUSYBOX is None, reason="needs a static busybox (busybox-static)")
@pytest.mark.parametrize("ending, status", [
    ("exit 3", 3),
    ("kill -SEGV $$", 139),        # the program dies of a signal
    ("while :; do :; done", 124),  # stopped by --timeout
])
def test_the_private_tmp_is_removed_however_the_program_ends(ending: str, status: int,
                                                              dirs) -> None:
    work, host_tmp = dirs
    guest = run_in(work, host_tmp, "--timeout", "3", "--", BUSYBOX, "sh", "-c",
                   f"echo x > /tmp/left; echo y > /var/tmp/other; {ending}")
    assert guest.returncode == status, guest.stderr
    assert list(host_tmp.iterdir()) == []


@pytest.mark.skipif(BUSYBOX is None, reason="needs a static busybox (busybox-static)")
def test_keep_tmp_keeps_the_files_in_dir(dirs, tmp_path: Path) -> None:
    work, host_tmp = dirs
    kept = tmp_path / "kept"
    guest = run_in(work, host_tmp, "--keep-tmp", kept, "--", BUSYBOX, "sh", "-c",
                   "echo kept > /tmp/file")
    assert guest.returncode == 0, guest.stderr
    assert (kept / "file").read_text() == "kept\n"
    assert oct(kept.stat().st_mode & 0o777) == oct(0o700)
    again = run_in(work, host_tmp, "--keep-tmp", kept, "--", BUSYBOX, "true")
    assert again.returncode == 2
    assert again.stderr == (f"minikvm: --keep-tmp {kept}: not empty (the program's /tmp "
                            "starts empty: name a new directory, or empty this one)\n")


def test_the_private_tmp_is_mode_0700(dirs) -> None:
    work, host_tmp = dirs
    stat_program = "/usr/bin/stat"
    if not os.access(stat_program, os.X_OK):
        pytest.skip("/usr/bin/stat is not installed")
    guest = run_in(work, host_tmp, "--", stat_program, "-c", "%a", "/tmp")
    assert (guest.stdout, guest.returncode) == ("700\n", 0), guest.stderr


def test_no_tmp_shows_no_private_tmp(dirs) -> None:
    work, host_tmp = dirs
    guest = run_in(work, host_tmp, "--no-tmp", "--", "/usr/bin/mktemp")
    assert guest.returncode == 1
    assert list(host_tmp.iterdir()) == []
