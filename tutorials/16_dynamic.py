"""Step 16 — a dynamically linked program: the kernel loads two files, ld.so the rest.

Every program in /usr/bin is dynamically linked: its file holds its own
code and a ``PT_INTERP`` header naming its *interpreter*, the dynamic
loader ``/lib64/ld-linux-x86-64.so.2``.  Linux's execve loads both files —
the program at its PIE base, ld.so in the mmap region — and starts ld.so,
telling it through the auxiliary vector where the program is
(``AT_PHDR``, ``AT_ENTRY``) and where ld.so itself went (``AT_BASE``).
ld.so then does in user space what the kernel does not: it opens
``/etc/ld.so.cache`` to find ``libc.so.6``, maps it with ``mmap``,
relocates everything and jumps to the program's entry.

1. ``Process.spawn`` of a dynamic ``hello``: the program and ld.so are
   loaded; the entry point is ld.so's.  ld.so is read through the policy
   — the guest's view — so the policy grants, read-only, what ld.so needs
   to see: ``/usr``, ``/lib64`` and ``/lib`` (symlinks into ``/usr``) and
   ``/etc``.
2. The auxiliary vector on the new stack, read back with step 12's decoder.
3. The run, with the trace of ld.so's own system calls as it opens
   ``libc.so.6`` and maps it, segment by segment, over one reservation.

Addresses are shown by what they point into (``<libc.so.6+0x26000>``):
minikvm places everything the same way every run, but where libc's
segments fall depends on the host's libc.

The program is compiled with ``cc`` (no ``-static``).

Run it:  python tutorials/16_dynamic.py
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from minikvm.cpu.layout import STACK_TOP
from minikvm.process.process import Process
from minikvm.process.stack import AUXV_NAMES, decode_initial_stack
from minikvm.sandbox.policy import Policy
from minikvm.syscalls.dispatch import Dispatcher
from minikvm.syscalls.trace import Tracer

SOURCE = """\
#include <stdio.h>

int main(void)
{
    printf("hello, world\\n");
    return 0;
}
"""
COMPILER = ["cc", "-O2"]
#: What ld.so must see, read-only: minikvm's view of the host's system.
VIEW = ["/usr", "/lib", "/lib64", "/etc"]
ADDRESS = re.compile(r"0x[0-9a-f]{5,}")
#: auxv entries shown as addresses inside a mapping, not as numbers
POINTERS = {"AT_PHDR", "AT_BASE", "AT_ENTRY", "AT_RANDOM", "AT_EXECFN", "AT_PLATFORM"}


def build(directory: Path) -> Path:
    (directory / "hello.c").write_text(SOURCE)
    subprocess.run([*COMPILER, "hello.c", "-o", "hello"], cwd=directory, check=True,
                   timeout=120)
    return directory / "hello"


def region(process: Process, address: int) -> str:
    """``<libc.so.6+0x1234>``: the mapping *address* is in, and how far in.
    A file's mappings are named by the file, so every piece of libc counts
    from the lowest one; others are ``<[stack]>`` or ``<anonymous>``."""
    vma = process.mm.find(address)
    if vma is None:
        return hex(address)
    if not vma.name or vma.name.startswith("["):
        return f"<{vma.name or 'anonymous'}>"
    name = os.path.basename(vma.name)
    first = min(v.start for v in process.mm.vmas if v.name == vma.name)
    return f"<{name}+{address - first:#x}>"


def show(process: Process, line: str) -> str:
    return ADDRESS.sub(lambda match: region(process, int(match[0], 16)), line)


def main() -> int:
    if shutil.which(COMPILER[0]) is None:
        print(f"{COMPILER[0]} is not installed: apt-get install gcc libc6-dev")
        return 1
    with tempfile.TemporaryDirectory(prefix="minikvm-step16-") as scratch:
        executable = build(Path(scratch))
        # --- step: spawn ---
        with Policy(read=VIEW) as policy:
            process = Process.spawn(str(executable), ["hello"], {"LANG": "C"}, policy,
                                    cwd=scratch)
            program, loader = process.image, process.interpreter
            print(f"program: {program.elf_type}, PT_INTERP {program.interpreter}, "
                  f"loaded at {program.load_bias:#x}")
            print(f"ld.so:   {loader.name}, loaded at {region(process, loader.load_bias)}, "
                  f"{len(loader.segments)} segments")
            rip = process.machine.vcpu.get_regs().rip
            print(f"the first instruction: {region(process, rip)} (ld.so's entry)")
            # --- end: spawn ---
            # --- step: auxv ---
            rsp = process.machine.vcpu.get_regs().rsp
            stack = decode_initial_stack(process.mm.read(rsp, STACK_TOP - rsp), rsp)
            print("the auxiliary vector:")
            for key, value in stack.auxv:
                name = AUXV_NAMES.get(key, str(key))
                shown = region(process, value) if name in POINTERS else hex(value)
                if name == "AT_HWCAP":
                    shown = "CPUID.1:EDX of this CPU"
                print(f"  {name:<15} {shown}")
            # --- end: auxv ---
            # --- step: run ---
            transcript = io.StringIO()
            sys.stdout.flush()
            result = process.run(Dispatcher(process, Tracer(transcript)), timeout=10)
            lines = transcript.getvalue().splitlines()
            opened = next(i for i, line in enumerate(lines) if "libc.so.6" in line)
            closed = next(i for i in range(opened, len(lines))
                          if lines[i].startswith("close("))
            print("ld.so opens and maps libc.so.6:")
            for line in lines[opened:closed + 1]:
                print("  " + show(process, line))
            process.close()
            # --- end: run ---
    print(f"exit status {result.exit_status}")
    if result.exit_status != 0 or loader is None or rip != loader.entry:
        print("wrong result: the program should start in ld.so and exit 0")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
