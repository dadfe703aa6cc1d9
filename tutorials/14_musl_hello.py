"""Step 14 — the same program with minikvm's table: a Dispatcher, a Tracer and a policy.

Step 13 ran musl's hello, world with three handlers of our own and
answered ENOSYS to the rest.  Here the callable ``Process.run`` hands each
system call to is ``minikvm.syscalls.dispatch.Dispatcher``: it looks the
number up in the one table of every system-call family
(``minikvm.syscalls.table``), calls the handler with the process and as
many argument registers as it takes, and is the one place where an error
becomes ``-errno``.  With a ``Tracer`` it also writes each call the way
strace would.  The handlers that open files ask a policy
(``minikvm.sandbox.policy.Policy``) first; ``Policy()`` grants nothing.

The program is compiled as in step 13.  This time all five calls are
answered: set_tid_address with the thread id, ioctl(TIOCGWINSZ) with
ENOTTY because stdout is not a terminal.  The transcript names each
address by what it points into: a symbol of the program, or ``<stack>``.

Run it:  python tutorials/14_musl_hello.py
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
    with tempfile.TemporaryDirectory(prefix="minikvm-step14-") as scratch:
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
