"""Dynamically linked programs, natively and under minikvm: the same result.

A dynamically linked program starts in its interpreter, the host's own
``ld.so`` (``PT_INTERP``), which minikvm loads beside it as Linux does
(:mod:`minikvm.process.interpreter`, :meth:`minikvm.process.process.Process.spawn`);
``ld.so`` then opens ``/etc/ld.so.cache`` and the libraries through the
sandbox's view and maps them with ``mmap``.  This file checks, each time
against a native run of the same program:

* C programs built in the test run (``tests/programs/dynamic``): a dynamic
  ``hello`` as plain, ``-Wl,-z,now`` and ``-static-pie``; the auxiliary
  vector through ``getauxval``; file mappings made the way ``ld.so`` makes
  them; a program linked against a library of the test's own (rpath,
  ``LD_LIBRARY_PATH``, ``LD_PRELOAD``);
* the errors: a missing library is ``ld.so``'s own message, as natively; an
  interpreter outside the view, missing, not ELF, itself dynamic, or a
  32-bit program: one clear line, never a traceback;
* the host's ``/usr/bin`` programs (``ls``, ``grep``, ``python3`` …) in a
  fresh directory under ``--here``: exit status, stdout and the files they
  wrote.  A program that is not installed is skipped, named.

What ``ld.so`` needs to see (``/usr/lib``, ``/lib64``, ``/etc/ld.so.cache``)
is in minikvm's default system view; :func:`view_flags` is the one place
to grant more.  The tests of an interpreter outside the view turn the
system view off (``--no-system``).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from tests.guest_runs import run_minikvm, run_native
from tests.programs.build import SOURCE_DIR, unavailable_reason

pytestmark = pytest.mark.kvm

DYNAMIC_SOURCES = SOURCE_DIR / "dynamic"
#: minikvm's own limit (exit 124), then the test's backstop.
GUEST_TIMEOUT_SECONDS = 60
SUBPROCESS_TIMEOUT_SECONDS = 120
INTERPRETER = "/lib64/ld-linux-x86-64.so.2"


def view_flags() -> list[str]:
    """What a dynamic program needs to see: nothing to grant, minikvm's
    default system view (:mod:`minikvm.sandbox.system_view`) shows it —
    ``/usr/lib`` and ``/usr/share`` (the libraries, Python's modules,
    ``file``'s magic), ``/lib64`` and ``/lib`` (the spellings of
    ``PT_INTERP`` and of ``/etc/ld.so.cache``'s entries: symlinks into
    ``/usr``, matched by their own names) and the ``/etc`` files
    ``ld.so.cache``, ``nsswitch.conf`` and ``passwd`` (for ``ls -l``'s
    owner names).  The one place to grant more, should a test need it."""
    return []


def guest_run(arguments: list[object], cwd: Path, env: dict[str, str] | None = None,
              input: bytes | None = None) -> subprocess.CompletedProcess:
    """``minikvm run --here`` (in *cwd*) with the view, the program's
    environment *env* exactly (``--clearenv`` then ``--env``)."""
    options: list[object] = [*view_flags(), "--here", "--timeout", GUEST_TIMEOUT_SECONDS,
                             "--clearenv"]
    for name, value in (env or {}).items():
        options += ["--env", f"{name}={value}"]
    return run_minikvm([*options, "--", *arguments], cwd=cwd, input=input,
                       timeout=SUBPROCESS_TIMEOUT_SECONDS)


def native_run(arguments: list[object], cwd: Path, env: dict[str, str] | None = None,
               input: bytes | None = None) -> subprocess.CompletedProcess:
    """The same command on the host, with exactly the environment *env*."""
    return run_native(arguments, cwd=cwd, env=dict(env or {}), input=input,
                      timeout=SUBPROCESS_TIMEOUT_SECONDS)


# --- building ---------------------------------------------------------------------


def compile_c(out: Path, *arguments: object) -> Path:
    """``cc ARGUMENTS -o OUT``; skip when there is no C compiler for
    dynamic programs, fail with the compiler's words when it fails."""
    reason = unavailable_reason("glibc-dynamic")
    if reason:
        pytest.skip(reason)
    result = subprocess.run(["cc", "-O2", "-Wall", *map(str, arguments), "-o", str(out)],
                            capture_output=True, text=True, timeout=120)
    if result.returncode:
        pytest.fail(f"{' '.join(result.args)} failed:\n{result.stderr}", pytrace=False)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The programs and libraries of ``tests/programs/dynamic``, built once."""
    out = tmp_path_factory.mktemp("dynamic")
    hello = SOURCE_DIR / "hello.c"
    compile_c(out / "hello", hello)
    compile_c(out / "hello-now", hello, "-Wl,-z,now")
    compile_c(out / "auxv", DYNAMIC_SOURCES / "auxv.c")
    compile_c(out / "file_mmap", DYNAMIC_SOURCES / "file_mmap.c")
    lib = out / "lib"
    lib.mkdir()
    compile_c(lib / "libgreet.so", DYNAMIC_SOURCES / "greet.c", "-shared", "-fPIC",
              "-Wl,-soname,libgreet.so")
    compile_c(lib / "libpreload.so", DYNAMIC_SOURCES / "preload.c", "-shared", "-fPIC")
    compile_c(out / "use_greet", DYNAMIC_SOURCES / "use_greet.c", f"-L{lib}", "-lgreet",
              f"-Wl,-rpath,{lib}")
    compile_c(out / "use_greet_norpath", DYNAMIC_SOURCES / "use_greet.c", f"-L{lib}",
              "-lgreet")
    # hostile interpreters, by the linker's own option
    (out / "not-elf.txt").write_text("this is not an ELF file\n")
    compile_c(out / "interp-not-elf", hello, f"-Wl,--dynamic-linker={out / 'not-elf.txt'}")
    compile_c(out / "interp-self", hello, f"-Wl,--dynamic-linker={out / 'interp-self'}")
    compile_c(out / "interp-garbage", hello, "-Wl,--dynamic-linker=\x01\x7f@garbage")
    compile_c(out / "interp-missing", hello, "-Wl,--dynamic-linker=/lib64/ld-missing.so.2")
    compile_c(out / "interp-directory", hello, "-Wl,--dynamic-linker=/usr/lib")
    return out


def assert_same(native: subprocess.CompletedProcess, guest: subprocess.CompletedProcess,
                *, stderr: bool = True) -> None:
    """Exit status and stdout (and stderr, unless told) as natively."""
    assert guest.returncode == native.returncode, guest.stderr
    assert guest.stdout == native.stdout
    if stderr:
        assert guest.stderr == native.stderr


# --- C programs ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hello", "hello-now", "hello-static-pie"])
def test_hello_matches_native(built: Path, name: str) -> None:
    if name == "hello-static-pie":
        reason = unavailable_reason("glibc-static-pie")
        if reason:
            pytest.skip(reason)
        compile_c(built / name, SOURCE_DIR / "hello.c", "-static-pie")
    native = native_run([f"./{name}"], built)
    guest = guest_run([f"./{name}"], built)
    assert native.stdout == b"hello, world\n"
    assert_same(native, guest)


def test_auxiliary_vector_matches_native(built: Path) -> None:
    """AT_PHDR, AT_ENTRY (relative to the program's base), AT_BASE (= ld.so's
    base), AT_PHENT, AT_PHNUM, the ids, AT_SECURE = 0, AT_PLATFORM,
    AT_EXECFN …: every line as natively."""
    native = native_run(["./auxv"], built)
    guest = guest_run(["./auxv"], built)
    assert b"AT_BASE is ld.so's base: yes" in native.stdout
    assert b"AT_SECURE = 0" in native.stdout
    assert_same(native, guest)


def test_file_mappings_as_ld_so_makes_them(built: Path, tmp_path: Path) -> None:
    program = shutil.copy(built / "file_mmap", tmp_path / "file_mmap")
    native = native_run([program], tmp_path)
    guest = guest_run([program], tmp_path)
    assert native.returncode == 0, native.stderr
    assert_same(native, guest)
    assert list(tmp_path.iterdir()) == [tmp_path / "file_mmap"]


def test_library_of_our_own_by_rpath(built: Path) -> None:
    native = native_run(["./use_greet", "sandbox"], built)
    guest = guest_run(["./use_greet", "sandbox"], built)
    assert native.stdout == b"hello from libgreet, sandbox\ngreet_count = 42 (42)\n"
    assert_same(native, guest)


def test_ld_library_path_from_the_environment(built: Path) -> None:
    env = {"LD_LIBRARY_PATH": str(built / "lib")}
    native = native_run(["./use_greet_norpath"], built, env)
    guest = guest_run(["./use_greet_norpath"], built, env)
    assert native.returncode == 0
    assert_same(native, guest)


def test_ld_preload_from_the_environment(built: Path) -> None:
    env = {"LD_PRELOAD": str(built / "lib" / "libpreload.so")}
    native = native_run(["./hello"], built, env)
    guest = guest_run(["./hello"], built, env)
    assert native.stdout == b"preloaded\nhello, world\n"
    assert_same(native, guest)


def test_missing_library_is_ld_so_own_message(built: Path) -> None:
    """Without the rpath's library, ld.so itself says so, exactly as natively."""
    native = native_run(["./use_greet_norpath"], built)
    guest = guest_run(["./use_greet_norpath"], built)
    assert native.returncode == 127
    assert (b"error while loading shared libraries: libgreet.so: cannot open shared "
            b"object file: No such file or directory") in native.stderr
    assert_same(native, guest)


