"""The file, poll and futex system calls: the same answers as Linux, and the policy's.

* ``tests/programs/fsops.c`` makes, lists, stats, renames, links, truncates,
  touches, chmods, copies, closes ranges, polls and uses futexes — and
  misuses each call to get its errno.  It runs natively and under minikvm
  (every variant) in a fresh directory; the outputs must be identical.
* ``tests/programs/fspolicy.c`` does the same against a read-only grant, a
  directory outside every grant and a symlink leading out; minikvm's
  answers are pinned here, and the files outside are checked untouched.
* Blocking calls that could never return in a one-thread guest either end
  the run (a futex deadlock) or are stopped by ``--timeout``.
* The pure parts — record packing, the table's argument lists — are
  checked without a guest.
"""

from __future__ import annotations

import inspect
import os
import struct
import subprocess
from pathlib import Path

import pytest

from minikvm.syscalls import directories, files, metadata, poll, sync
from minikvm.syscalls.base import Syscall
from minikvm.syscalls.dispatch import Dispatcher
from tests.guest_runs import run_minikvm, run_native
from tests.programs.build import STATIC_VARIANTS, program

SUBPROCESS_TIMEOUT_SECONDS = 90


def minikvm(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return run_minikvm(args, cwd=cwd, timeout=SUBPROCESS_TIMEOUT_SECONDS)


# -- fsops: natively and under minikvm ----------------------------------------------------
@pytest.mark.kvm
@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_fsops_same_as_native(variant: str, tmp_path: Path) -> None:
    executable = program("fsops", variant)
    (tmp_path / "native").mkdir()
    (tmp_path / "guest").mkdir()
    native = run_native([executable], cwd=tmp_path / "native", env={"LANG": "C"},
                        timeout=SUBPROCESS_TIMEOUT_SECONDS)
    assert native.returncode == 0, native.stdout.decode() + native.stderr.decode()
    guest = minikvm(["--here", "--timeout=60", "--", str(executable)], tmp_path / "guest")
    assert guest.stderr == b""
    native_lines = native.stdout.decode().splitlines()
    guest_lines = guest.stdout.decode().splitlines()
    assert guest_lines == native_lines
    assert guest.returncode == 0


# -- fspolicy: what the grants refuse --------------------------------------------------------
EXPECTED_POLICY = """\
-- a read-only grant can be read
stat ro/ro.txt: ok
open ro/ro.txt: ok
statfs ro: ok
-- but not changed
mkdir ro/new: EACCES
unlink ro/ro.txt: EACCES
rmdir ro/sub: EACCES
rename ro/ro.txt here: EACCES
symlink in ro: EACCES
link ro/ro.txt here: EACCES
chmod ro/ro.txt: EACCES
chmod ro itself: EACCES
utimensat ro/ro.txt: EACCES
truncate ro/ro.txt: EACCES
fchmod fd of ro/ro.txt: EACCES
futimens fd of ro/ro.txt: EACCES
chown ro/ro.txt to its owner: EACCES
-- outside every grant
stat outside/secret.txt: ENOENT
statfs outside: ENOENT
chmod outside/secret.txt: ENOENT
truncate outside/secret.txt: ENOENT
unlink outside/secret.txt: ENOENT
readlink outside/secret.txt: ENOENT
-- a symlink out of the write grant
symlink escape -> outside/secret.txt: ok
open escape: ENOENT
chmod escape (follows): ENOENT
utimensat escape (follows): ENOENT
truncate escape: ENOENT
linkat escape FOLLOW: ENOENT
utimensat escape NOFOLLOW: ok
lchown escape: ok
linkat escape (the link itself): ok
rename escape: ok
unlink escape2: ok
unlink hard3: ok
-- the write grant
rmdir the grant: EACCES
mkdir ..: EEXIST
mkdir made: ok
rename made made2: ok
chmod made2: ok
rmdir made2: ok
chown mine.txt to another user: EPERM
fchown mine.txt to another group: EPERM
chown mine.txt to its owner: ok
fchmod stdout: EPERM
fchmod mine.txt: ok
unlink mine.txt: ok
"""


def snapshot(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under *directory*: mode, mtime and contents."""
    found = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        contents = path.read_bytes() if path.is_file() else b""
        found[str(path.relative_to(directory))] = (st.st_mode, st.st_mtime_ns, contents)
    return found


@pytest.mark.kvm
@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_policy_refusals(variant: str, tmp_path: Path) -> None:
    executable = program("fspolicy", variant)
    read_only, outside, work = tmp_path / "ro", tmp_path / "outside", tmp_path / "work"
    for directory in (read_only / "sub", outside, work):
        directory.mkdir(parents=True)
    (read_only / "ro.txt").write_text("read me\n")
    (outside / "secret.txt").write_text("secret\n")
    before = snapshot(read_only), snapshot(outside)
    result = minikvm(["--here", f"--allow-read={read_only}", "--timeout=60", "--",
                      str(executable), str(read_only), str(outside)], work)
    assert result.stderr == b""
    assert result.stdout.decode() == EXPECTED_POLICY
    assert result.returncode == 0
    assert (snapshot(read_only), snapshot(outside)) == before
    assert list(work.iterdir()) == []


# -- calls that block ---------------------------------------------------------------------------
@pytest.mark.kvm
def test_a_futex_deadlock_ends_the_run(tmp_path: Path) -> None:
    executable = program("fsops", "musl-static")
    result = minikvm(["--timeout=60", "--", str(executable), "futex-deadlock"], tmp_path)
    assert result.stdout == b"blocking: futex-deadlock\n"
    assert result.returncode == 137
    assert result.stderr.decode().startswith("SIGKILL: deadlock: FUTEX_WAIT on 0x")


@pytest.mark.kvm
@pytest.mark.parametrize("how", ["futex-long", "poll-forever"])
def test_long_waits_stop_at_the_time_limit(how: str, tmp_path: Path) -> None:
    executable = program("fsops", "musl-static")
    result = minikvm(["--timeout=1", "--", str(executable), how], tmp_path)
    assert result.stdout == f"blocking: {how}\n".encode()
    assert result.returncode == 124, result.stderr
    assert b"timed out" in result.stderr


# -- the pure parts ---------------------------------------------------------------------------
def test_dirent64_records() -> None:
    record = directories.pack_dirent64(b"hello.txt", 1234, directories.DT_REG, 7)
    assert len(record) % 8 == 0
    inode, offset, length, d_type = directories.DIRENT64_HEADER.unpack_from(record)
    assert (inode, offset, length, d_type) == (1234, 7, len(record), directories.DT_REG)
    name = record[directories.DIRENT64_HEADER.size:]
    assert name.rstrip(b"\0") == b"hello.txt" and name.endswith(b"\0")
    # 19 header bytes + "." + NUL = 21: padded to 24
    assert len(directories.pack_dirent64(b".", 1, directories.DT_DIR, 1)) == 24


def test_old_dirent_records_end_with_the_type() -> None:
    record = directories.pack_dirent(b"ab", 9, directories.DT_LNK, 3)
    assert len(record) % 8 == 0
    assert record[-1] == directories.DT_LNK
    assert directories.DIRENT_HEADER.unpack_from(record) == (9, 3, len(record))
    assert record[directories.DIRENT_HEADER.size:directories.DIRENT_HEADER.size + 3] == b"ab\0"


def test_struct_sizes_are_the_kernels() -> None:
    assert struct.calcsize(metadata.STATX_FORMAT) == 256
    assert metadata.STATFS_SIZE == 120
    assert struct.calcsize(metadata.STAT_FORMAT) == 144
    statx = metadata.pack_statx(os.stat(__file__))
    mask, _, _, nlink = struct.unpack_from("<IIQI", statx)
    assert mask == metadata.STATX_BASIC_STATS and nlink >= 1
    assert struct.unpack_from("<Q", statx, 40)[0] == os.stat(__file__).st_size  # stx_size


@pytest.mark.parametrize(("raw", "name"), [(b"a/b", b"b"), (b"a/.", b"."), (b"..", b".."),
                                           (b"dir/", b"dir"), (b"/", b"/"), (b"//", b"/")])
def test_final_name_is_what_the_guest_wrote(raw: bytes, name: bytes) -> None:
    assert files.final_name(raw) == name


@pytest.mark.parametrize("module", [files, poll, sync], ids=lambda m: m.__name__)
def test_each_entry_lists_one_kind_per_handler_argument(module) -> None:
    for entry in module.SYSCALLS:
        parameters = list(inspect.signature(entry.handler).parameters)[1:]  # after proc
        assert len(entry.args) == len(parameters), (
            f"{entry.name}: args {entry.args} but the handler takes {parameters}")


def test_dispatcher_add() -> None:
    dispatcher = Dispatcher(None)  # type: ignore[arg-type]  (no call is made)
    extra = Syscall(285, "fallocate", lambda proc, fd: 0, ("fd",))
    dispatcher.add(extra)
    assert dispatcher.entries[285] is extra
    with pytest.raises(ValueError, match="already handled by fallocate"):
        dispatcher.add(Syscall(285, "other", lambda proc: 0))
    dispatcher.add(Syscall(285, "other", lambda proc: 0), replace=True)
    assert dispatcher.entries[285].name == "other"
    with pytest.raises(ValueError, match="outside"):
        dispatcher.add(Syscall(4096, "huge", lambda proc: 0))


def test_every_handler_is_typed_and_documented() -> None:
    """The seam a reader follows (run loop -> dispatcher -> handler): each
    handler in the table says what it does and takes ``proc: Process`` and
    typed arguments (issue 15)."""
    from minikvm.syscalls.table import FAMILIES
    missing = []
    for family, entries in FAMILIES.items():
        for entry in entries:
            parameters = list(inspect.signature(entry.handler).parameters.values())
            if not (entry.handler.__doc__ or "").strip():
                missing.append(f"{family}.{entry.name}: no docstring")
            if not parameters or parameters[0].annotation not in ("Process", "'Process'") and \
                    getattr(parameters[0].annotation, "__name__", "") != "Process":
                missing.append(f"{family}.{entry.name}: first parameter is not proc: Process")
            missing += [f"{family}.{entry.name}: {p.name} untyped" for p in parameters[1:]
                        if p.annotation is inspect.Parameter.empty]
    assert not missing, "\n".join(missing)
