"""Busybox applets, natively and under minikvm: the same output, byte for byte.

Debian's ``busybox-static`` (``/bin/busybox``) is a real program nobody
built for minikvm: a stripped, static glibc ET_EXEC with some three hundred
applets.  Each case below runs a few applets in a fresh copy of the same
fixture directory, once natively and once under
``python -m minikvm run --here``, and compares

* stdout, stderr and the exit status of every step, and
* the directory afterwards (every file's type, permission bits, contents),
  so applets that *write* files (gzip, sed -i, tar x) are checked too.

A case is a list of steps; later steps see the files earlier ones made
(``gzip -k``, then ``gunzip -c`` of the result).  stdin, when a step has
it, is piped in.

Nothing here is timed: the runs have a subprocess timeout only so a guest
that spins cannot hang the suite.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.guest_runs import run_minikvm

BUSYBOX = Path("/bin/busybox")
#: Wall-clock limits: minikvm's own (exit 124), then the test's backstop.
GUEST_TIMEOUT_SECONDS = 60
SUBPROCESS_TIMEOUT_SECONDS = 90
#: Every fixture file gets this modification time, so archives and gzip
#: headers made from them are the same natively and in the guest.
FIXED_MTIME = 1_600_000_000

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not BUSYBOX.exists(),
                       reason="/bin/busybox is missing (apt-get install busybox-static)"),
]

WORDS = b"".join(w + b"\n" for w in (
    b"banana", b"apple", b"cherry", b"apple", b"date", b"elderberry", b"fig",
    b"grape", b"banana", b"kiwi", b"lemon", b"mango", b"needle in a haystack"))
NUMBERS = b"".join(b"%d\n" % n for n in (10, 2, 33, 4, 150, 6, 7, 81, 9))
CSV = b"alice:30:paris\nbob:25:rome\ncarol:41:oslo\n"
BINARY = bytes(range(256)) * 3 + b"tail"
#: A larger stdin (a few pipe buffers' worth) for the checksum and sort cases.
BIG_INPUT = b"".join(b"line %06d of the big input\n" % n for n in range(20000))


def make_fixtures(root: Path) -> None:
    """The files every case starts from."""
    files = {
        "words.txt": WORDS,
        "numbers.txt": NUMBERS,
        "data.csv": CSV,
        "binary.bin": BINARY,
        "b64.txt": b"aGVsbG8sIGJ1c3lib3ggaW4gYSBzYW5kYm94Cg==\n",
        "dir/a.txt": b"alpha\n",
        "dir/b.txt": b"bravo needle\n",
        "dir/.hidden": b"secret\n",
        "dir/sub/c.txt": b"charlie needle\n",
        "dir/sub/deeper/d.dat": b"delta\n",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)
    (root / "out").mkdir()
    # Deepest first: creating a file changes its directory's mtime.
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))


@dataclass
class Step:
    """One applet run: its arguments and what is piped to its stdin."""
    args: tuple[str, ...]
    stdin: bytes = b""


@dataclass
class Case:
    """Steps run one after another in one fixture directory."""
    name: str
    steps: list[Step]
    #: Extra ``minikvm run`` options (grants beyond ``--here``).
    options: tuple[str, ...] = ()
    #: Files left out of the directory comparison, with the reason.
    unlike: dict[str, str] = field(default_factory=dict)


def case(name: str, *args: str, stdin: bytes = b"", options: tuple[str, ...] = ()) -> Case:
    """A one-step case."""
    return Case(name, [Step(tuple(args), stdin)], options)


CASES = [
    case("echo", "echo", "hello", "world"),
    case("echo-n", "echo", "-n", "no newline"),
    case("echo-e", "echo", "-e", "tab\\there"),
    case("cat-file", "cat", "words.txt", "data.csv"),
    case("cat-stdin", "cat", stdin=WORDS),
    case("cat-missing", "cat", "missing.txt"),
    case("wc-file", "wc", "words.txt"),
    case("wc-stdin", "wc", "-l", stdin=BIG_INPUT),
    case("sort-file", "sort", "words.txt"),
    case("sort-numeric", "sort", "-n", "-r", "numbers.txt"),
    case("sort-unique-stdin", "sort", "-u", stdin=WORDS),
    case("sort-big-stdin", "sort", "-r", stdin=BIG_INPUT),
    case("head", "head", "-n", "3", "words.txt"),
    case("head-bytes-stdin", "head", "-c", "10", stdin=WORDS),
    case("tail", "tail", "-n", "3", "words.txt"),
    case("tail-stdin", "tail", "-n", "2", stdin=BIG_INPUT),
    case("tr-upper", "tr", "a-z", "A-Z", stdin=WORDS),
    case("tr-delete", "tr", "-d", "aeiou", stdin=WORDS),
    case("cut-fields", "cut", "-d", ":", "-f", "1,3", "data.csv"),
    case("cut-chars-stdin", "cut", "-c", "2-4", stdin=WORDS),
    case("seq", "seq", "10"),
    case("seq-step", "seq", "1", "3", "20"),
    case("seq-width", "seq", "-w", "8", "11"),
    case("sha256sum-files", "sha256sum", "words.txt", "binary.bin"),
    case("sha256sum-stdin", "sha256sum", stdin=BIG_INPUT),
    case("md5sum-files", "md5sum", "words.txt", "binary.bin"),
    case("md5sum-stdin", "md5sum", stdin=BIG_INPUT),
    case("sha256sum-check", "sha256sum", "-c", "-", stdin=(
        hashlib.sha256(WORDS).hexdigest().encode() + b"  words.txt\n"
        + b"0" * 64 + b"  data.csv\n")),
    case("grep", "grep", "-n", "an", "words.txt"),
    case("grep-count-stdin", "grep", "-c", "apple", stdin=WORDS),
    case("grep-extended", "grep", "-E", "^(a|b)", "words.txt"),
    case("grep-no-match", "grep", "zebra", "words.txt"),
    case("grep-recursive", "grep", "-r", "needle", "dir"),
    case("sed-substitute", "sed", "-e", "s/a/A/g", "words.txt"),
    case("sed-range-stdin", "sed", "-n", "2,4p", stdin=WORDS),
    case("sed-in-place", "sed", "-i", "s/apple/APPLE/", "words.txt"),
    case("awk-sum", "awk", "-F:", "{ s += $2 } END { print s, NR }", "data.csv"),
    case("awk-math", "awk", "BEGIN { printf \"%.6f %d\\n\", atan2(1, 1) * 4, 2 ^ 20 }"),
    case("awk-stdin", "awk", "{ n[$1]++ } END { for (w in n) if (n[w] > 1) print w }",
         stdin=WORDS),
    case("printf", "printf", "%s=%05d %x %c\\n", "answer", "42", "255", "Z"),
    case("basename", "basename", "/usr/lib/libc.so.6", ".6"),
    case("dirname", "dirname", "/usr/lib/libc.so.6"),
    case("ls-1", "ls", "-1", "dir"),
    case("ls-a", "ls", "-a", "dir"),
    case("ls-recursive", "ls", "-1", "-R", "dir"),
    case("find", "find", "dir"),
    case("find-name", "find", ".", "-name", "*.txt"),
    case("find-type", "find", ".", "-type", "d"),
    Case("gzip-round-trip", [Step(("gzip", "-k", "-9", "words.txt")),
                             Step(("gunzip", "-c", "words.txt.gz"))]),
    Case("gzip-in-place", [Step(("gzip", "binary.bin")),
                           Step(("gunzip", "binary.bin.gz"))]),
    Case("gzip-stdin", [Step(("gzip", "-c"), BIG_INPUT)]),
    case("gunzip-bad-input", "gunzip", "-c", stdin=b"not gzip at all\n"),
    case("base64-encode", "base64", "binary.bin"),
    case("base64-decode", "base64", "-d", "b64.txt"),
    case("od-hex", "od", "-A", "x", "-t", "x1", "binary.bin"),
    case("od-chars-stdin", "od", "-c", stdin=b"a\tb\0c\n"),
    Case("tar-round-trip", [Step(("tar", "cf", "archive.tar", "dir")),
                            Step(("tar", "tf", "archive.tar")),
                            Step(("tar", "xf", "archive.tar", "-C", "out"))],
         options=("--allow-read", "/etc")),
    Case("tar-stdout", [Step(("tar", "cf", "-", "dir"))], options=("--allow-read", "/etc")),
    case("true", "true"),
    case("false", "false"),
    # beyond the list: more applets people reach for, and the calls they need
    case("uniq", "uniq", "-c", stdin=b"a\na\nb\na\n"),
    case("sleep", "sleep", "0.1"),
    case("date", "date", "-u", "-d", "@0"),
    case("id", "id", options=("--allow-read", "/etc")),
    case("uname", "uname", "-s", "-m"),
    case("ls-long", "ls", "-l", "dir", options=("--allow-read", "/etc")),
    case("stat", "stat", "-c", "%n %s %a %F", "words.txt", "dir"),
    case("du", "du", "-s", "dir"),
    case("mkdir-p", "mkdir", "-p", "made/deep/er"),
    Case("cp-mv-rm", [Step(("cp", "-r", "dir", "copy")), Step(("mv", "copy/a.txt", "moved.txt")),
                      Step(("rm", "-r", "copy/sub")), Step(("ls", "-1", "copy"))]),
    case("dd", "dd", "if=binary.bin", "of=out/part.bin", "bs=100", "skip=1", "count=3"),
    case("sh-builtins", "sh", "-c", "x=6; echo $((x * 7)); for w in a b; do printf '%s;' $w; "
                                    "done; echo; test -d dir && echo dir is there"),
    case("expr", "expr", "length", "sandbox"),
    case("env", "env", "-i", "ONLY=this"),
]


@dataclass
class Outcome:
    """What one run of a step produced."""
    stdout: bytes
    stderr: bytes
    status: int


def run_native(args: tuple[str, ...], stdin: bytes, cwd: Path) -> Outcome:
    done = subprocess.run([str(BUSYBOX), *args], input=stdin, cwd=cwd, capture_output=True,
                          timeout=SUBPROCESS_TIMEOUT_SECONDS, env=_environment())
    return Outcome(done.stdout, done.stderr, done.returncode)


def run_guest(args: tuple[str, ...], stdin: bytes, cwd: Path,
              options: tuple[str, ...]) -> Outcome:
    done = run_minikvm(["--here", "--timeout", GUEST_TIMEOUT_SECONDS, *options, "--", BUSYBOX,
                        *args], input=stdin, cwd=cwd, env=_environment(),
                       timeout=SUBPROCESS_TIMEOUT_SECONDS)
    return Outcome(done.stdout, done.stderr, done.returncode)


def _environment() -> dict[str, str]:
    """A small, fixed environment: the same locale and no colours both ways."""
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": "/nonexistent", "TERM": "dumb"}


def tree(root: Path, leave_out: dict[str, str]) -> dict[str, tuple]:
    """Everything under *root*: relative path -> (kind, permission bits, contents)."""
    found: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if name in leave_out:
            continue
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            found[name] = ("symlink", 0, os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            found[name] = ("dir", stat.S_IMODE(info.st_mode), None)
        else:
            found[name] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return found


@pytest.mark.parametrize("busybox_case", CASES, ids=[c.name for c in CASES])
def test_applet_matches_native(busybox_case: Case, tmp_path: Path) -> None:
    native_dir, guest_dir = tmp_path / "native", tmp_path / "guest"
    for root in (native_dir, guest_dir):
        root.mkdir()
        make_fixtures(root)
    for number, step in enumerate(busybox_case.steps, 1):
        native = run_native(step.args, step.stdin, native_dir)
        guest = run_guest(step.args, step.stdin, guest_dir, busybox_case.options)
        where = f"step {number}: busybox {' '.join(step.args)}"
        assert guest.stderr.decode(errors="replace") == native.stderr.decode(errors="replace"), where
        assert guest.stdout == native.stdout, where
        assert guest.status == native.status, where
    assert tree(guest_dir, busybox_case.unlike) == tree(native_dir, busybox_case.unlike)


@pytest.mark.parametrize("applet", ["true", "false"])
def test_exit_status_of_true_and_false(applet: str, tmp_path: Path) -> None:
    """The exit status alone, stated plainly: 0 for true, 1 for false."""
    expected = 0 if applet == "true" else 1
    assert run_guest((applet,), b"", tmp_path, ()).status == expected
