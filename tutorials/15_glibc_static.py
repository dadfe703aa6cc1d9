"""Step 15 — a glibc program, grown from its trace: find the unknown call, add it.

minikvm was grown the way this step works: run a program with a trace,
look for the system call that came back ``ENOSYS (unknown to minikvm)``,
write a handler, run again.  The program here reserves disk space with
``posix_fallocate(3)``, which glibc implements with the ``fallocate``
system call (number 285) — one minikvm does not have (yet).

1. The first run shows it: ``syscall_285(...) = -1 ENOSYS``, and the
   program reports "Function not implemented".  The process also counts
   unknown calls in ``process.unknown_syscalls``.
2. A handler is a function ``handler(proc, arg0, arg1, ...)`` taking the
   raw register values; it returns the result or raises ``SyscallError``
   for an errno.  It reaches guest state only through ``proc``: here the
   fd table, whose entry holds the host fd the policy opened.
3. ``Dispatcher.add`` registers it, with the argument kinds ``--trace``
   uses to print it, in this dispatcher only.  The second run succeeds.

In minikvm itself the handler then moves into its family's module
(``minikvm/syscalls/files.py``) as one more row of ``SYSCALLS``: see the
how-to "Add a system call".

The program is compiled with ``cc -static`` (glibc); it runs in a
temporary directory the policy grants read-write, like ``--here``.

Run it:  python tutorials/15_glibc_static.py
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from minikvm.errors import SyscallError
from minikvm.cpu.layout import STACK_SIZE, STACK_TOP
from minikvm.sandbox.policy import Policy
from minikvm.process.process import Process
from minikvm.syscalls.base import Syscall, signed32, signed64
from minikvm.syscalls.dispatch import Dispatcher
from minikvm.syscalls.trace import Tracer

SOURCE = """\
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int main(void)
{
    int fd = open("data.bin", O_CREAT | O_RDWR | O_TRUNC, 0644);
    int error = posix_fallocate(fd, 0, 65536);
    struct stat st;

    fstat(fd, &st);
    printf("posix_fallocate: %s\\n", error ? strerror(error) : "ok");
    printf("data.bin is %ld bytes\\n", (long)st.st_size);
    return error != 0;
}
"""
COMPILER = ["cc", "-static", "-O2"]
NR_FALLOCATE = 285                 # asm/unistd_64.h
ADDRESS = re.compile(r"0x[0-9a-f]{5,}")


def build(directory: Path) -> Path:
    (directory / "reserve.c").write_text(SOURCE)
    subprocess.run([*COMPILER, "reserve.c", "-o", "reserve"], cwd=directory, check=True,
                   timeout=120)
    return directory / "reserve"


def run(executable: Path, workdir: Path, extra: list[Syscall]) -> tuple[int, dict[int, int]]:
    """Run the program once in *workdir*; print the trace from the moment
    it opens its file (glibc's start-up before that is step 14's story)."""
    # --- step: run ---
    with Policy(write=[workdir]) as policy:
        process = Process.spawn(str(executable), ["reserve"], {"LANG": "C"}, policy,
                                cwd=str(workdir))
        transcript = io.StringIO()
        dispatcher = Dispatcher(process, Tracer(transcript))
        for entry in extra:
            dispatcher.add(entry)
        sys.stdout.flush()
        result = process.run(dispatcher, timeout=10)
        unknown = dict(process.unknown_syscalls)
        process.close()
    # --- end: run ---
    lines = transcript.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if '"data.bin"' in line)
    for line in lines[start:]:
        print("  " + ADDRESS.sub(stack_address, line))
    return result.exit_status, unknown


def stack_address(match: re.Match) -> str:
    """``<stack>`` for an address on the stack, which moves with the path's length."""
    return "<stack>" if STACK_TOP - STACK_SIZE <= int(match[0], 16) < STACK_TOP else match[0]


# --- step: handler ---
def sys_fallocate(proc, fd: int, mode: int, offset: int, length: int) -> int:
    """fallocate(fd, mode, offset, len): reserve blocks of an open file.

    Mode 0 (grow the file if needed) maps onto the host's
    ``posix_fallocate``; anything else is EOPNOTSUPP, which glibc's
    ``posix_fallocate`` answers by writing zeros itself.
    """
    file = proc.fds.get(signed32(fd))               # EBADF if fd is not open
    offset, length = signed64(offset), signed64(length)
    if offset < 0 or length <= 0:
        raise SyscallError(errno.EINVAL, f"offset {offset}, length {length}")
    if signed32(mode) != 0:
        raise SyscallError(errno.EOPNOTSUPP, f"mode {signed32(mode):#x}")
    if file.host_fd is None or not file.writable():
        raise SyscallError(errno.EBADF, "not a file open for writing")
    os.posix_fallocate(file.host_fd, offset, length)  # an OSError becomes its errno
    return 0


FALLOCATE = Syscall(NR_FALLOCATE, "fallocate", sys_fallocate, ("fd", "int", "long", "long"))
# --- end: handler ---


def main() -> int:
    if shutil.which(COMPILER[0]) is None:
        print(f"{COMPILER[0]} is not installed: apt-get install gcc libc6-dev")
        return 1
    with tempfile.TemporaryDirectory(prefix="minikvm-step15-") as scratch:
        scratch_path = Path(scratch)
        executable = build(scratch_path)
        workdir = scratch_path / "work"
        workdir.mkdir()
        # --- step: first-run ---
        print("first run, with minikvm's table:")
        status, unknown = run(executable, workdir, [])
        print(f"exit status {status}; unknown system calls: {unknown}")
        # --- end: first-run ---
        # --- step: second-run ---
        print("second run, with fallocate added:")
        status_after, unknown_after = run(executable, workdir, [FALLOCATE])
        print(f"exit status {status_after}; unknown system calls: {unknown_after}")
        size = (workdir / "data.bin").stat().st_size
        # --- end: second-run ---
    if unknown != {NR_FALLOCATE: 1} or status != 1:
        print(f"wrong result: the first run should fail on fallocate alone, "
              f"got status {status} and unknown calls {unknown}")
        return 1
    if status_after != 0 or unknown_after or size != 65536:
        print(f"wrong result: the second run exited {status_after}, unknown calls "
              f"{unknown_after}, data.bin {size} bytes; expected 0, none, 65536")
        return 1
    print(f"data.bin on the host: {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
