"""``minikvm run`` as a sandbox: grants, denials in ``--trace`` and ``--audit``,
the time limit, confinement of minikvm itself, Ctrl-C, and the how-to's
shell functions.

Every run is ``python -m minikvm run ...`` in a subprocess, as a user types
it.  Nothing is timed except the time limit, which is measured (and
printed) but checked against a generous bound only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from minikvm.sandbox import landlock

from minikvm.sandbox import seccomp
from tests.guest_runs import minikvm_command, minikvm_environment, run_minikvm, run_native
from tests.programs.build import DEFAULT_BUILD_DIR, build, program

pytestmark = pytest.mark.kvm

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ROOT / "tests" / "hostile"
HERE_FUNCTIONS = ROOT / "docs" / "howto" / "minikvm-here.bash"
BUSYBOX = shutil.which("busybox")
RUN_TIMEOUT_SECONDS = 60


def minikvm(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_minikvm(list(args), cwd=cwd, text=True, timeout=RUN_TIMEOUT_SECONDS)


def escape_files() -> Path:
    return build(HOSTILE / "escape_files.c", DEFAULT_BUILD_DIR / "hostile", "glibc-static")


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    grant, outside = tmp_path / "grant", tmp_path / "outside"
    for directory in (grant, outside, grant / "sub"):
        directory.mkdir()
    (grant / "inside").write_text("inside\n")
    (outside / "secret").write_text("secret\n")
    for name, target in (("abs-link", outside / "secret"), ("rel-link", "../outside/secret"),
                         ("dir-link", outside)):
        (grant / name).symlink_to(target)
    return {"root": tmp_path, "grant": grant, "outside": outside}


# --- denials, as --trace and --audit show them ---------------------------------


def test_a_denial_in_the_trace_says_why(tree):
    run = minikvm("--allow-write", tree["grant"], "--trace", escape_files(), tree["grant"],
                  tree["outside"], cwd=tree["root"])
    assert run.returncode == 0, run.stderr
    # outside the grant nothing exists, but the trace says why it was not found
    assert re.search(r'^openat\(AT_FDCWD, "/etc/shadow", O_RDONLY.*\) = -1 ENOENT '
                     r'\(hidden: outside allowed paths\)$', run.stderr, re.MULTILINE), run.stderr
    assert re.search(r'^openat\(AT_FDCWD, "abs-link", O_RDONLY.*\) = -1 ENOENT \(hidden: '
                     r'resolves outside grant', run.stderr, re.MULTILINE), run.stderr
    assert "Traceback" not in run.stderr


def test_audit_prints_the_denials_at_exit(tree):
    run = minikvm("--allow-write", tree["grant"], "--audit", escape_files(), tree["grant"],
                  tree["outside"], cwd=tree["root"])
    assert run.returncode == 0, run.stderr
    summary = run.stderr[run.stderr.index("sandbox: "):]
    assert re.match(r"sandbox: \d+ request\(s\) denied:", summary), summary
    assert "openat(/etc/shadow) = -ENOENT (hidden: outside allowed paths)" in summary
    assert f"{tree['grant']}/abs-link" in summary


def test_audit_with_nothing_denied(tmp_path):
    run = minikvm("--audit", program("hello", "glibc-static"), cwd=tmp_path)
    assert run.returncode == 0
    assert run.stdout == "hello, world\n"
    assert run.stderr == "sandbox: nothing was denied\n"


# --- grants from the command line ----------------------------------------------


def test_here_grants_the_current_directory_and_nothing_else(tmp_path):
    files = program("files", "glibc-static")       # works in its current directory
    denied = minikvm(files, cwd=tmp_path)
    assert denied.returncode != 0 and "errno 2" in denied.stdout, denied.stdout
    allowed = minikvm("--here", files, cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "Traceback" not in denied.stderr + allowed.stderr


def test_a_policy_file_grants_what_the_options_grant(tmp_path):
    files = program("files", "glibc-static")       # works in its current directory
    profile = tmp_path / "files.toml"
    profile.write_text("here = true\nmax-fds = 64\n")
    allowed = minikvm("--policy", profile, files, cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    profile.write_text("here = false\n")
    denied = minikvm("--policy", profile, files, cwd=tmp_path)
    # without a grant the current directory does not exist for the program
    assert denied.returncode != 0 and "errno 2 " in denied.stdout, denied.stdout


def test_a_name_without_a_slash_is_found_in_path_as_natively(tmp_path):
    """``minikvm run args`` finds the program as the host's execvp does:
    the non-executable ``args`` earlier in PATH is skipped, and argv[0] is
    the name as typed (the outputs, argv and auxv included, are the same)."""
    found, skipped = tmp_path / "bin", tmp_path / "noexec"
    found.mkdir()
    skipped.mkdir()
    shutil.copy(program("args", "glibc-static"), found / "args")
    (skipped / "args").write_bytes(b"not a program\n")
    (skipped / "args").chmod(0o644)
    env = {"PATH": f"{skipped}:{found}:/usr/bin:/bin", "ARGS_ENV_PREFIX": "ARGS_",
           "ARGS_X": "1"}
    native = run_native(["args", "one", "two"], env=env, cwd=tmp_path, text=True,
                        timeout=RUN_TIMEOUT_SECONDS)
    assert native.returncode == 0, native.stderr
    sandboxed = run_minikvm(["args", "one", "two"], env=env, cwd=tmp_path, text=True,
                            timeout=RUN_TIMEOUT_SECONDS)
    assert sandboxed.returncode == 0, sandboxed.stderr
    assert "argv[0]: args\n" in native.stdout
    assert f"AT_EXECFN: {found / 'args'}\n" in native.stdout
    assert sandboxed.stdout == native.stdout


def test_allow_read_is_read_only(tree):
    run = minikvm("--allow-read", tree["grant"], escape_files(), tree["grant"], tree["outside"],
                  cwd=tree["root"])
    assert "inside-read: 0" in run.stdout
    assert "inside-create: 13" in run.stdout
    assert not (tree["grant"] / "created").exists()


@pytest.mark.parametrize("arguments, message", [
    (["--allow-connect", "bad!name:80"], "nor a host name"),
    (["--allow-connect", "localhost:99999"], "not a number from 1 to 65535"),
    (["--allow-listen", "unix:/tmp/x.sock"], "one port"),
    (["--allow-connect", "127.0.0.1"], "is not HOST:PORT"),
    (["--allow-read", "/no/such/directory"], "no such directory"),
    (["--allow-write", "/etc/passwd"], "not a directory"),
])
def test_a_bad_grant_is_a_usage_error(arguments, message, tmp_path):
    run = minikvm(*arguments, program("hello", "glibc-static"), cwd=tmp_path)
    assert run.returncode == 2
    assert message in run.stderr and "Traceback" not in run.stderr
    assert run.stdout == ""


# --- the time limit --------------------------------------------------------------------


def test_timeout_stops_a_tight_loop(tmp_path):
    """spin.c makes no system call after its first line: only the timer can stop it."""
    start = time.monotonic()
    run = minikvm("--timeout", 1, program("spin", "glibc-static"), cwd=tmp_path)
    elapsed = time.monotonic() - start
    assert run.returncode == 124
    assert run.stdout == "spinning\n"
    assert run.stderr == "minikvm: timed out: the time limit was reached\n"
    print(f"minikvm run --timeout 1 spin: {elapsed:.2f} s from start to exit, "
          "Python start-up and VM creation included")
    assert elapsed < 1 + 10, "generous: start-up and exit are included"


def test_timeout_stops_the_guest_close_to_the_limit(tmp_path):
    """The guest part alone: Process.run(timeout=1) on spin, measured in a
    fresh interpreter.  minikvm promises 100 ms; the bound here is generous,
    the number is printed."""
    code = textwrap.dedent(f"""
        import time
        from minikvm.sandbox.policy import Policy
        from minikvm.process.process import Process
        from minikvm.syscalls.dispatch import Dispatcher
        process = Process.spawn({str(program("spin", "glibc-static"))!r}, ["spin"], {{}},
                                Policy(), stdio=(0, 2, 2))
        start = time.monotonic()
        result = process.run(Dispatcher(process), timeout=1.0)
        print(result.exit_status, time.monotonic() - start)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS)
    status, seconds = out.stdout.split()
    print(f"Process.run(timeout=1) of a tight loop returned after {float(seconds):.3f} s")
    assert status == "124"
    assert 1.0 <= float(seconds) < 1.1 + 0.9, "generous: minikvm aims for 1.1 s"