# --- errors ------------------------------------------------------------------------


def test_interpreter_outside_the_view(built: Path) -> None:
    """No grant shows /lib64 (and no system view): the message names the
    path and the flag."""
    guest = run_minikvm(["--no-system", "--here", "--", "./hello"], cwd=built,
                        timeout=SUBPROCESS_TIMEOUT_SECONDS, text=True)
    assert guest.returncode == 126
    assert guest.stderr == (
        f"minikvm: {built / 'hello'}: cannot run: its interpreter {INTERPRETER} (PT_INTERP) "
        f"is outside the sandbox's view (/lib64: outside allowed paths); grant it with "
        f"--allow-read /lib64\n")


def test_interpreter_target_outside_the_view(built: Path) -> None:
    """/lib64 is granted but the file it leads to (in /usr/lib) is not."""
    guest = run_minikvm(["--no-system", "--allow-read", "/lib64", "--here", "--", "./hello"],
                        cwd=built,
                        timeout=SUBPROCESS_TIMEOUT_SECONDS, text=True)
    assert guest.returncode == 126
    assert "is outside the sandbox's view (/lib: outside allowed paths); grant it with " \
           "--allow-read /lib\n" in guest.stderr


def test_missing_interpreter_is_execve_enoent(built: Path) -> None:
    with pytest.raises(FileNotFoundError):
        native_run(["./interp-missing"], built)
    guest = guest_run(["./interp-missing"], built)
    assert guest.returncode == 127
    assert guest.stderr.decode() == (
        f"minikvm: {built / 'interp-missing'}: cannot run: its interpreter "
        f"/lib64/ld-missing.so.2 (PT_INTERP) was not found; execve fails with ENOENT: "
        f"No such file or directory\n")


