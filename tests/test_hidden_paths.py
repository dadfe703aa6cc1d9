"""Read-only grants and hidden paths, under real programs.

Two promises of the sandbox policy (:mod:`minikvm.sandbox.policy`):

* **A read-only grant reads.**  Every reading operation — list, stat,
  readlink, open and mmap for reading, getdents, statfs, access, chdir —
  works under ``--allow-read DIR``, and every writing one is refused with
  ``EACCES``.  (It did not: every ``openat(…, O_DIRECTORY)`` was taken for
  a write, because ``O_TMPFILE``'s value contains ``O_DIRECTORY``; so ``ls``,
  ``find``, ``du`` and ``grep -r`` failed.)  ``tests/hostile/read_only_grant.c``
  tries each operation; busybox's ``find``, ``ls -R``, ``grep -r`` and ``du``
  are compared with native runs of the same applets.
* **Outside the grants, nothing exists.**  A path outside every grant is
  ``ENOENT``, so a program that walks up the tree looking for a
  configuration file (``tests/programs/config_walk.c``) moves on and reports
  "not found" exactly as natively without the file, instead of stopping on
  ``EACCES``; the directories above a grant exist and list only the way down.

Nothing here is timed; subprocess timeouts only stop a guest that hangs.
"""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest

from tests.guest_runs import run_minikvm
from tests.programs.build import DEFAULT_BUILD_DIR, build, program

pytestmark = pytest.mark.kvm

HOSTILE = Path(__file__).resolve().parent / "hostile"
BUSYBOX = Path("/bin/busybox")
VARIANTS = ("glibc-static", "musl-static")
RUN_TIMEOUT_SECONDS = 90        # a subprocess limit, never an assertion
#: These tests are about the grants alone: no system view, no private /tmp
#: (the tests' directories are under the host's /tmp, which the private one
#: would show in front of the directories above a grant).
BARE = ["--no-system", "--no-tmp"]
EACCES = errno.EACCES

#: What tests/hostile/read_only_grant.c must get in a read-only grant.
READ_ONLY_GRANT = {
    **{name: 0 for name in (
        "open-read", "open-read-through-link", "open-directory", "open-directory-nonblock",
        "open-directory-plain", "open-path", "openat-from-path-fd", "fstatat-from-path-fd",
        "opendir-readdir", "stat", "lstat", "stat-directory", "readlink", "access-read",
        "access-exists", "statfs", "mmap-private-read", "mmap-shared-read", "chdir",
        "getcwd-relative-open")},
    **{name: EACCES for name in (
        "open-write", "open-read-write", "open-append", "open-truncate", "open-create",
        "open-tmpfile", "open-directory-write", "mmap-shared-write", "mkdir", "rmdir",
        "unlink", "rename", "link", "symlink", "chmod", "truncate", "utimes",
        "access-write")},
}


