"""execve and execveat: a new program in the same sandboxed process.

Each test runs ``tests/programs/exec.c`` (or busybox, or a host program)
natively and under ``minikvm run --here`` in the same directory and
compares stdout and the status byte for byte: what the exec'd program
received (argv, the environment, ``comm``, ``AT_EXECFN``, its signal
state, its fds) and every errno of the failures.  The exceptions are the
sandbox's own answers, which no native run has: a path outside the grants
is ENOENT, a new image that does not fit the guest's memory kills it with
SIGSEGV after the point of no return, and the hostile arguments of
``tests/hostile/exec_args.c``.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from tests.guest_runs import run_minikvm, run_native, shell_status
from tests.programs.build import DEFAULT_BUILD_DIR, STATIC_VARIANTS, build, program
from tests.programs.tiny_elf import patched_phdr, tiny_elf
from tests.test_dynamic import view_flags

pytestmark = pytest.mark.kvm

HOSTILE = Path(__file__).resolve().parent / "hostile"
BUSYBOX = Path("/bin/busybox")
TIMEOUT = 90
#: What a program the guest execs may need to see: the dynamic view, and
#: ``/bin`` (a symlink to usr/bin, granted by its own name like /lib64).
VIEW = [*view_flags(), "--allow-read", "/bin"]


def needs_busybox() -> None:
    if not BUSYBOX.exists() or os.access(BUSYBOX, os.X_OK) is False:
        pytest.skip("/bin/busybox missing (apt-get install busybox-static)")


def workdir(tmp_path: Path, variant: str = "glibc-static") -> Path:
    """*tmp_path* with the exec program copied in (``--here`` grants only the
    working directory) and the files the tests exec."""
    shutil.copy(program("exec", variant), tmp_path / "exectest")
    (tmp_path / "plain.txt").write_text("not a program\n")
    (tmp_path / "text-with-x").write_text("just text\n")
    (tmp_path / "text-with-x").chmod(0o755)
    scripts = {
        "loop.sh": f"#!{tmp_path}/loop.sh\n",                 # its own interpreter: ELOOP
        "orphan.sh": f"#!{tmp_path}/not-there\n",             # ENOENT
        # an interpreter with one argument (spaces inside it kept, around it dropped)
        "argscript": f"#!{tmp_path}/exectest   show  two  words \t\n",
        "nested": f"#!{tmp_path}/argscript\n",               # a script as interpreter
        "script.sh": '#!/bin/busybox sh\necho "script:" "$0" "$@"\n',
    }
    for name, text in scripts.items():
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    (tmp_path / "link-to-self").symlink_to("exectest")
    return tmp_path


def both(arguments: list[object], cwd: Path, *extra: object) -> tuple:
    """The native run and the sandbox's, of the same command in *cwd*."""
    native = run_native(arguments, cwd=cwd, timeout=TIMEOUT)
    guest = run_minikvm([*VIEW, *extra, "--here", "--timeout", "60", "--", *arguments],
                        cwd=cwd, timeout=TIMEOUT)
    return native, guest


def assert_same(arguments: list[object], cwd: Path, *extra: object) -> str:
    native, guest = both(arguments, cwd, *extra)
    assert native.returncode == 0, native.stdout.decode() + native.stderr.decode()
    assert guest.stderr.decode() == native.stderr.decode()
    assert guest.stdout.decode() == native.stdout.decode()
    assert shell_status(guest.returncode) == shell_status(native.returncode)
    return guest.stdout.decode()


@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_a_static_program_execs_another_with_args_and_env(variant, tmp_path):
    cwd = workdir(tmp_path, variant)
    out = assert_same(["./exectest", "run", "./exectest", "show", "a", "b c", ""], cwd)
    assert "argv[3]=b c\n" in out and "env EXEC_TWO=two words\n" in out
    assert "comm=exectest\n" in out and "execfn=./exectest\n" in out
    assert f"exe={cwd}/exectest\n" in out and "cmdline=./exectest|show|a|b c||\n" in out
    assert "/proc/self/comm=exectest\n" in out


def test_each_exec_gives_the_old_image_s_memory_back(tmp_path):
    # 300 images in a row, each touching 1 MiB it never frees, in 64 MiB:
    # only if every exec frees what the last image had
    cwd = workdir(tmp_path)
    guest = run_minikvm(["--memory", "64M", "--here", "--", "./exectest", "chain", "300"],
                        cwd=cwd, timeout=3 * TIMEOUT)
    assert guest.returncode == 0, guest.stdout.decode() + guest.stderr.decode()
    assert guest.stdout == b"" and guest.stderr == b""


def test_dynamic_host_programs_are_exec_d_through_their_ld_so(tmp_path):
    cwd = workdir(tmp_path)
    out = assert_same(["./exectest", "run", "/usr/bin/env"], cwd)
    assert "EXEC_TWO=two words\n" in out
    assert assert_same(["./exectest", "run", "/bin/echo", "hello", "world"], cwd) == \
        "hello world\n"


def test_scripts_run_by_their_interpreter_as_the_kernel_builds_their_argv(tmp_path):
    needs_busybox()
    cwd = workdir(tmp_path)
    out = assert_same(["./exectest", "run", "./script.sh", "a", "b"], cwd)
    assert out == "script: ./script.sh a b\n"
    out = assert_same(["./exectest", "run", "./argscript", "x", "y"], cwd)
    assert "argv[1]=show  two  words\n" in out and "argv[2]=./argscript\n" in out
    assert "comm=argscript\n" in out and f"exe={cwd}/exectest\n" in out
    out = assert_same(["./exectest", "run", "./nested", "z"], cwd)
    assert f"argv[2]={cwd}/argscript\n" in out and "argv[3]=./nested\n" in out


