"""Real programs nobody wrote for minikvm, natively and under minikvm: the same output.

Busybox has its own file (tests/test_busybox.py); this one runs the rest:

* shells Debian ships statically — ``bash-static``, ``zsh-static``,
  busybox's ``ash`` and ``mksh`` (built with glibc, musl, klibc and
  dietlibc) — running scripts of builtins only (in
  ``tests/programs/inputs``): minikvm runs one process, so a pipeline, a
  command substitution or an external command, which fork, are refused;
  :func:`test_shell_says_fork_was_refused` checks the shells say so plainly;
* small drivers (``tests/programs/sqlite_exec.c``, ``zlib_gzip.c``,
  ``lua_script.c``) linked against the real libraries Debian ships as
  static archives — SQLite, zlib and Lua 5.4 — built by
  :func:`tests.programs.build.program`, glibc only;
* ``e2fsck.static`` repairing a damaged ext4 image made by ``mke2fs`` and
  ``debugfs`` (run natively to set the case up), and ``gpgv-static``
  checking an OpenPGP signature (libgcrypt's Ed25519).

Each case runs its steps in a fresh copy of the same fixture directory,
once natively and once under ``python -m minikvm run --here``, and
compares stdout, stderr, the exit status and the directory afterwards
(every file's kind, permission bits and contents), so what a program
*wrote* (a SQLite database, a gzip file) is checked byte for byte too.
A missing package skips its cases and names the package.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from tests.guest_runs import run_minikvm
from tests.programs.build import SOURCE_DIR, program

#: The scripts the cases run and the files they read, copied into each run's
#: directory.  ``signer.gpg`` is a keyring with one Ed25519 key, which made
#: ``signed.txt.asc``, a signature of ``signed.txt`` (``gpg --detach-sign``).
INPUTS = SOURCE_DIR / "inputs"
#: Wall-clock limits: minikvm's own (exit 124), then the test's backstop.
GUEST_TIMEOUT_SECONDS = 60
SUBPROCESS_TIMEOUT_SECONDS = 90

pytestmark = pytest.mark.kvm

#: Static programs from Debian packages: name -> (path, package).
INSTALLED = {
    "bash": (Path("/bin/bash-static"), "bash-static"),
    "zsh": (Path("/bin/zsh-static"), "zsh-static"),
    "busybox": (Path("/bin/busybox"), "busybox-static"),
    "mksh-glibc": (Path("/bin/lksh"), "mksh"),
    "mksh-musl": (Path("/usr/lib/x86_64-linux-musl/bin/mksh"), "mksh"),
    "mksh-klibc": (Path("/usr/lib/klibc/bin/mksh"), "mksh"),
    "mksh-dietlibc": (Path("/usr/lib/diet/bin/mksh"), "mksh"),
    "e2fsck": (Path("/sbin/e2fsck.static"), "e2fsck-static"),
    "gpgv": (Path("/usr/bin/gpgv-static"), "gpgv-static"),
}

WORDS = b"".join(b"%d %s\n" % (n, w) for n, w in enumerate(
    (b"banana", b"apple", b"cherry", b"apple", b"date", b"elderberry", b"fig") * 40))


def make_fixtures(root: Path) -> None:
    """The files every case starts from: a text file and the inputs."""
    (root / "words.txt").write_bytes(WORDS)
    for source in sorted(INPUTS.iterdir()):
        shutil.copyfile(source, root / source.name)
    for path in root.iterdir():
        path.chmod(0o644)


@dataclass
class Step:
    """One run: the program (a key of INSTALLED, or a program in
    tests/programs), its arguments and what is piped to its stdin."""
    program: str
    args: tuple[str, ...]
    stdin: bytes = b""


@dataclass
class Case:
    """Steps run one after another in one fixture directory."""
    name: str
    steps: list[Step]
    #: The build of the tests/programs ones.
    variant: str = "glibc-static"
    #: Extra environment variables, both ways.
    env: dict[str, str] = field(default_factory=dict)
    #: Extra ``minikvm run`` options (grants beyond ``--here``).
    options: tuple[str, ...] = ()
    #: Makes more fixtures in the directory (natively, before either run).
    setup: Callable[[Path], None] | None = None


def case(name: str, program_name: str, *args: str, stdin: bytes = b"",
         variant: str = "glibc-static", env: dict[str, str] | None = None) -> Case:
    """A one-step case."""
    return Case(name, [Step(program_name, args, stdin)], variant, env or {})


def sql(name: str, database: str, *statements: str) -> Case:
    return case(name, "sqlite_exec", database, *statements)


TABLE = ("create table fruit(id integer primary key, name text unique, price real);"
         "insert into fruit(name, price) values ('apple', 0.5), ('banana', 0.25),"
         " ('cherry', 3), ('date', null);")

#: The environment e2fsprogs' own test suite runs e2fsck in: no
#: configuration file, no progress bar, a fixed "now" (so the repaired
#: image is the same byte for byte) and UTC.
E2FSCK_ENV = {"E2FSCK_CONFIG": "/dev/null", "BLKID_FILE": "/dev/null",
              "E2FSPROGS_SKIP_PROGRESS": "yes", "E2FSCK_TIME": "4000000000", "TZ": "GMT0"}


def damaged_ext4_image(root: Path) -> None:
    """``broken.img``: a 2 MiB ext4 file system holding the inputs, with a
    wrong free-block count and a wrong link count (made with debugfs)."""
    tools = [shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin") for tool in ("mke2fs", "debugfs")]
    if None in tools:
        pytest.skip("mke2fs or debugfs is missing (apt-get install e2fsprogs)")
    mke2fs, debugfs = tools
    image = root / "broken.img"
    seed = "11111111-2222-3333-4444-555555555555"
    for command in ([mke2fs, "-q", "-F", "-t", "ext4", "-U", seed, "-E", f"hash_seed={seed}",
                     "-d", str(INPUTS), str(image), "2M"],
                    [debugfs, "-w", "-R", "ssv free_blocks_count 17", str(image)],
                    [debugfs, "-w", "-R", "sif <12> links_count 5", str(image)]):
        subprocess.run(command, check=True, capture_output=True,
                       timeout=SUBPROCESS_TIMEOUT_SECONDS, env=environment({}, root))
    image.chmod(0o644)


CASES = [
    # shells
    case("bash-script", "bash", "builtins.bash", "one", "two"),
    case("bash-c", "bash", "-c", 'for i in 1 2 3; do printf "%s:%d " "$i" $((i * i)); done;'
                                 ' echo; declare -i n=7*6; echo $n; echo ${BASH_VERSINFO[0]}'),
    case("bash-read-stdin", "bash", "-c", 'n=0; while read -r num word; do '
                                          '[[ $word == apple ]] && ((n += num)); done; echo $n',
         stdin=WORDS),
    # A here-document bigger than a pipe holds goes to a temporary file
    # (created O_EXCL, unlinked while open); a small one through a pipe.
    case("bash-big-heredoc", "bash", "-c", 'x=; for i in {1..8000}; do x+=0123456789; done;'
                                           ' while read -r l; do echo ${#l}; done <<< "$x";'
                                           ' read -r y <<< "small"; echo $y'),
    case("bash-errexit", "bash", "-c", "set -e; echo before; false; echo not reached"),
    case("bash-syntax-error", "bash", "-c", "if then fi"),
    case("bash-missing-script", "bash", "no-such-script.sh"),
    case("zsh-script", "zsh", "-f", "builtins.zsh"),
    case("zsh-files-module", "zsh", "-f", "files.zsh"),
    case("zsh-float-math", "zsh", "-fc", "float x=2; print $(( x ** 0.5 )) $(( 10 / 4. ))"),
    case("ash-script", "busybox", "sh", "builtins.sh"),
    case("mksh-glibc-script", "mksh-glibc", "builtins.ksh"),
    case("mksh-musl-script", "mksh-musl", "builtins.ksh"),
    case("mksh-klibc-script", "mksh-klibc", "builtins.ksh"),
    case("mksh-dietlibc-script", "mksh-dietlibc", "builtins.ksh"),
    # SQLite
    sql("sqlite-memory", ":memory:", TABLE,
        "select name, price from fruit where price > 0.3 order by price",
        "select count(*), sum(price), group_concat(name, '+') from fruit",
        "select printf('%.3f', avg(price)) as mean, typeof(price) from fruit group by 2"),
    sql("sqlite-file", "shop.db", TABLE, "create index by_price on fruit(price)",
        "update fruit set price = price * 2 where name like '%a%'",
        "select * from fruit order by id", "pragma integrity_check"),
    Case("sqlite-reopen", [Step("sqlite_exec", ("shop.db", TABLE)),
                           Step("sqlite_exec", ("shop.db", "delete from fruit where id = 2",
                                                "vacuum", "select * from fruit"))]),
    sql("sqlite-transactions", "shop.db", TABLE,
        "begin; delete from fruit; rollback; select count(*) from fruit",
        "savepoint s; insert into fruit(name) values ('fig'); release s;"
        " select max(id) from fruit",
        "insert into fruit(name) values ('apple')"),
    sql("sqlite-wal-exclusive", "wal.db", "pragma locking_mode=exclusive",
        "pragma journal_mode=wal", TABLE, "pragma wal_checkpoint(truncate)",
        "select name from fruit order by name desc"),
    # A transaction over two database files commits through a super-journal;
    # a temporary table spills to files in TMPDIR, unlinked while open.
    sql("sqlite-two-databases", "main.db", "pragma synchronous=full", TABLE,
        "attach 'other.db' as other", "create table other.stock(name, count)",
        "begin; insert into other.stock select name, id * 10 from fruit;"
        " delete from fruit where price is null; commit",
        "pragma temp_store=file", "pragma cache_size=2",
        "create temp table spill as with recursive c(n) as (select 1 union all"
        " select n + 1 from c where n < 20000) select n, printf('%050d', n) as s from c",
        "select count(*), max(s) from spill", "pragma journal_mode=truncate",
        "select f.name, s.count from fruit f join other.stock s using (name) order by 2"),
    sql("sqlite-big", "big.db",
        "create table t(n integer, s text);"
        "with recursive c(n) as (select 1 union all select n + 1 from c where n < 20000)"
        " insert into t select n, printf('%05d', n * 7 % 20000) from c;"
        "select count(*), sum(n), max(length(s)) from t;"
        "select n from t where s = '12345'"),
    # With mmap_size SQLite maps the database MAP_SHARED and still writes with
    # pwrite: a copy would go stale (minikvm refuses, SQLite falls back to pread).
    sql("sqlite-mmap", "mapped.db", "pragma mmap_size=10000000", "pragma cache_size=5",
        "create table t(a, b);"
        "with recursive c(n) as (select 1 union all select n + 1 from c where n < 3000)"
        " insert into t select n, printf('%0100d', n) from c;"
        "update t set b = 'x' || b where a % 3 = 0; delete from t where a % 2 = 0;"
        "select count(*), sum(a), sum(length(b)) from t", "pragma integrity_check"),
    sql("sqlite-syntax-error", ":memory:", "select from where"),
    # zlib
    case("zlib-compress", "zlib_gzip", "compress", "words.txt"),
    Case("zlib-gzip-round-trip", [Step("zlib_gzip", ("gzip", "words.txt", "words.txt.gz")),
                                  Step("zlib_gzip", ("gunzip", "words.txt.gz"))]),
    case("zlib-stream", "zlib_gzip", "stream", stdin=WORDS * 20),
    case("zlib-gunzip-missing", "zlib_gzip", "gunzip", "missing.gz"),
    # Lua
    case("lua-tables", "lua_script", "tables.lua"),
    case("lua-tables-static-pie", "lua_script", "tables.lua", variant="glibc-static-pie"),
    case("lua-files", "lua_script", "files.lua", env={"LUA_TEST_VALUE": "from the host"}),
    case("lua-error", "lua_script", "-e", "local t = nil; return t.field"),
    # e2fsck reads /proc/mounts to make sure the image is not mounted
    Case("e2fsck-repair", [Step("e2fsck", ("-fy", "broken.img")),
                           Step("e2fsck", ("-fn", "broken.img"))],
         env=E2FSCK_ENV, options=("--allow-read", "/proc"), setup=damaged_ext4_image),
    # gpgv: a good signature, a changed file, a "keyring" that holds no key
    case("gpgv-good", "gpgv", "--keyring", "./signer.gpg", "signed.txt.asc", "signed.txt"),
    case("gpgv-bad", "gpgv", "--keyring", "./signer.gpg", "signed.txt.asc", "words.txt"),
    case("gpgv-no-key", "gpgv", "--keyring", "./words.txt", "signed.txt.asc", "signed.txt"),
]


@dataclass
class Outcome:
    """What one run of a step produced."""
    stdout: bytes
    stderr: bytes
    status: int


def executable(name: str, variant: str) -> Path:
    """The program a step names: installed by Debian, or built here."""
    if name in INSTALLED:
        path, package = INSTALLED[name]
        if not path.exists():
            pytest.skip(f"{path} is missing (apt-get install {package})")
        return path
    return program(name, variant)


def run_native(command: list[str], stdin: bytes, cwd: Path, env: dict[str, str]) -> Outcome:
    done = subprocess.run(command, input=stdin, cwd=cwd, capture_output=True,
                          timeout=SUBPROCESS_TIMEOUT_SECONDS, env=environment(env, cwd))
    return Outcome(done.stdout, done.stderr, done.returncode)


def run_guest(command: list[str], stdin: bytes, cwd: Path, env: dict[str, str],
              options: tuple[str, ...] = ()) -> Outcome:
    done = run_minikvm(["--here", "--timeout", GUEST_TIMEOUT_SECONDS, *options, "--", *command],
                       input=stdin, cwd=cwd, env=environment(env, cwd),
                       timeout=SUBPROCESS_TIMEOUT_SECONDS)
    return Outcome(done.stdout, done.stderr, done.returncode)


def environment(extra: dict[str, str], cwd: Path) -> dict[str, str]:
    """A small, fixed environment: the same locale, time zone and no colours
    both ways (the guest cannot read the host's /etc/localtime), and
    temporary files (mksh's here-documents) in the working directory, which
    both runs may write, rather than /tmp, which the guest may not."""
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC", "TERM": "dumb",
            "TMPDIR": str(cwd), **extra}


def tree(root: Path) -> dict[str, tuple]:
    """Everything under *root*: relative path -> (kind, permission bits, contents)."""
    found: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode):
            found[str(path.relative_to(root))] = ("dir", stat.S_IMODE(info.st_mode), None)
        else:
            found[str(path.relative_to(root))] = ("file", stat.S_IMODE(info.st_mode),
                                                  path.read_bytes())
    return found


#: Cases that fail for a known reason: expected to fail (strictly, so the
#: day they pass the mark must go).
#: (mksh-dietlibc-script was one until the vDSO: dietlibc's gettimeofday
#: looks its function up in the vDSO, or calls the vsyscall page without one.)
KNOWN_FAILURES: dict[str, str] = {}


def _params(cases: list[Case]) -> list:
    return [pytest.param(c, id=c.name, marks=[pytest.mark.xfail(
                strict=True, reason=KNOWN_FAILURES[c.name])] if c.name in KNOWN_FAILURES else [])
            for c in cases]


@pytest.mark.parametrize("real_case", _params(CASES))
def test_real_program_matches_native(real_case: Case, tmp_path: Path) -> None:
    native_dir, guest_dir = tmp_path / "native", tmp_path / "guest"
    native_dir.mkdir()
    make_fixtures(native_dir)
    if real_case.setup is not None:
        real_case.setup(native_dir)
    shutil.copytree(native_dir, guest_dir)
    for number, step in enumerate(real_case.steps, 1):
        command = [str(executable(step.program, real_case.variant)), *step.args]
        native = run_native(command, step.stdin, native_dir, real_case.env)
        guest = run_guest(command, step.stdin, guest_dir, real_case.env, real_case.options)
        where = f"step {number}: {step.program} {' '.join(step.args)}"
        assert (guest.stderr.decode(errors="replace")
                == native.stderr.decode(errors="replace")), where
        assert guest.stdout == native.stdout, where
        assert guest.status == native.status, where
    assert tree(guest_dir) == tree(native_dir)


#: shell -> (how to run one command line, what it prints when fork fails)
FORKING_SHELLS = {
    "bash": (("-c",), "fork: Resource temporarily unavailable"),
    "zsh": (("-fc",), "fork failed: resource temporarily unavailable"),
    "busybox": (("sh", "-c"), "can't fork: Resource temporarily unavailable"),
    "mksh-musl": (("-c",), "can't fork - try again: Resource temporarily unavailable"),
}
#: A line that needs second processes: a substitution, a pipeline, a
#: subshell's status, a child killed by a signal.
FORKING_LINE = ("echo before; x=$(echo substituted); echo after $x; "
                "printf 'b\\na\\n' | sort | head -1; (exit 3); echo $?; "
                "sh -c 'kill -9 $$'; echo $?")


@pytest.mark.parametrize("shell", sorted(FORKING_SHELLS))
def test_shell_runs_commands_that_fork(shell: str, tmp_path: Path) -> None:
    """Each static shell's children are processes of the sandbox
    (minikvm.tree): the same output and status as natively."""
    options, _ = FORKING_SHELLS[shell]
    command = [str(executable(shell, "")), *options, FORKING_LINE]
    native = run_native(command, b"", tmp_path, {})
    guest = run_guest(command, b"", tmp_path, {})
    # bash names the killed child by its pid, the guest's own (1006) or the host's
    def unpid(text: bytes) -> bytes:
        return re.sub(rb": +\d+ Killed", b": PID Killed", text)
    assert (guest.stdout, unpid(guest.stderr), guest.status) == \
        (native.stdout, unpid(native.stderr), native.status)
    assert b"substituted" in guest.stdout


@pytest.mark.parametrize("shell", sorted(FORKING_SHELLS))
def test_shell_says_fork_failed_at_the_process_limit(shell: str, tmp_path: Path) -> None:
    """With --max-processes 1 the shell's fork gets EAGAIN, as at
    RLIMIT_NPROC: it says so in its own words and stops with a failure
    status — no hang, no crash report, nothing from minikvm itself."""
    options, message = FORKING_SHELLS[shell]
    command = [str(executable(shell, "")), *options,
               "echo before; x=$(echo substituted); echo after $x"]
    guest = run_guest(command, b"", tmp_path, {}, ("--max-processes", "1"))
    assert guest.stdout == b"before\n"
    assert message in guest.stderr.decode(), guest.stderr
    assert guest.status not in (0, 124), guest.status
    assert b"minikvm" not in guest.stderr