def results(stdout: str) -> dict[str, int]:
    """The ``NAME: ERRNO`` lines a program printed, as a dict."""
    found = {}
    for line in stdout.splitlines():
        name, sep, value = line.partition(": ")
        if sep and value.isdigit():
            found[name] = int(value)
    return found


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under *root*: type, mode, size, mtime and contents."""
    seen = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        body = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        seen[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, body)
    return seen


def guest(arguments: list, cwd: Path) -> subprocess.CompletedProcess:
    done = run_minikvm([*BARE, *arguments], cwd=cwd, text=True, timeout=RUN_TIMEOUT_SECONDS)
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    return done


# --- a read-only grant reads, and only reads ------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_reading_operation_works_in_a_read_only_grant(variant, tmp_path):
    grant = tmp_path / "grant"
    (grant / "dir").mkdir(parents=True)
    (grant / "file").write_text("contents\n")
    (grant / "dir" / "inner").write_text("inner\n")
    (grant / "link").symlink_to("file")
    before = snapshot(grant)
    done = guest(["--allow-read", grant, build(HOSTILE / "read_only_grant.c",
                                               DEFAULT_BUILD_DIR / "hostile", variant), grant],
                 cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    got = results(done.stdout)
    wrong = {name: (errno.errorcode.get(got.get(name, -1), got.get(name)), "expected",
                    errno.errorcode.get(wanted, "success"))
             for name, wanted in READ_ONLY_GRANT.items() if got.get(name) != wanted}
    assert not wrong, wrong
    assert snapshot(grant) == before, "a read-only grant changed"


def make_tree(root: Path) -> None:
    """A small source tree for the busybox walkers."""
    for name, text in {"README": "hello needle\n", "src/main.c": "int main;\n",
                       "src/lib/util.c": "/* needle */\n", "src/lib/util.h": "\n",
                       "docs/guide.txt": "no match here\n", "empty/.keep": ""}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "link-to-readme").symlink_to("README")


#: Applets that walk a directory tree, each run in the granted directory.
WALKERS = {
    "find": ["find", "."],
    "find-files": ["find", ".", "-type", "f", "-name", "*.c"],
    "ls-R": ["ls", "-R"],
    "ls-laR": ["ls", "-laRn", "--full-time"],
    "grep-r": ["grep", "-r", "needle", "."],
    "grep-rl": ["grep", "-rl", "needle", "src", "README"],
    "du": ["du", "-a", "."],
    "du-s": ["du", "-s", "src", "docs"],
}


@pytest.mark.skipif(not BUSYBOX.exists(),
                    reason="/bin/busybox is missing (apt-get install busybox-static)")
@pytest.mark.parametrize("walker", WALKERS)
def test_tree_walkers_in_a_read_only_grant_match_native(walker, tmp_path):
    grant = tmp_path / "tree"
    grant.mkdir()
    make_tree(grant)
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC"}
    native = subprocess.run([BUSYBOX, *WALKERS[walker]], cwd=grant, capture_output=True,
                            text=True, env=env, timeout=RUN_TIMEOUT_SECONDS)
    done = run_minikvm([*BARE, "--allow-read", grant, "--", BUSYBOX, *WALKERS[walker]], cwd=grant,
                       env=env, text=True, timeout=RUN_TIMEOUT_SECONDS)
    assert done.stderr == native.stderr
    assert (done.stdout, done.returncode) == (native.stdout, native.returncode)
    assert native.returncode == 0 and native.stdout, native.stderr


# --- outside the grants nothing exists ------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_config_file_walk_moves_on_past_the_grants(variant, tmp_path):
    """A tool looking for .editorconfig from a deep directory up to "/" sees
    what a bubblewrap user sees: the file outside the grant does not exist, so
    it reports "not found" as natively without the file — not EACCES."""
    deep = tmp_path / "project" / "src" / "deep"
    deep.mkdir(parents=True)
    walk = program("config_walk", variant)
    native = subprocess.run([walk, ".editorconfig-minikvm"], cwd=deep, capture_output=True,
                            text=True, timeout=RUN_TIMEOUT_SECONDS)
    assert native.returncode == 0 and native.stdout.endswith("not found\n"), native.stdout
    (tmp_path / "project" / ".editorconfig-minikvm").write_text("root = true\n")
    done = guest(["--allow-read", deep, "--audit", walk, ".editorconfig-minikvm"], cwd=deep)
    assert (done.stdout, done.returncode) == (native.stdout, native.returncode)
    # the audit names the hidden file, so a user can see why it was not found
    assert (f"({tmp_path}/project/.editorconfig-minikvm) = -ENOENT (hidden: outside "
            "allowed paths)") in done.stderr, done.stderr
    # with the project granted, it is found
    found = guest(["--allow-read", tmp_path / "project", walk, ".editorconfig-minikvm"],
                  cwd=deep)
    assert found.returncode == 0
    assert found.stdout.endswith(f"found: {tmp_path}/project/.editorconfig-minikvm\n")


@pytest.mark.skipif(not BUSYBOX.exists(),
                    reason="/bin/busybox is missing (apt-get install busybox-static)")
def test_directories_above_a_grant_hold_only_the_way_down(tmp_path):
    grant = tmp_path / "a" / "b"
    grant.mkdir(parents=True)
    (grant / "f").write_text("f\n")
    (tmp_path / "a" / "secret").write_text("secret\n")
    (tmp_path / "sibling").mkdir()

    def busybox(*args: object) -> subprocess.CompletedProcess:
        return guest(["--allow-read", grant, "--trace", "--", BUSYBOX, *args], cwd=tmp_path)

    listing = busybox("ls", "-a", ".", "a")
    assert (listing.stdout, listing.returncode) == (".:\n.\n..\na\n\na:\n.\n..\nb\n", 0)
    found = busybox("find", tmp_path)
    assert found.stdout.splitlines() == [str(tmp_path), f"{tmp_path}/a", f"{tmp_path}/a/b",
                                         f"{tmp_path}/a/b/f"], found.stderr
    secret = busybox("cat", "a/secret")
    assert "cat: can't open 'a/secret': No such file or directory" in secret.stderr
    assert "= -1 ENOENT (hidden: outside allowed paths)" in secret.stderr
    sibling = busybox("ls", "sibling")
    assert "sibling: No such file or directory" in sibling.stderr
    made = busybox("mkdir", "a/new")
    assert made.returncode == 1 and "Permission denied" in made.stderr, made.stderr
    assert not (tmp_path / "a" / "new").exists()
