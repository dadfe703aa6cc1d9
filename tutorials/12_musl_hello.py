"""Step 12 — a C program: musl's hello, world, run by a Process and a Dispatcher.

Step 11 loaded a program by hand.  ``minikvm.process.process.Process.spawn`` does
all of it for a real C program — the segments (sharing pages where they
touch), an 8 MiB stack with argv, envp and auxv, stdin/stdout/stderr in
its fd table — and ``Process.run`` runs it, handing every system call to
a callable.  That callable is ``minikvm.syscalls.dispatch.Dispatcher``: it
looks the number up in the table of all the system-call families, calls
the handler, and turns an error into ``-errno``.  With a ``Tracer`` it
also writes each call the way strace would.

The program is compiled here with ``musl-gcc -static`` (apt-get install
musl-tools).  musl's start-up is short: set the thread pointer, record
where to clear the thread id at exit, ask whether stdout is a terminal,
write, exit.  The transcript names each address by what it points into:
a symbol of the program, or ``<stack>``.

Run it:  python tutorials/12_musl_hello.py
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from minikvm.cpu.layout import STACK_SIZE, STACK_TOP
from minikvm.sandbox.policy import Policy
from minikvm.process.process import Process
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
COMPILER = ["musl-gcc", "-static", "-O2"]
ADDRESS = re.compile(r"0x[0-9a-f]{5,}")


def build(directory: Path) -> Path:
    """Compile SOURCE into *directory*/hello."""
    (directory / "hello.c").write_text(SOURCE)
    subprocess.run([*COMPILER, "hello.c", "-o", "hello"], cwd=directory, check=True,
                   timeout=120)
    return directory / "hello"


def main() -> int:
    if shutil.which(COMPILER[0]) is None:
        print(f"{COMPILER[0]} is not installed: apt-get install musl-tools")
        return 1
    with tempfile.TemporaryDirectory(prefix="minikvm-step12-") as scratch:
        executable = build(Path(scratch))
        # --- step: spawn ---
        policy = Policy()                    # no file-system grant: stdio and /dev/null only
        process = Process.spawn(str(executable), ["hello"], {"LANG": "C"}, policy)
        image = process.image
        entry = image.symbols.symbolize(image.entry)
        print(f"spawned: {len(image.segments)} segments, entry {entry}, "
              f"argv {[a.decode() for a in process.argv]}, fds {sorted(process.fds.entries)}")
        # --- end: spawn ---

        # --- step: run ---
        transcript = io.StringIO()
        dispatcher = Dispatcher(process, Tracer(transcript))
        sys.stdout.flush()                   # the guest writes to the same fd 1 as we do
        result = process.run(dispatcher, timeout=10)
        process.close()
        # --- end: run ---

    # --- step: transcript ---
    def name(match: re.Match) -> str:
        address = int(match.group(0), 16)
        if STACK_TOP - STACK_SIZE <= address < STACK_TOP:
            return "<stack>"
        symbol = image.symbols.symbolize(address)
        return f"<{symbol}>" if symbol else match.group(0)

    print("the system calls:")
    for line in transcript.getvalue().splitlines():
        print("  " + ADDRESS.sub(name, line))
    print(f"exit status {result.exit_status}")
    # --- end: transcript ---
    if result.exit_status != 0 or result.message:
        print(f"wrong result: exit status {result.exit_status} {result.message}, expected 0")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