def test_busybox_applets_exec(tmp_path):
    needs_busybox()
    cwd = workdir(tmp_path)
    out = assert_same([BUSYBOX, "env", "EXEC_FOO=bar", "./exectest", "show", "q"], cwd)
    assert "env EXEC_FOO=bar\n" in out
    out = assert_same([BUSYBOX, "sh", "-c", "exec ./exectest show from-sh"], cwd)
    assert "argv[2]=from-sh\n" in out


def test_close_on_exec_fds_close_and_the_others_stay(tmp_path):
    cwd = workdir(tmp_path)
    out = assert_same(["./exectest", "fds", "out.txt"], cwd)
    assert "(O_CLOEXEC): closed\n" in out and "write to it: 19\n" in out
    # the native run wrote its line, then the sandbox's child wrote the same
    assert (cwd / "out.txt").read_text() == "written after exec\n" * 2


def test_caught_signals_reset_ignored_and_blocked_stay(tmp_path):
    cwd = workdir(tmp_path)
    out = assert_same(["./exectest", "signals"], cwd)
    assert "SIGUSR1 default\nSIGUSR2 ignored\nSIGTERM blocked\n" in out


@pytest.mark.parametrize("variant", ("glibc-static", "musl-static"))
def test_exec_from_a_second_thread_makes_it_the_only_one_with_the_pid(variant, tmp_path):
    cwd = workdir(tmp_path, variant)
    out = assert_same(["./exectest", "thread"], cwd)
    assert "argv[0]=from-thread\n" in out and "pid is tid: yes\n" in out


def test_execveat_runs_an_open_fd(tmp_path):
    cwd = workdir(tmp_path)
    out = assert_same(["./exectest", "at", "./exectest", "show", "at"], cwd)
    assert "argv[1]=show\n" in out and "execfn=/dev/fd/3\n" in out


@pytest.mark.parametrize("variant", ("glibc-static", "musl-static"))
def test_failures_return_the_errno_linux_does_and_the_program_goes_on(variant, tmp_path):
    cwd = workdir(tmp_path, variant)
    out = assert_same(["./exectest", "fails", cwd], cwd)
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    assert lines == {
        "missing": "ENOENT", "directory": "EACCES", "not-executable": "EACCES",
        "unknown-format": "ENOEXEC", "script-loop": "ELOOP", "missing-interpreter": "ENOENT",
        "empty-path": "ENOENT", "bad-argv-string": "EFAULT", "bad-argv-array": "EFAULT",
        "bad-path": "EFAULT", "e2big": "E2BIG", "string-too-long": "E2BIG",
        "nofollow": "ELOOP", "bad-flags": "EINVAL", "dirfd-empty-path": "EACCES"}
    assert out.endswith("still here\n")


def test_a_program_outside_the_grants_does_not_exist(tmp_path):
    """An executable beside the granted directory exists on the host, not
    for the sandbox (which sees the directory and the system view)."""
    cwd = workdir(tmp_path)
    outside = tmp_path.parent / f"{tmp_path.name}-outside-true"
    outside.write_bytes(Path("/usr/bin/true").read_bytes())
    outside.chmod(0o755)
    guest = run_minikvm(["--here", "--", "./exectest", "run", str(outside)], cwd=cwd,
                        timeout=TIMEOUT)
    assert guest.stdout.decode() == f"execve {outside}: ENOENT\n"
    assert guest.returncode == 1


def test_a_failure_past_the_point_of_no_return_kills_with_sigsegv(tmp_path):
    cwd = workdir(tmp_path)
    (cwd / "tiny").write_bytes(tiny_elf())
    # 3 GiB of .bss: parsed fine, found too large only while loading
    (cwd / "huge").write_bytes(patched_phdr(tiny_elf(), 1, p_memsz=3 << 30))
    for name in ("tiny", "huge"):
        (cwd / name).chmod(0o755)
    native, guest = both(["./exectest", "run", "./tiny"], cwd, "--memory", "64M")
    assert native.returncode == guest.returncode == 42
    guest = run_minikvm(["--memory", "64M", "--here", "--", "./exectest", "run", "./huge"],
                        cwd=cwd, timeout=TIMEOUT)
    assert shell_status(guest.returncode) == 128 + 11
    stderr = guest.stderr.decode()
    assert stderr.startswith("SIGSEGV: execve of ") and "ENOMEM" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("variant", ("glibc-static", "musl-static"))
def test_hostile_arguments_are_bounded_and_answered(variant, tmp_path):
    executable = build(HOSTILE / "exec_args.c", DEFAULT_BUILD_DIR / "hostile", variant)
    guest = run_minikvm(["--memory", "256M", "--", executable], cwd=tmp_path, timeout=TIMEOUT)
    stderr = guest.stderr.decode()
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    results = dict(line.split(": ", 1) for line in guest.stdout.decode().splitlines()
                   if ": " in line)
    assert {name: int(value) for name, value in results.items()} == {
        "huge-argv": errno.E2BIG, "huge-envp": errno.E2BIG,
        "unterminated-arg": errno.EFAULT, "unterminated-env": errno.EFAULT,
        "unterminated-path": errno.EFAULT, "array-into-hole": errno.EFAULT,
        "pointer-across-hole": errno.EFAULT, "kernel-pointer": errno.EFAULT,
        "kernel-string": errno.EFAULT, "execveat-bad-fd": errno.EBADF,
        "execveat-stdin": errno.EACCES}
    assert guest.stdout.decode().endswith("still here\n") and guest.returncode == 0