def test_timeout_interrupts_a_guest_blocked_on_a_socket(tmp_path):
    """A guest blocked in recv() is inside a system call, not in the VM: the
    socket wait notices the time limit and the run stops all the same."""
    import socket
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        net = build(HOSTILE / "escape_net.c", DEFAULT_BUILD_DIR / "hostile", "glibc-static")
        start = time.monotonic()
        # the server accepts (the backlog does) but never answers: recv blocks
        run = minikvm("--timeout", 1, "--allow-connect", f"127.0.0.1:{port}", net, "tcp",
                      "127.0.0.1", port, cwd=tmp_path)
        elapsed = time.monotonic() - start
    assert run.returncode == 124, run.stdout + run.stderr
    assert "send: 0" in run.stdout and "reply:" not in run.stdout
    assert run.stderr.endswith("minikvm: timed out: the time limit was reached\n")
    print(f"--timeout 1 with the guest blocked in recv: {elapsed:.2f} s in all")


def test_ctrl_c_stops_the_guest_without_a_traceback(tmp_path):
    child = subprocess.Popen(minikvm_command([program("spin", "glibc-static")]), cwd=tmp_path,
                             env=minikvm_environment(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "spinning\n"
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=RUN_TIMEOUT_SECONDS)
    finally:
        child.kill()
    # The guest dies of the SIGINT (no handler), silently, and minikvm ends
    # by the same signal, as the native program would (issue 11, item 6).
    assert child.returncode == -signal.SIGINT
    assert stderr == ""


# --- the second wall ----------------------------------------------------------------------


def test_verbose_shows_the_confinement(tmp_path):
    run = minikvm("--verbose", program("hello", "glibc-static"), cwd=tmp_path)
    assert run.returncode == 0
    lines = run.stderr.splitlines()
    if landlock.available():
        assert any(re.match(r"minikvm: landlock ABI \d+: filesystem", line) for line in lines)
    else:
        assert any("warning" in line and "Landlock" in line for line in lines)
    if seccomp.available():
        assert any(line.startswith("minikvm: seccomp: ") for line in lines)


def test_no_warning_where_the_kernel_has_both_walls(tmp_path):
    if not (landlock.available() and seccomp.available()):
        pytest.skip("this kernel lacks Landlock or seccomp: minikvm warns, as it should")
    run = minikvm(program("hello", "glibc-static"), cwd=tmp_path)
    assert run.returncode == 0 and run.stderr == ""


# --- the how-to's shell functions -----------------------------------------------------


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """*script* in bash, after a ``minikvm`` function that runs this checkout
    and the how-to's functions."""
    prelude = (f'minikvm() {{ PYTHONPATH={ROOT} {sys.executable} -m minikvm "$@"; }}\n'
               f"source {HERE_FUNCTIONS}\n")
    return subprocess.run(["bash", "-c", prelude + script], cwd=cwd, capture_output=True,
                          text=True, timeout=4 * RUN_TIMEOUT_SECONDS)


@pytest.mark.skipif(BUSYBOX is None, reason="needs a static busybox (busybox-static)")
def test_the_here_function_grants_only_the_current_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("one\ntwo\n")
    # An executable beside the directory: it exists on the host, but not
    # for the sandbox, which sees only the directory and the system view.
    outside = tmp_path.parent / f"{tmp_path.name}-outside-tool"
    outside.write_text("#!/bin/sh\necho escaped\n")
    outside.chmod(0o755)
    run = bash("here busybox wc -l notes.txt\n"
               "here busybox cat /etc/shadow; echo \"status $?\"\n"
               f"here busybox sh -c 'exec {outside}'; echo \"status $?\"\n"
               "here no-such-program; echo \"status $?\"\n", tmp_path)
    assert run.stdout.splitlines() == ["2 notes.txt", "status 1", "status 127", "status 127"]
    assert "cat: can't open '/etc/shadow': No such file or directory" in run.stderr
    assert f"{outside}: not found" in run.stderr     # execve: ENOENT, outside the grants
    assert "Traceback" not in run.stderr


@pytest.mark.skipif(BUSYBOX is None, reason="needs a static busybox (busybox-static)")
def test_here_on_sandboxes_the_commands_typed_and_here_off_stops(tmp_path):
    (tmp_path / "notes.txt").write_text("one\ntwo\n")
    with socket_listener() as port:
        run = bash("here_on cat wc wget\n"
                   "cat notes.txt | wc -l\n"
                   "cat /etc/shadow; echo \"status $?\"\n"
                   f"wget -q -O - http://127.0.0.1:{port}/; echo \"status $?\"\n"
                   "here_off\n"
                   "type -t cat\n", tmp_path)
    assert run.stdout.splitlines() == ["2", "status 1", "status 1", "file"], run.stderr
    assert "here: 3 commands now run sandboxed" in run.stderr
    assert "wget: socket: Permission denied" in run.stderr


class socket_listener:
    """A TCP listener on 127.0.0.1 for the duration of a with block (its port)."""

    def __enter__(self) -> int:
        import socket
        self.server = socket.create_server(("127.0.0.1", 0))
        return self.server.getsockname()[1]

    def __exit__(self, *exc_info: object) -> None:
        self.server.close()


@pytest.mark.kvm
@pytest.mark.parametrize("variant", ["glibc-static", "musl-static"])
def test_the_smallest_memory_accepted_runs_a_program(variant, tmp_path):
    """--memory refuses less than MIN_MEMORY_SIZE (tests/test_cli_args.py);
    that much must be enough for a C program to start and print."""
    from minikvm.cpu.layout import MIN_MEMORY_SIZE
    run = minikvm("--memory", f"{MIN_MEMORY_SIZE >> 20}M", program("hello", variant), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("hello"), run.stdout
