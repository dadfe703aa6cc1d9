"""Step 13 — a process: a C program, loaded by Process.spawn, answered by our own handlers.

Step 12 loaded a three-instruction program by hand: its segments, a stack
with argv, envp and auxv, RIP and RSP.  ``minikvm.process.process.Process``
does the same for any static program — ``Process.spawn`` is minikvm's
``execve`` — and owns what system calls change: the fd table with
stdin/stdout/stderr, the working directory, the signal state.
``Process.run`` runs it and hands every system call to a callable we give
it.

Here that callable is still ours, as in step 11: a dict of three handlers
and a dispatcher of a dozen lines.  A handler now takes the process
first, and reaches the program only through it: ``proc.mm`` for guest
pointers, ``proc.fds`` for files, ``proc.machine`` for the CPU.  The
program is musl's ``hello, world`` (``musl-gcc -static``; apt-get install
musl-tools).  It makes five system calls; we answer three and return
``-ENOSYS`` for the other two, and musl copes.  Step 14 replaces our
dict by minikvm's table.

Run it:  python tutorials/13_process.py
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from minikvm import ioctl as k
from minikvm.cpu.layout import STACK_SIZE, STACK_TOP
from minikvm.errors import SyscallError
from minikvm.process.process import Process, ProcessExit

SOURCE = """\
#include <stdio.h>

int main(void)
{
    printf("hello, world\\n");
    return 0;
}
"""
GREETING = b"hello, world\n"
COMPILER = ["musl-gcc", "-static", "-O2"]
NR_WRITEV, NR_ARCH_PRCTL, NR_EXIT_GROUP = 20, 158, 231   # asm/unistd_64.h
ARCH_SET_FS = 0x1002                                      # asm/prctl.h
MASK64 = (1 << 64) - 1


def build(directory: Path) -> Path:
    """Compile SOURCE into *directory*/hello."""
    (directory / "hello.c").write_text(SOURCE)
    subprocess.run([*COMPILER, "hello.c", "-o", "hello"], cwd=directory, check=True,
                   timeout=120)
    return directory / "hello"


# --- step: handlers ---
def sys_arch_prctl(proc: Process, code: int, address: int) -> int:
    """Set the thread pointer: musl keeps its thread's data at FS.base."""
    if code != ARCH_SET_FS:
        raise SyscallError(errno.EINVAL, f"arch_prctl code {code:#x}")
    proc.machine.set_fs_base(address)
    return 0


def sys_writev(proc: Process, fd: int, iov: int, count: int) -> int:
    """Write the pieces an iovec array names, as one write."""
    file = proc.fds.get(fd)                          # EBADF unless fd is open
    chunks = []
    for base, length in proc.mm.read_iovec(iov, count):
        chunks += proc.mm.views(base, length)        # EFAULT unless every byte is mapped
    return file.writev(chunks)


def sys_exit_group(proc: Process, status: int) -> int:
    raise ProcessExit(status & 0xFF)                 # Process.run turns it into the result


# number -> (name, handler, how many arguments it takes)
HANDLERS: dict[int, tuple[str, Callable[..., int], int]] = {
    NR_ARCH_PRCTL: ("arch_prctl", sys_arch_prctl, 2),
    NR_WRITEV: ("writev", sys_writev, 3),
    NR_EXIT_GROUP: ("exit_group", sys_exit_group, 1),
}
# --- end: handlers ---


def main() -> int:
    if shutil.which(COMPILER[0]) is None:
        print(f"{COMPILER[0]} is not installed: apt-get install musl-tools")
        return 1
    with tempfile.TemporaryDirectory(prefix="minikvm-step13-") as scratch:
        executable = build(Path(scratch))
        # --- step: spawn ---
        # No policy yet: our three handlers open no file (step 14 brings one).
        process = Process.spawn(str(executable), ["hello"], {"LANG": "C"}, policy=None)
        image = process.image
        print(f"spawned {Path(image.name).name}: {len(image.segments)} segments, entry "
              f"{image.symbols.symbolize(image.entry)}, fds {sorted(process.fds.entries)}")
        # --- end: spawn ---

        def shown(value: int) -> str:
            """An argument as text: a symbol or <stack> for an address."""
            if STACK_TOP - STACK_SIZE <= value < STACK_TOP:
                return "<stack>"   # moves with the length of the program's path
            symbol = image.symbols.symbolize(value) if value > 0xFFFF else None
            return f"<{symbol}>" if symbol else hex(value) if value > 9 else str(value)

        # --- step: dispatch ---
        unknown: list[int] = []
        answers: dict[str, int] = {}

        def dispatch(regs: k.kvm_regs) -> None:
            if regs.rax not in HANDLERS:
                print(f"  syscall_{regs.rax}(...) = -1 ENOSYS (not one of ours)", flush=True)
                unknown.append(regs.rax)
                regs.rax = -errno.ENOSYS & MASK64
                return
            name, handler, count = HANDLERS[regs.rax]
            args = (regs.rdi, regs.rsi, regs.rdx)[:count]
            call = f"{name}({', '.join(shown(arg) for arg in args)})"
            try:
                result = handler(process, *args)
            except SyscallError as error:
                result = -error.errno
            except ProcessExit:
                print(f"  {call} = ?", flush=True)
                raise
            print(f"  {call} = {result}", flush=True)
            answers[name] = result
            regs.rax = result & MASK64

        sys.stdout.flush()            # the guest writes to the same fd 1 as we do
        result = process.run(dispatch, timeout=10)
        process.close()
        # --- end: dispatch ---
    print(f"exit status {result.exit_status}; answered ENOSYS to {unknown}")
    if result.exit_status != 0 or result.message or answers.get("writev") != len(GREETING):
        print(f"wrong result: exit status {result.exit_status} {result.message}, writev "
              f"wrote {answers.get('writev')}; expected 0 and {len(GREETING)} bytes")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
