"""Step 17 — the sandbox: a hostile program, the policy, and the wall behind it.

A program is hostile here: it writes a file where it may, then tries to
read ``/etc/shadow``, climb out with ``..``, follow a symlink planted in
its directory, make a TCP socket, run ``/bin/sh`` and fork.  minikvm
answers each attempt in two layers:

1. The **policy** (``minikvm.sandbox.policy.Policy``) decides what the guest may
   reach.  Every path is resolved by the kernel beneath a grant directory
   (``openat2`` with ``RESOLVE_BENEATH``), so ``..`` and symlinks cannot
   lead out: outside the grants nothing exists, and the guest gets
   ``ENOENT`` — a program to ``execve`` too.  Refused operations
   (``fork``) get ``EPERM``.  Denials are logged for ``--audit``.
2. **Confinement** (``minikvm.sandbox.confine.confine``) asks the host kernel to
   hold the minikvm process itself to the same grants — Landlock for files
   and TCP ports, seccomp for system calls like ``execve`` and ``fork`` —
   once the VM exists and before the program file is parsed, as
   ``minikvm run`` does: only its bytes are read before.
   It is for the day the policy has a bug: the last part of this step
   *makes* such a bug, and the kernel still says no.

Confinement is irreversible — a confined process can never open files
outside its grants again, or fork — so the run happens in a child process,
which is what ``minikvm run`` is too; the parent only cleans up.  The
program is compiled with ``cc -static`` (glibc).  The output below was
made on a kernel with Landlock (Linux 5.13+) and seccomp; elsewhere minikvm
warns that the second layer is missing, and this step says so.

Run it:  python tutorials/17_sandbox.py
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from minikvm.sandbox.confine import confine
from minikvm.process.elf import read_program
from minikvm.machine.machine import Machine
from minikvm.sandbox.openat2 import O_RDONLY
from minikvm.sandbox.policy import Grant, Policy
from minikvm.process.process import Process
from minikvm.syscalls.dispatch import Dispatcher

# --- step: hostile ---
SOURCE = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static void attempt(const char *what, long result)
{
    printf("%s|%d\n", what, result < 0 ? errno : 0);
}

int main(void)
{
    char *shell[] = {"/bin/sh", NULL};
    attempt("write notes.txt here", open("notes.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644));
    attempt("read /etc/shadow", open("/etc/shadow", O_RDONLY));
    attempt("read ../../../../etc/passwd", open("../../../../etc/passwd", O_RDONLY));
    attempt("follow the planted symlink", open("innocent.txt", O_RDONLY));
    attempt("make a TCP socket", socket(AF_INET, SOCK_STREAM, 0));
    attempt("execve /bin/sh", execve("/bin/sh", shell, NULL));
    attempt("fork", fork());
    return 0;
}
"""
# --- end: hostile ---
COMPILER = ["cc", "-static", "-O2"]
GUEST_MEMORY = 64 << 20


def build(directory: Path) -> Path:
    (directory / "hostile.c").write_text(SOURCE)
    subprocess.run([*COMPILER, "hostile.c", "-o", "hostile"], cwd=directory, check=True,
                   timeout=120)
    return directory / "hostile"


def errno_name(number: int) -> str:
    return "ok" if number == 0 else errno.errorcode.get(number, str(number))


#: What the sandbox must answer to each attempt of the guest.
EXPECTED = {
    "write notes.txt here": 0, "read /etc/shadow": errno.ENOENT,
    "read ../../../../etc/passwd": errno.ENOENT, "follow the planted symlink": errno.ENOENT,
    "make a TCP socket": errno.EACCES, "execve /bin/sh": errno.ENOENT, "fork": errno.EPERM,
}


def attempt(what: str, action: Callable[[], object]) -> bool:
    """Do *action* in this (host) process; say whether the kernel let it."""
    try:
        action()
        print(f"  {what}: allowed")
        return True
    except OSError as error:
        print(f"  {what}: {type(error).__name__} ({errno_name(error.errno)})")
        return False


def fork_and_reap() -> None:
    """``os.fork()``; a child, if there is one, leaves at once."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def sandboxed_run(executable: Path, work: Path) -> int:
    """What ``minikvm run --allow-write WORK hostile`` does, then a look at
    the minikvm process itself.  Runs in a child process: confinement is
    irreversible."""
    read_end, write_end = os.pipe()
    # --- step: run ---
    policy = Policy(write=[work])                     # like --here, in work/
    program = read_program(executable)                # the bytes only, not parsed
    machine = Machine(GUEST_MEMORY)                   # /dev/kvm, the VM, the vCPU
    confinement = confine(policy)                     # the second layer, then
    process = Process.spawn(str(executable), ["hostile"], {}, policy, cwd=str(work),
                            stdio=(0, write_end, 2), machine=machine, program=program)
    result = process.run(Dispatcher(process), timeout=10)
    process.close()
    # --- end: run ---
    os.close(write_end)

    # --- step: report ---
    print("the guest tried:")
    answers = {}
    with os.fdopen(read_end) as guest_output:
        for line in guest_output:
            what, _, number = line.strip().partition("|")
            answers[what] = int(number)
            print(f"  {what:28} -> {errno_name(int(number))}")
    print(f"exit status {result.exit_status}; notes.txt was written: "
          f"{(work / 'notes.txt').exists()}")
    print(policy.summary().replace(str(work), "$WORK"))
    # --- end: report ---

    # --- step: second-layer ---
    print("minikvm itself, after confine():")
    for warning in confinement.warnings:
        print(f"  warning: {warning}")
    leaks = [attempt("open('/etc/passwd')", lambda: open("/etc/passwd").close()),
             attempt("os.fork()", fork_and_reap)]
    # A bug in the policy: a grant for /etc smuggled in after the fact.
    forged = Grant("/etc", False, os.open("/etc", os.O_PATH | os.O_DIRECTORY))
    policy.grants = (forged, *policy.grants)
    leaks.append(attempt("policy.open('/etc/passwd'), forged grant",
                         lambda: os.close(policy.open("/etc/passwd", O_RDONLY, 0, "/"))))
    # --- end: second-layer ---
    policy.close()

    if answers != EXPECTED or result.exit_status != 0:
        print(f"wrong result: the guest got {answers} and exited {result.exit_status}; "
              f"expected {EXPECTED} and 0")
        return 1
    if confinement.complete and any(leaks):
        print("wrong result: minikvm is confined, yet the kernel allowed an attempt above")
        return 1
    return 0


def main() -> int:
    if shutil.which(COMPILER[0]) is None:
        print(f"{COMPILER[0]} is not installed: apt-get install gcc libc6-dev")
        return 1
    scratch = Path(tempfile.mkdtemp(prefix="minikvm-step17-"))
    try:
        executable = build(scratch)
        work = scratch / "work"
        work.mkdir()
        (work / "innocent.txt").symlink_to("/etc/passwd")   # planted by "someone else"
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:                     # the child: one sandboxed run, confined for good
            status = sandboxed_run(executable, work)
            sys.stdout.flush()
            os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(wait_status)
    finally:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    sys.exit(main())