@pytest.mark.parametrize("name, message", [
    ("interp-not-elf", r"not-elf\.txt: not an ELF file: it starts with b'this'"),
    ("interp-self", r"interp-self: its interpreter .*interp-self \(PT_INTERP\) is itself "
                    r"dynamically linked"),
    ("interp-garbage", r"its interpreter \\x01\\x7f@garbage \(PT_INTERP\) was not found \(.*\); "
                       r"execve fails with ENOENT"),
    ("interp-directory", r"its interpreter /usr/lib \(PT_INTERP\) is a directory \(execve "
                         r"fails with EACCES\)"),
])
def test_hostile_interpreter_is_one_clear_line(built: Path, name: str, message: str) -> None:
    guest = guest_run([f"./{name}"], built)
    text = guest.stderr.decode(errors="replace")
    assert guest.returncode in (126, 127), text
    assert "Traceback" not in text and "internal error" not in text
    assert text.count("\n") == 1, text
    assert re.search(message, text), text


def test_32_bit_program_is_still_refused(built: Path, tmp_path: Path) -> None:
    """A dynamic program made 32-bit in its identification byte: refused as before."""
    data = bytearray((built / "hello").read_bytes())
    data[4] = 1                                            # EI_CLASS = ELFCLASS32
    program = tmp_path / "hello32"
    program.write_bytes(bytes(data))
    program.chmod(0o755)
    guest = guest_run([program], tmp_path)
    assert guest.returncode == 126
    assert b"a 32-bit ELF file (ELFCLASS32): minikvm runs only 64-bit" in guest.stderr


# --- the host's /usr/bin programs -----------------------------------------------------


@dataclass
class Case:
    """A command run in a fresh directory holding :data:`FIXTURE`."""
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    #: steps before the compared one, run the same way (natively or in the sandbox)
    before: list[list[str]] = field(default_factory=list)
    #: paths (relative) left out of the compared tree: what differs by nature
    ignore: tuple[str, ...] = ()


