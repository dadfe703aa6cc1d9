"""The C test programs, natively and under ``minikvm run``: the same output.

Every program of :data:`tests.programs.build.PROGRAMS`, built in every
variant this machine can build (glibc static, glibc static-PIE, musl
static), runs twice in a fresh temporary working directory:

* natively, as ``subprocess.run([program, *args], env=ENV)``, and
* as ``python -m minikvm run --here --clearenv --env … -- program args``,

with the same argv, the same environment and the same stdin, and the two
runs must agree on stdout, stderr and the exit status.  A signal death is
128+N on both sides (a native return code of -11 is 139).  minikvm adds
exactly one line to stderr when the program dies of a signal — its crash
report — which must be there, and is checked on its own
(``SIGSEGV: page fault writing 0x0 at rip=0x401136 <main+22>``).

``spin`` never ends, so it is only checked to be stopped by ``--timeout``.
``--trace`` is checked line by line for ``hello``: exactly for musl, by
system-call names and the last lines for glibc (whose start-up calls
depend on its version), with addresses replaced by the region they point
into (``<image>``, ``<heap>``, ``<stack>``).

Nothing is timed: the subprocess timeouts only stop a guest that spins.
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from minikvm.cpu.layout import STACK_SIZE, STACK_TOP
from minikvm.process.elf import load_elf
from tests import guest_runs
from tests.guest_runs import shell_status
from tests.programs.build import PROGRAMS, STATIC_VARIANTS, program

#: minikvm's own limit for a guest (exit 124), then the test's backstop.
GUEST_TIMEOUT_SECONDS = 60
SUBPROCESS_TIMEOUT_SECONDS = 90
#: The whole environment of both runs.
ENV = {"LANG": "C", "MINIKVM_TEST": "yes", "ARGS_ENV_NOTE": "two words = fine"}
STDIN_TEXT = b"hello, stdin\n" + b"the quick brown fox jumps over the lazy dog\n" * 2000

pytestmark = pytest.mark.kvm


@dataclass(frozen=True)
class Case:
    """One run of a program: its arguments, stdin and, for a crash, the
    pattern minikvm's one-line report must match."""
    args: tuple[str, ...] = ()
    stdin: bytes = b""
    crash_report: str = ""                 # a regular expression, for signal deaths
    env: dict[str, str] = field(default_factory=lambda: dict(ENV))

    def label(self) -> str:
        return " ".join(self.args) or "no-args"


#: program -> the runs compared.  Every program in PROGRAMS must be here.
CASES: dict[str, list[Case]] = {
    "hello": [Case()],
    "args": [Case(("one", "two words", "", "--flag=x")),
             Case(("only",), env={**ENV, "ARGS_ENV_PREFIX": "MINIKVM_"})],
    "files": [Case()],
    "malloc": [Case()],
    "clock": [Case()],
    "random": [Case()],
    "segv": [Case(crash_report=r"SIGSEGV: page fault writing 0x0 at rip=0x[0-9a-f]+ <main\+\d+>")],
    "abort": [Case(crash_report=r"SIGABRT: .* at rip=0x[0-9a-f]+( <[\w.+]+>)?")],
    "exitcode": [Case(("0",)), Case(("1",)), Case(("42",)), Case(())],
    "stdin": [Case(stdin=STDIN_TEXT), Case(stdin=b"")],
    "getpid_loop": [Case(("1000",))],
    "spin": [],                           # never ends: see test_spin_is_stopped
}


@dataclass
class Outcome:
    stdout: bytes
    stderr: bytes
    status: int                            # as a shell reports it


def run_native(executable: Path, case: Case, workdir: Path) -> Outcome:
    result = guest_runs.run_native([executable, *case.args], cwd=workdir, env=case.env,
                                   input=case.stdin, timeout=SUBPROCESS_TIMEOUT_SECONDS)
    return Outcome(result.stdout, result.stderr, shell_status(result.returncode))


def minikvm_arguments(executable: Path, args: tuple[str, ...], env: dict[str, str],
                      *options: str) -> list[str]:
    """What follows ``minikvm run`` to run *executable* with exactly *env*."""
    environment = [f"--env={name}={value}" for name, value in env.items()]
    return ["--here", "--clearenv", *environment, f"--timeout={GUEST_TIMEOUT_SECONDS}",
            *options, "--", str(executable), *args]


def run_minikvm(executable: Path, case: Case, workdir: Path, *options: str) -> Outcome:
    result = guest_runs.run_minikvm(minikvm_arguments(executable, case.args, case.env, *options),
                                    cwd=workdir, input=case.stdin,
                                    timeout=SUBPROCESS_TIMEOUT_SECONDS)
    return Outcome(result.stdout, result.stderr, result.returncode)


def all_cases() -> list[pytest.param]:
    params = []
    for name in PROGRAMS:
        for case in CASES.get(name, ()):
            for variant in STATIC_VARIANTS:
                params.append(pytest.param(name, variant, case,
                                           id=f"{name}-{variant}-{case.label()}"))
    return params


def test_every_program_has_cases() -> None:
    missing = [name for name in PROGRAMS if name not in CASES]
    assert not missing, (f"tests/programs {missing} have no entry in CASES of "
                         "tests/test_programs.py: add the runs to compare")


