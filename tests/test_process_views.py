"""What one process of the sandbox sees of the others: ``/proc/<pid>`` of
every process in the sandbox's table, ``ps`` listing exactly them, and no
host process; what a vfork child leaves in its parent's memory; the
status flags of a pipe the processes share; who sent a signal; the trace
of a fork.

The shells here start children whose pids they know (``$$``, ``$!``), run
``ps``, and print what they know; the test checks that ``ps`` lists those
pids and no other (besides ``ps`` itself, a child of the shell), with the
parents the shell knows.  Nothing is compared with a native run: natively
``ps`` lists the whole host.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.guest_runs import run_minikvm, run_native
from tests.programs.build import program

pytestmark = pytest.mark.kvm

BUSYBOX = Path("/bin/busybox")
PROCPS = Path("/usr/bin/ps")
TIMEOUT_SECONDS = 60

#: Two children that sleep, a shell with a child of its own; ps; then what
#: the shell knows.
#: The sleeps are killed after, so the run ends at once.
SCRIPT = ("sleep 30 & a=$!; sleep 30 & b=$!; sh -c 'sleep 30 & echo $! > g.txt; wait' & c=$!; "
          "while [ ! -s g.txt ]; do sleep 0.05; done; g=$(cat g.txt); "
          "{ps} > ps.txt; "
          "echo known $$ $a $b $c $g; "
          "echo parent-of-a $(sed -n 's/^PPid:\\t//p' /proc/$a/status); "
          "echo state-of-a $(cut -d' ' -f3 /proc/$a/stat); "
          "echo comm-of-a $(cat /proc/$a/comm); "
          "echo cmdline-of-a $(tr '\\0' ' ' < /proc/$a/cmdline); "
          "kill $g; kill $a $b $c; wait; "
          "cat /proc/$a/stat 2>/dev/null || echo reaped-is-gone; "
          "cat /proc/1/stat 2>/dev/null || echo host-pid-1-is-gone; "
          "echo listed $(ls /proc | grep -E '^[0-9]+$'); "
          "cat ps.txt")


def needs(path: Path, package: str) -> None:
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is missing (apt-get install {package})")


def run_script(tmp_path: Path, shell: list[str], ps: str) -> dict[str, list[str]]:
    """Run :data:`SCRIPT` with *ps* in the sandbox; its lines by first word
    (the ``ps`` output under ``"ps"``, one row each)."""
    guest = run_minikvm(["--here", "--timeout", "30", "--", *shell,
                         SCRIPT.replace("{ps}", ps)],
                        cwd=tmp_path, timeout=TIMEOUT_SECONDS, text=True)
    assert guest.returncode == 0, guest.stderr
    lines: dict[str, list[str]] = {"ps": []}
    for line in guest.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("known", "parent-of-a", "state-of-a", "comm-of-a", "cmdline-of-a",
                    "listed"):
            lines[word] = rest.split()
        elif line in ("reaped-is-gone", "host-pid-1-is-gone"):
            lines[line] = []
        else:
            lines["ps"].append(line)
    return lines


def check(lines: dict[str, list[str]]) -> None:
    shell, a, b, c, g = lines["known"]
    rows = [row.split() for row in lines["ps"][1:]]      # PID PPID COMMAND
    listed = {row[0] for row in rows}
    # besides those: ps itself, the shell's child
    ps_rows = [row for row in rows if row[0] not in (shell, a, b, c, g)]
    assert len(ps_rows) == 1 and ps_rows[0][1] == shell, rows
    assert listed == {shell, a, b, c, g, ps_rows[0][0]}
    parents = {row[0]: row[1] for row in rows}
    assert parents[a] == parents[b] == parents[c] == shell and parents[g] == c
    assert lines["parent-of-a"] == [shell]
    assert lines["state-of-a"][0] in ("R", "S")
    assert lines["cmdline-of-a"] == ["sleep", "30"]
    assert lines["comm-of-a"] in (["sleep"], ["exe"])    # busybox runs applets via /proc/self/exe
    assert "reaped-is-gone" in lines and "host-pid-1-is-gone" in lines
    # /proc lists the processes alive at the end: the shell and ls (grep's pid too)
    assert shell in lines["listed"] and a not in lines["listed"]
    assert all(1000 <= int(pid) < 1100 for pid in lines["listed"])


def test_busybox_ps_lists_the_sandbox_s_processes(tmp_path: Path) -> None:
    needs(BUSYBOX, "busybox-static")
    check(run_script(tmp_path, [str(BUSYBOX), "sh", "-c"],
                     f"{BUSYBOX} ps -o pid,ppid,comm"))


def test_procps_ps_lists_the_sandbox_s_processes(tmp_path: Path) -> None:
    needs(PROCPS, "procps")
    needs(Path("/bin/bash"), "bash")
    check(run_script(tmp_path, ["/bin/bash", "-c"], f"{PROCPS} -e -o pid=PID,ppid=PPID,comm"))


# --- a vfork child's stores reach its parent -----------------------------------------

@pytest.mark.parametrize("variant", ["glibc-static", "musl-static"])
def test_vfork_child_stores_and_posix_spawn_errors_reach_the_parent(variant: str,
                                                                     tmp_path: Path) -> None:
    """``tests/programs/vfork_memory.c``: glibc's posix_spawn of a missing
    program returns ENOENT (its child stores the error in the parent's
    memory), musl's too (a pipe), a spawn that works still works, and a
    vfork child's own store and a read into its buffer are seen by the
    parent — all as natively."""
    assert_same_as_native(tmp_path, program("vfork_memory", variant), [
        "posix_spawn(/no/such/program) = No such file or directory",
        "posix_spawn(/bin/sh) = 0, child exited 3",
        'vfork child stored 42 and read "through the pipe", exited 0'])


def assert_same_as_native(tmp_path: Path, executable: Path, expected: list[str]) -> None:
    """*executable* prints *expected* natively, and the same under
    ``minikvm run --here``, with the same stderr and a 0 status."""
    native = run_native([executable], cwd=tmp_path, timeout=TIMEOUT_SECONDS)
    assert native.returncode == 0, native.stderr
    assert native.stdout.decode().splitlines() == expected
    guest = run_minikvm(["--here", "--timeout", "30", "--", executable], cwd=tmp_path,
                        timeout=TIMEOUT_SECONDS)
    assert guest.stderr.decode() == native.stderr.decode()
    assert guest.stdout.decode() == native.stdout.decode()
    assert guest.returncode == 0


# --- status flags shared across fork -----------------------------------------------------

def test_o_nonblock_on_a_pipe_is_shared_with_the_forked_processes(tmp_path: Path) -> None:
    """``tests/programs/pipe_flags.c``: O_NONBLOCK set by F_SETFL in one
    process is seen in the other (the open file description is shared), as
    natively."""
    assert_same_as_native(tmp_path, program("pipe_flags", "glibc-static"), [
        "before the fork: read end blocking",
        "after the child set O_NONBLOCK: read end non-blocking in the parent",
        "read of the empty pipe: -1 Resource temporarily unavailable",
        "the child sees the read end blocking",
        "after the child set it on a dup of the write end: write end non-blocking"])


# --- who sent a signal, and the trace of a fork -----------------------------------------

def test_a_signal_between_processes_names_its_sender(tmp_path: Path) -> None:
    """``tests/programs/signal_sender.c``: si_pid of a signal from the child
    is the child's pid, and the other way round (it travels through the
    table's mailbox), as natively.  Under ``--trace`` the child's own line
    of the fork's clone ends ``= 0``, as ``strace -f`` shows it, the
    parent's with the child's pid."""
    executable = program("signal_sender", "glibc-static")
    native = run_native([executable], cwd=tmp_path, timeout=TIMEOUT_SECONDS)
    assert native.returncode == 0, native.stderr
    assert native.stdout.decode().count(": yes") == 6
    guest = run_minikvm(["--here", "--timeout", "30", "--trace", "--", executable],
                        cwd=tmp_path, timeout=TIMEOUT_SECONDS)
    assert guest.stdout.decode() == native.stdout.decode()
    assert guest.returncode == 0
    clones = [line for line in guest.stderr.decode().splitlines() if "] clone(" in line]
    assert len(clones) == 2, guest.stderr.decode()
    parent_line, child_line = sorted(clones)      # [pid 1000] before [pid 1001]
    assert parent_line.startswith("[pid 1000] ") and parent_line.endswith(" = 1001")
    assert child_line.startswith("[pid 1001] ") and child_line.endswith(" = 0")
