"""A tree of processes in the sandbox: fork, exec, wait, pipes and signals
between the sandbox's own programs, compared with native runs.

Each comparison runs the same command natively and under
``python -m minikvm run --here`` (exactly the environment :data:`ENV`:
``--clearenv`` then ``--env``), each in its own fresh copy of the same
fixture directory, and compares the exit status, stdout, stderr and the
directory afterwards (every file's kind, mode and bytes — ``tar czf``'s
archive, ``make``'s targets, ``gcc``'s ``a.out``):

* shell scripts with pipelines, subshells, command substitution, ``$?``
  of a child killed by a signal, ``xargs``, ``find -exec``, ``tar czf``
  (busybox's tar vforks and execs ``gzip``) and ``tar tzf`` (it forks a
  decompressor that does not exec), ``wait`` for background jobs and an
  orphan that outlives its parent — under busybox ``sh``
  (``busybox-static``), static bash (``bash-static``), Debian's dash
  (``/bin/sh``) and dynamic ``/bin/bash``;
* ``tests/programs/processes.c`` built for glibc and musl: ``posix_spawn``
  (``CLONE_VM|CLONE_VFORK``), exit and signal statuses (a child's own
  SIGKILL included), fork + exec + ``wait4(WNOHANG)``, ``waitid(P_ALL)``,
  ``getppid``, ``kill`` of a child with a handler, ``vfork``, pipes
  carrying more than 64 KiB, and a wait in one thread while another
  thread feeds the child (what Go's ``os/exec`` does);
* Go's ``os/exec`` (``tests/programs/go/exec.go``), ``make`` with a
  two-rule Makefile, ``gcc -O1`` compiling and running a program inside
  the sandbox, Python's ``subprocess.run``.

The hostile side (``tests/hostile/process_tree.c``) has no native twin:
a fork bomb under ``--max-processes`` and ``--timeout``, a child that
signals a host process outside the sandbox, a child that execs a path
outside the grants, ``SIGKILL`` of minikvm while its children sleep, and
the first process ending while its children sleep.  What must be left
afterwards — no host process of the sandbox — is found in ``/proc``: every
host process minikvm makes is a fork of it and keeps its environment,
which holds a marker (:data:`MARKER_NAME`) unique to the test.

Nothing is timed: the waits for processes to disappear are bounded polls
(:data:`GONE_WITHIN_SECONDS`) so that a failure shows what was left
instead of hanging.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.guest_runs import (minikvm_command, minikvm_environment, run_minikvm, run_native,
                              shell_status)
from tests.programs.build import DEFAULT_BUILD_DIR, build, go_program, program
from tests.test_busybox import tree

pytestmark = pytest.mark.kvm

HOSTILE = Path(__file__).resolve().parent / "hostile"
BUSYBOX = Path("/bin/busybox")
BASH_STATIC = Path("/bin/bash-static")
DASH = Path("/bin/sh")
BASH = Path("/bin/bash")
#: minikvm's own limit (exit 124), then the test's backstop.
GUEST_TIMEOUT_SECONDS = 15
SUBPROCESS_TIMEOUT_SECONDS = 60
#: The guest's whole environment, and the native run's.
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": "/nonexistent", "TERM": "dumb"}
#: Every fixture file gets this modification time, so archives made from
#: them are the same natively and in the guest.
FIXED_MTIME = 1_600_000_000
#: The environment variable that marks the host processes of one sandbox.
MARKER_NAME = "MINIKVM_TEST_PROCESS_TREE"
#: How long the processes of an ended sandbox may take to be gone.
GONE_WITHIN_SECONDS = 10
#: The first guest pid and how far the numbering may go in these tests: a
#: host pid to be signalled from the guest must not be one of them.
GUEST_PIDS = range(1000, 1000 + 300)

FIXTURES = {
    "a.txt": b"alpha\n",
    "b.txt": b"bravo\nbeta\n",
    "notes.md": b"not a text file by its name\n",
    "sub/c.txt": b"charlie\n",
    "sub/deeper/d.txt": b"delta\n",
    "words.txt": b"pear\napple\nfig\n",
    "hello.c": b'#include <stdio.h>\nint main(void) { puts("hello from gcc"); return 3; }\n',
    "Makefile": (b"all: upper.txt count.txt\n"
                 b"upper.txt: words.txt\n"
                 b"\ttr a-z A-Z < words.txt > upper.txt\n"
                 b"count.txt: upper.txt\n"
                 b"\twc -l < upper.txt > count.txt\n"
                 b"\t@echo made $@ from $<\n"),
}


def make_fixtures(root: Path) -> None:
    for name, data in FIXTURES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)
    # Deepest first: creating a file changes its directory's mtime.
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))


def needs(path: Path, package: str) -> None:
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is missing (apt-get install {package})")


def guest_options() -> list[str]:
    options = ["--here", "--timeout", str(GUEST_TIMEOUT_SECONDS), "--clearenv"]
    for name, value in ENV.items():
        options += ["--env", f"{name}={value}"]
    return options


def without_job_pids(stderr: bytes) -> str:
    """*stderr* with the pid in bash's report of a killed child
    (``/bin/bash: line 1: 32285 Killed  sh -c ...``) replaced by ``PID``:
    the host's pid natively, the sandbox's own in the guest."""
    return re.sub(r"(: line \d+: ) *\d+ ", r"\1PID ", stderr.decode(errors="replace"))


def compare(argv: list[object], tmp_path: Path, *, expect_status: int | None = None,
            expect_stdout: bytes | None = None) -> subprocess.CompletedProcess:
    """Run *argv* natively and in the sandbox, each in a fresh fixture
    directory; assert both give the same status, stdout, stderr and files.
    *expect_status*/*expect_stdout* pin the native run, so a command that
    does not do what the test means fails natively already."""
    native_dir, guest_dir = tmp_path / "native", tmp_path / "guest"
    for root in (native_dir, guest_dir):
        root.mkdir()
        make_fixtures(root)
    native = run_native(argv, cwd=native_dir, env=dict(ENV), timeout=SUBPROCESS_TIMEOUT_SECONDS)
    if expect_status is not None:
        assert shell_status(native.returncode) == expect_status, native.stderr.decode()
    if expect_stdout is not None:
        assert native.stdout == expect_stdout
    guest = run_minikvm([*guest_options(), "--", *argv], cwd=guest_dir,
                        timeout=SUBPROCESS_TIMEOUT_SECONDS)
    assert without_job_pids(guest.stderr) == without_job_pids(native.stderr)
    assert guest.stdout.decode(errors="replace") == native.stdout.decode(errors="replace")
    assert shell_status(guest.returncode) == shell_status(native.returncode)
    assert tree(guest_dir, {}) == tree(native_dir, {})
    return guest


# --- shell scripts ------------------------------------------------------------

#: name -> (script, what it prints natively: pinned, so a script that does
#: not do what its name says fails natively; None where the shells differ).
SCRIPTS: dict[str, tuple[str, bytes | None]] = {
    "pipeline": ("printf 'b\\na\\nc\\n' | sort | head -2", b"a\nb\n"),
    "long-pipeline": ("seq 20000 | sort -r | grep 7 | tail -n 2 | wc -l", b"2\n"),
    "pipeline-status": ("true | false; echo $?; false | true; echo $?", b"1\n0\n"),
    "subshell": ("(exit 3); echo $?", b"3\n"),
    "command-substitution": ("echo $(echo hi) \"$(printf '%s-' a b)\" $(echo $(echo nested))",
                             b"hi a-b- nested\n"),
    "killed-child": ("sh -c 'kill -9 $$'; echo $?; sh -c 'kill -TERM $$'; echo $?",
                     b"137\n143\n"),
    "exit-status": ("echo before; sh -c 'exit 42'", b"before\n"),
    "xargs": ("printf '%s\\n' b.txt a.txt | xargs cat; printf '1 2 3 4 5' | xargs -n 2 echo n",
              b"bravo\nbeta\nalpha\nn 1 2\nn 3 4\nn 5\n"),
    "find-exec": ("find . -name '*.txt' -exec cat {} + | sort", (
        b"alpha\napple\nbeta\nbravo\ncharlie\ndelta\nfig\npear\n")),
    "tar-gzip": ("tar czf out.tgz a.txt sub && tar tzf out.tgz | sort", (
        b"a.txt\nsub/\nsub/c.txt\nsub/deeper/\nsub/deeper/d.txt\n")),
    "redirections": ("printf 'x\\ny\\n' > f.txt; cat f.txt | tr a-z A-Z > g.txt; "
                     "cat < g.txt; cat missing.txt 2> err.txt; echo $?", b"X\nY\n1\n"),
    "wait": ("sleep 0.2 & p=$!; (exit 5) & q=$!; wait $q; echo q $?; wait $p; echo p $?; "
             "for i in 1 2 3; do (echo job $i > job$i.txt) & done; wait; cat job*.txt",
             b"q 5\np 0\njob 1\njob 2\njob 3\n"),
    # the inner sh ends at once; its background subshell, orphaned, writes
    # the file later while the first process (the outer shell) still runs
    "orphan": ("sh -c '(sleep 0.3; echo orphan done > tmp.txt; mv tmp.txt orphan.txt) & "
               "echo inner shell done'; i=0; "
               "while [ ! -e orphan.txt ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; "
               "cat orphan.txt", b"inner shell done\norphan done\n"),
}

#: shell id -> (argv before the script, the path, the package that has it)
SHELLS = {
    "busybox-sh": ([BUSYBOX, "sh", "-c"], BUSYBOX, "busybox-static"),
    "bash-static": ([BASH_STATIC, "-c"], BASH_STATIC, "bash-static"),
    "dash": ([DASH, "-c"], DASH, "dash"),
    "bash": ([BASH, "-c"], BASH, "bash"),
}
#: Every script under every shell: each is one minikvm start and a few
#: forks (about a second in all, native run included).
SHELL_CASES = [(shell, script) for shell in SHELLS for script in SCRIPTS]


@pytest.mark.parametrize("shell, script", SHELL_CASES,
                         ids=[f"{shell}-{script}" for shell, script in SHELL_CASES])
def test_shell_script_matches_native(shell: str, script: str, tmp_path: Path) -> None:
    prefix, path, package = SHELLS[shell]
    needs(path, package)
    text, expected = SCRIPTS[script]
    status = 42 if script == "exit-status" else 0
    compare([*prefix, text], tmp_path, expect_status=status, expect_stdout=expected)


# --- C programs: posix_spawn, fork, wait, signals, pipes ------------------------

PARTS = ["spawn", "fork-exec-wnohang", "waitid-all", "getppid", "kill-child", "vfork",
         "large-pipes", "wait-beside-a-thread"]


@pytest.mark.parametrize("variant", ["glibc-static", "musl-static"])
def test_spawn_fork_wait_and_signals_match_native(variant: str, tmp_path: Path) -> None:
    # The program execs itself by argv[0]: a copy inside the granted
    # directory, named by its absolute path.
    executable = tmp_path / "processes"
    shutil.copy(program("processes", variant), executable)
    native = run_native([executable], cwd=tmp_path, env=dict(ENV),
                        timeout=SUBPROCESS_TIMEOUT_SECONDS)
    assert native.returncode == 0, native.stdout.decode() + native.stderr.decode()
    headings = [line for line in native.stdout.decode().splitlines() if not line.startswith(" ")]
    assert headings == [f"{part}:" for part in PARTS]
    out = native.stdout.decode()
    assert "SIGTERM: killed by signal 15\n" in out and "exit 7: exited 7\n" in out
    assert "SIGKILL (itself): killed by signal 9\n" in out
    assert "child fed by the other thread: exited 9\n" in out
    assert "read 409600 bytes from the producing child, 0 wrong\n" in out
    guest = run_minikvm([*guest_options(), "--", executable], cwd=tmp_path,
                        timeout=SUBPROCESS_TIMEOUT_SECONDS)
    assert guest.stderr.decode() == native.stderr.decode()
    assert guest.stdout.decode() == out
    assert guest.returncode == 0


# --- Go, make, gcc, Python ---------------------------------------------------------


def test_go_os_exec_matches_native(tmp_path: Path) -> None:
    executable = go_program("exec")
    guest = compare([executable], tmp_path, expect_status=0)
    assert guest.stdout.decode().splitlines() == [
        'echo: "from echo\\n" <nil>', "cat: 262144 bytes back, same: true, <nil>",
        "exit 3: code 3", "kill -TERM: signaled true, signal terminated",
        "missing: fork/exec ./not-there: no such file or directory"]


def test_make_with_two_rules_matches_native(tmp_path: Path) -> None:
    needs(Path("/usr/bin/make"), "make")
    compare(["make"], tmp_path, expect_status=0, expect_stdout=(
        b"tr a-z A-Z < words.txt > upper.txt\nwc -l < upper.txt > count.txt\n"
        b"made count.txt from upper.txt\n"))


def test_gcc_compiles_and_runs_a_program_inside_the_sandbox(tmp_path: Path) -> None:
    needs(Path("/usr/bin/gcc"), "gcc")
    compare([DASH, "-c", "gcc -O1 hello.c -o a.out && ./a.out"], tmp_path, expect_status=3,
            expect_stdout=b"hello from gcc\n")


def test_python_subprocess_run_matches_native(tmp_path: Path) -> None:
    needs(Path("/usr/bin/python3"), "python3")
    compare(["/usr/bin/python3", "-c", "import subprocess; "
             "print(subprocess.run(['echo', 'x'], capture_output=True).stdout)"],
            tmp_path, expect_status=0, expect_stdout=b"b'x\\n'\n")


# --- hostile: a tree that outgrows, outlives or reaches out ----------------------


def hostile_program() -> Path:
    return build(HOSTILE / "process_tree.c", DEFAULT_BUILD_DIR / "hostile", "glibc-static")


def marked_processes(marker: str) -> dict[int, str]:
    """Host processes (not zombies) whose environment holds *marker*:
    pid -> command line, for the failure message."""
    found = {}
    needle = f"{MARKER_NAME}={marker}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat_file:
                state = stat_file.read().rsplit(b")", 1)[1].split()[0]
            with open(f"/proc/{entry}/environ", "rb") as environ_file:
                environ = environ_file.read()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline_file:
                cmdline = cmdline_file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:               # gone meanwhile, or not ours to read
            continue
        if state != b"Z" and needle in environ.split(b"\0"):
            found[int(entry)] = cmdline
    return found


def wait_until_gone(marker: str) -> dict[int, str]:
    """The marked processes still there after at most :data:`GONE_WITHIN_SECONDS`."""
    deadline = time.monotonic() + GONE_WITHIN_SECONDS
    left = marked_processes(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = marked_processes(marker)
    return left


class MarkedSandbox:
    """``minikvm run ARGUMENTS`` started with a fresh marker in its
    environment, its stdout and stderr going to files (a child that
    outlived minikvm would hold a pipe open); killed by the test's end."""

    def __init__(self, arguments: list[object], cwd: Path) -> None:
        self.marker = uuid.uuid4().hex
        self.stdout_path, self.stderr_path = cwd / "minikvm.out", cwd / "minikvm.err"
        env = minikvm_environment(dict(ENV, **{MARKER_NAME: self.marker}))
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(minikvm_command(arguments), cwd=cwd, env=env,
                                            stdin=subprocess.DEVNULL, stdout=stdout,
                                            stderr=stderr)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_output(self, text: str) -> None:
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT_SECONDS
        while text not in self.stdout() and self.process.poll() is None:
            assert time.monotonic() < deadline, f"no {text!r} from the guest"
            time.sleep(0.05)
        assert text in self.stdout(), self.stdout() + self.stderr()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=SUBPROCESS_TIMEOUT_SECONDS)
        for pid in marked_processes(self.marker):   # leave nothing behind, even on failure
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_fork_bomb_is_bounded_and_leaves_nothing(tmp_path: Path) -> None:
    limit = 20
    # --no-tmp: no watcher process for the private /tmp, so that every
    # marked host process is one of the guest's
    sandbox = MarkedSandbox(["--no-tmp", "--max-processes", limit, "--timeout", 5, "--",
                             hostile_program(), "bomb"], tmp_path)
    try:
        # Counted while the bomb runs, up to a second before --timeout: as the
        # sandbox ends, a fork already inside the host's clone when the others
        # are killed may still make one last process, which the lifeline then
        # ends (counted by "nothing left" below).
        most = 0
        counting_until = time.monotonic() + 4
        while sandbox.process.poll() is None:
            if time.monotonic() < counting_until:
                most = max(most, len(marked_processes(sandbox.marker)))
            time.sleep(0.05)
        status = sandbox.process.wait(timeout=SUBPROCESS_TIMEOUT_SECONDS)
        assert status == 124, sandbox.stderr()
        assert "fork refused: EAGAIN\n" in sandbox.stdout(), sandbox.stderr()
        assert "Traceback" not in sandbox.stderr()
        # the marker finds the sandbox's processes (more than minikvm itself)
        # and there were never more than the limit
        assert 2 <= most <= limit, most
        left = wait_until_gone(sandbox.marker)
        assert not left, left
    finally:
        sandbox.close()


def test_a_host_process_outside_the_sandbox_cannot_be_signalled(tmp_path: Path) -> None:
    sleepers = []
    try:
        while not sleepers or sleepers[-1].pid in GUEST_PIDS:
            sleepers.append(subprocess.Popen(["sleep", "60"]))
        target = sleepers[-1]
        guest = run_minikvm([*guest_options(), "--", hostile_program(), "kill", target.pid],
                            cwd=tmp_path, timeout=SUBPROCESS_TIMEOUT_SECONDS, text=True)
        assert guest.stdout == ("kill(host pid, 0): ESRCH\nkill(host pid, SIGTERM): ESRCH\n"
                                "child exited 0\n"), guest.stderr
        assert guest.returncode == 0, guest.stderr
        assert target.poll() is None, "the host process was signalled from the sandbox"
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()


def test_a_child_cannot_exec_a_program_outside_the_grants(tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside-true"
    shutil.copy("/usr/bin/true", outside)
    outside.chmod(0o755)
    native = run_native([hostile_program(), "exec", outside], cwd=tmp_path, text=True,
                        timeout=SUBPROCESS_TIMEOUT_SECONDS)
    assert native.stdout == "child exited 0\n"            # it is a program, natively
    guest = run_minikvm([*guest_options(), "--", hostile_program(), "exec", outside],
                        cwd=tmp_path, timeout=SUBPROCESS_TIMEOUT_SECONDS, text=True)
    # outside the grants a path does not exist (tests/test_exec.py)
    assert guest.stdout == "execve: ENOENT\nchild exited 1\n", guest.stderr
    assert guest.returncode == 0, guest.stderr


def test_sigkill_of_minikvm_ends_every_process_of_the_tree(tmp_path: Path) -> None:
    sandbox = MarkedSandbox([*guest_options(), "--", hostile_program(), "sleepers", 3, "hold"],
                            tmp_path)
    try:
        sandbox.wait_for_output("ready\n")
        running = marked_processes(sandbox.marker)
        # the first process, 3 children and 3 grandchildren: the marker sees them
        assert len(running) >= 7, running
        sandbox.process.send_signal(signal.SIGKILL)
        sandbox.process.wait(timeout=SUBPROCESS_TIMEOUT_SECONDS)
        left = wait_until_gone(sandbox.marker)
        assert not left, left
    finally:
        sandbox.close()


def test_when_the_first_process_ends_its_sleeping_children_are_gone(tmp_path: Path) -> None:
    sandbox = MarkedSandbox([*guest_options(), "--", hostile_program(), "sleepers", 3, "leave"],
                            tmp_path)
    try:
        status = sandbox.process.wait(timeout=SUBPROCESS_TIMEOUT_SECONDS)
        assert status == 0, sandbox.stderr()
        assert sandbox.stdout() == "ready\n", sandbox.stderr()
        left = wait_until_gone(sandbox.marker)
        assert not left, left
    finally:
        sandbox.close()


def test_guest_pids_are_the_sandbox_s_own_numbering(tmp_path: Path) -> None:
    """No native twin: the sandbox numbers its processes itself, the first
    1000 and the others from 1001 up, whatever the host's pids are."""
    needs(BUSYBOX, "busybox-static")
    guest = run_minikvm([*guest_options(), "--", BUSYBOX, "sh", "-c",
                         "echo $$; sh -c 'echo $PPID $$'; sh -c 'echo $PPID $$'; true"],
                        cwd=tmp_path, timeout=SUBPROCESS_TIMEOUT_SECONDS, text=True)
    assert guest.returncode == 0, guest.stderr
    first, (parent, child), (parent_again, second_child) = [
        line.split() for line in guest.stdout.splitlines()]
    assert first == ["1000"] and parent == parent_again == "1000"
    assert 1000 < int(child) < int(second_child)