@pytest.mark.parametrize(("name", "variant", "case"), all_cases())
def test_same_as_native(name: str, variant: str, case: Case, tmp_path: Path) -> None:
    executable = program(name, variant)
    (tmp_path / "native").mkdir()
    (tmp_path / "guest").mkdir()
    native = run_native(executable, case, tmp_path / "native")
    guest = run_minikvm(executable, case, tmp_path / "guest")
    stderr = guest.stderr
    if case.crash_report:
        assert native.status > 128, f"{name} should die of a signal natively: {native}"
        lines = stderr.decode(errors="replace").splitlines()
        assert lines, "minikvm printed no crash report"
        assert re.fullmatch(case.crash_report, lines[-1]), (
            f"the crash report {lines[-1]!r} does not match {case.crash_report!r}")
        stderr = stderr[:stderr.rstrip(b"\n").rfind(b"\n") + 1]
    assert guest.stdout == native.stdout, "stdout differs"
    assert stderr == native.stderr, (
        f"stderr differs\n--- native ---\n{native.stderr.decode(errors='replace')}"
        f"--- minikvm ---\n{guest.stderr.decode(errors='replace')}")
    assert guest.status == native.status, (
        f"exit status {guest.status} under minikvm, {native.status} natively; "
        f"stderr: {guest.stderr.decode(errors='replace')}")


@pytest.mark.parametrize("variant", STATIC_VARIANTS)
def test_spin_is_stopped_by_the_timeout(variant: str, tmp_path: Path) -> None:
    executable = program("spin", variant)
    result = guest_runs.run_minikvm(["--here", "--timeout=1", "--", executable], cwd=tmp_path,
                                    timeout=SUBPROCESS_TIMEOUT_SECONDS)
    assert result.stdout == b"spinning\n"
    assert result.returncode == 124, result.stderr
    assert b"timed out" in result.stderr


# -- --trace, line by line ----------------------------------------------------------------
def region_masker(executable: Path):
    """A function that replaces each address in a trace line by the region
    it points into, so lines compare whatever the build or the path."""
    image = load_elf(executable)
    heap_end = image.end + (1 << 30)
    stack_bottom = STACK_TOP - STACK_SIZE

    def region(match: re.Match) -> str:
        address = int(match.group(0), 16)
        if image.start <= address < image.end:
            return "<image>"
        if image.end <= address < heap_end:
            return "<heap>"
        if stack_bottom <= address < STACK_TOP:
            return "<stack>"
        return match.group(0)

    return lambda line: re.sub(r"0x[0-9a-f]{5,}", region, line)


def traced_hello(variant: str, tmp_path: Path) -> tuple[list[str], Path]:
    executable = program("hello", variant)
    result = guest_runs.run_minikvm(minikvm_arguments(executable, (), {}, "--trace"),
                                    cwd=tmp_path, text=True, timeout=SUBPROCESS_TIMEOUT_SECONDS)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello, world\n"
    mask = region_masker(executable)
    return [mask(line) for line in result.stderr.splitlines()], executable


def test_trace_of_musl_hello(tmp_path: Path) -> None:
    lines, _ = traced_hello("musl-static", tmp_path)
    assert lines == [
        "arch_prctl(0x1002, <image>) = 0",               # musl's built-in TLS, in .bss
        "set_tid_address(<image>) = 1000",
        "ioctl(1, 0x5413, <stack>) = -1 ENOTTY (not a terminal)",   # TIOCGWINSZ: is it a tty?
        "writev(1, <stack>, 2) = 13",
        "exit_group(0) = ?",
    ]


#: The glibc whose static start-up GLIBC_HELLO_NAMES lists (Debian 12's);
#: the programs are linked on this machine, so another glibc starts differently.
GLIBC_HELLO_VERSION = "glibc 2.36"
#: glibc 2.36's static start-up, by name.
GLIBC_HELLO_NAMES = ["brk", "brk", "arch_prctl", "set_tid_address", "set_robust_list", "rseq",
                     "prlimit64", "readlink", "getrandom", "brk", "brk", "brk", "mprotect",
                     "newfstatat", "write", "exit_group"]
TRACE_LINE = re.compile(r"(?P<name>\w+)\((?P<args>.*)\) = (?P<result>\S+)(?P<error> \w+ \(.*\))?")


@pytest.mark.parametrize("variant", ["glibc-static", "glibc-static-pie"])
def test_trace_of_glibc_hello(variant: str, tmp_path: Path) -> None:
    lines, executable = traced_hello(variant, tmp_path)
    parsed = [TRACE_LINE.fullmatch(line) for line in lines]
    assert all(parsed), [line for line, match in zip(lines, parsed) if not match]
    names = [match["name"] for match in parsed]
    assert "syscall_" not in " ".join(names), f"unknown system calls: {lines}"
    failed = {match["name"] for match in parsed if match["result"] == "-1"}
    assert failed <= {"rseq"}, f"unexpected failures: {failed}"
    if os.confstr("CS_GNU_LIBC_VERSION") != GLIBC_HELLO_VERSION:
        pytest.skip(f"the expected start-up is {GLIBC_HELLO_VERSION}'s; this is "
                    f"{os.confstr('CS_GNU_LIBC_VERSION')}, whose start-up is {names}")
    assert names == GLIBC_HELLO_NAMES
    by_name = dict(zip(names, lines))
    assert lines[0] == "brk(NULL) = <heap>"
    assert by_name["arch_prctl"] == "arch_prctl(0x1002, <heap>) = 0"
    assert by_name["rseq"].endswith("= -1 ENOSYS (restartable sequences are not supported)")
    exe_length = len(os.fsencode(os.path.abspath(executable)))
    assert by_name["readlink"] == f'readlink("/proc/self/exe", <stack>, 4096) = {exe_length}'
    assert by_name["mprotect"].endswith(", PROT_READ) = 0")
    assert lines[-3:] == ['newfstatat(1, "", <stack>, 0x1000) = 0',
                          'write(1, "hello, world\\n", 13) = 13',
                          "exit_group(0) = ?"]


def test_a_signal_death_is_128_plus_the_signal() -> None:
    assert shell_status(-signal.SIGSEGV) == 139
    assert shell_status(-signal.SIGABRT) == 134
    assert shell_status(42) == 42