FIXTURE = {
    "notes.txt": "apple\nbanana\ncherry\napple\n",
    "sub/deep.txt": "banana split\nno fruit here\n",
    "data.json": '{"b": [1, 2, {"c": null}], "a": "x"}\n',
    "script.lua": "local t = {} for i = 1, 5 do t[#t + 1] = i * i end print(table.concat(t, ','))\n",
}

PYTHON_SCRIPT = (
    "import json, zlib, sqlite3, decimal, re\n"
    "db = sqlite3.connect(':memory:')\n"
    "db.execute('create table t (x)')\n"
    "db.executemany('insert into t values (?)', [(i,) for i in range(10)])\n"
    "total = db.execute('select sum(x) from t').fetchone()[0]\n"
    "result = {'crc': zlib.crc32(b'minikvm'), 'sum': total,\n"
    "          'third': str(decimal.Decimal(1) / decimal.Decimal(3)),\n"
    "          'words': re.findall(r'[a-z]+', open('notes.txt').read())}\n"
    "open('out.json', 'w').write(json.dumps(result, sort_keys=True))\n"
    "print(len(result))\n")

CASES = {
    "ls": Case(["/usr/bin/ls", "-la", "--time-style=+", "sub"], {"LC_ALL": "C"}),
    "grep": Case(["/usr/bin/grep", "-rn", "banana", "."]),
    "sed": Case(["/usr/bin/sed", "-e", "s/an/AN/g", "notes.txt"]),
    "awk": Case(["/usr/bin/awk", '{ n[$1]++ } END { for (k in n) print k, n[k] }',
                 "notes.txt"]),
    "sort": Case(["/usr/bin/sort", "-u", "notes.txt"], {"LC_ALL": "C.UTF-8"}),
    "find": Case(["/usr/bin/find", ".", "-name", "*.txt"]),
    "tar": Case(["/usr/bin/tar", "cf", "out.tar", "--sort=name", "--mtime=@0",
                 "--owner=0", "--group=0", "notes.txt", "sub"]),
    "sha256sum": Case(["/usr/bin/sha256sum", "notes.txt", "sub/deep.txt"]),
    "file": Case(["/usr/bin/file", "notes.txt", "data.json", "sub"]),
    "python3": Case(["/usr/bin/python3", "-c", PYTHON_SCRIPT]),
    "python3-json.tool": Case(["/usr/bin/python3", "-m", "json.tool", "--sort-keys",
                               "data.json"]),
    "perl": Case(["/usr/bin/perl", "-e",
                  'open(F, "notes.txt"); my %n; $n{$_}++ for <F>; '
                  'print map { "$_" } sort keys %n; open(O, ">out.txt"); print O scalar(%n)']),
    "git": Case(["/usr/bin/git", "status", "--porcelain=v1", "--branch"],
                {"GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_DATE": "@0 +0000"},
                before=[["/usr/bin/git", "init", "-q", "-b", "main"]],
                ignore=(".git/index",)),
    "jq": Case(["/usr/bin/jq", "-S", ".b[2]", "data.json"]),
    "lua5.4": Case(["/usr/bin/lua5.4", "script.lua"]),
}


def tree(root: Path, ignore: tuple[str, ...]) -> dict[str, tuple]:
    """Everything under *root*: relative path -> (kind, permission bits, contents)."""
    found: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if name in ignore:
            continue
        info = path.lstat()
        contents = None if stat.S_ISDIR(info.st_mode) else path.read_bytes()
        found[name] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), contents)
    return found


def make_fixture(root: Path) -> Path:
    root.mkdir()
    for name, text in FIXTURE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("name", CASES)
def test_host_program_matches_native(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    if not Path(case.argv[0]).exists():
        pytest.skip(f"{case.argv[0]} is not installed on this machine")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **case.env}
    results = {}
    for where, run in (("native", native_run), ("guest", guest_run)):
        directory = make_fixture(tmp_path / where)
        home = {**env, "HOME": str(directory)}
        for step in case.before:
            done = run(step, directory, home)
            assert done.returncode == 0, (where, step, done.stderr)
        done = run(case.argv, directory, home)
        # (the two runs are in two directories: their names are not compared)
        done.stdout = done.stdout.replace(os.fsencode(directory), b"<dir>")
        done.stderr = done.stderr.replace(os.fsencode(directory), b"<dir>")
        results[where] = (done, tree(directory, case.ignore))
    (native, native_tree), (guest, guest_tree) = results["native"], results["guest"]
    assert native.returncode == 0, native.stderr
    assert_same(native, guest)
    assert guest_tree == native_tree
