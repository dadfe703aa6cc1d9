"""Step 20 — two processes: fork is a second VM over a copy of the memory, exec a new image.

Until now a sandbox held one guest process.  A guest's ``fork`` makes it
two, the way a kernel does, one level up: **one host process per guest
process**.  The host copies the guest memory into a new memfd (the copy a
snapshot makes, step 18) and ``os.fork()``s itself; the child maps the
copy over the same host addresses, makes a VM and vCPU of its own — KVM
refuses a VM to any process but the one that made it — loads the
registers with RAX = 0, and resumes the guest.  ``execve`` is the other
half: the same process, the same pid, a new program image.

The processes of one sandbox find each other in a ``Family``: a process
table shared by every host process of the sandbox (pids, parents,
groups), which ``minikvm run`` sets up for its first process.  A process
without one — every step before this — cannot fork (EPERM, step 17).

The program forks; the child changes a global, prints its pid and its
parent's, and exits with status 3; the parent waits, prints the status
and its own copy of the global, then execs itself.  A handler around the
dispatcher says in which host process each system call is handled.

Run it:  python tutorials/20_two_processes.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from minikvm.process.process import Process
from minikvm.sandbox.policy import Policy
from minikvm.syscalls.dispatch import Dispatcher
from minikvm.tree.family import Family

# --- step: program ---
SOURCE = r"""
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static int global = 1;

int main(int argc, char **argv)
{
    if (argc > 1) {                             /* the new image, after execve */
        printf("after exec: pid %d runs \"%s\", global is %d again\n", getpid(), argv[1], global);
        return 0;
    }
    printf("parent: pid %d forks\n", getpid());
    fflush(stdout);                             /* or the child would print it too */
    pid_t child = fork();
    if (child == 0) {
        global = 42;
        printf("child: pid %d, parent %d, global %d, exits with 3\n", getpid(), getppid(), global);
        return 3;
    }
    int status;
    waitpid(child, &status, 0);
    printf("parent: child %d exited with status %d; global is still %d\n",
           child, WEXITSTATUS(status), global);
    fflush(stdout);
    execl(argv[0], argv[0], "the same program, a new image", (char *)NULL);
    perror("execl");
    return 1;
}
"""
# --- end: program ---


def build(directory: Path) -> str:
    (directory / "two.c").write_text(SOURCE)
    subprocess.run(["cc", "-static", "-O2", "two.c", "-o", "two"], cwd=directory, check=True,
                   timeout=120)
    return str(directory / "two")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="minikvm-step20-") as scratch:
        program = build(Path(scratch))
        # --- step: family ---
        policy = Policy(read=[scratch])              # execve needs to reach the program
        process = Process.spawn(program, [program], {}, policy)
        pool = process.mm.user_pool
        family = Family.start(max_processes=8, pgid=process.pgid, sid=process.sid,
                              memory=pool.used, memory_limit=256 << 20)
        process.family = family                      # now fork makes a second process
        process.new_id = family.table.new_id         # pids unique in the whole sandbox
        pool.charge = family.charge                  # all processes share one memory budget
        process.machine.forward_outside_signals().mailbox = family.mail   # SIGCHLD wakes wait
        # --- end: family ---

        # --- step: where ---
        dispatcher = Dispatcher(process)
        spawned_on = process.machine.vm              # the VM Process.spawn made
        hosts: list[int] = []

        def on_syscall(regs) -> None:
            """The dispatcher, after saying when a new host process handles a call."""
            if os.getpid() not in hosts:
                hosts.append(os.getpid())
                print(f"[host] guest pid {process.pid} in host process #{len(hosts)}, "
                      f"on the VM spawn made: {process.machine.vm is spawned_on}", flush=True)
            dispatcher(regs)
        # --- end: where ---

        # --- step: run ---
        sys.stdout.flush()
        try:
            result = process.run(on_syscall, timeout=30)     # the child never returns here
        finally:
            family.end_all()
            process.machine.stop_forwarding()
            process.close()
        print(f"exit status {result.exit_status}; the child's calls never reached this host "
              f"process: {hosts == [os.getpid()]}")
        # --- end: run ---
    if result.exit_status != 0:
        print(f"wrong result: exit status {result.exit_status} {result.message}, expected 0")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
