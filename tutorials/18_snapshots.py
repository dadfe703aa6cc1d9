"""Step 18 — snapshots: freeze a program at its first request, fork it, reset it.

A request handler does its start-up once and then calls
``minikvm_wait_request`` (``include/minikvm.h``).  That first call is the
*ready point*: ``snapshot_at_ready_point`` runs the program to it and
freezes everything — vCPU, memory, files — into a ``Snapshot``.  A
``Fork`` is a new VM whose memory is the snapshot's, mapped copy-on-write;
``Fork.request`` hands it one request, and ``Fork.reset`` undoes whatever
the request changed, touching only the pages it dirtied.  ``Fork.call``
calls one of the program's functions by name, like a debugger would.

The program counts its requests in a global and appends each to a heap
buffer.  Without resets, the count climbs; with them, every request sees
``count=1``.

Run it:  python tutorials/18_snapshots.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from minikvm.process.process import Process
from minikvm.snapshot.snapshot import snapshot_at_ready_point
from minikvm.snapshot.file import load, save

ROOT = Path(__file__).resolve().parent.parent

# --- step: handler ---
SOURCE = r"""
#include "minikvm.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int count;                       /* 0 in the snapshot */
static char *log;                       /* "start" in the snapshot */

long add(long a, long b) { return a + b; }
long length(const char *text) { return strlen(text); }

int main(void)
{
    log = strdup("start");              /* start-up: runs once, before the snapshot */
    char request[256], answer[512];
    for (;;) {
        long n = minikvm_wait_request(request, sizeof request - 1);
        if (n <= 0)
            return 0;
        request[n] = 0;
        count++;
        log = realloc(log, strlen(log) + n + 2);
        strcat(strcat(log, ","), request);
        minikvm_respond(answer, snprintf(answer, sizeof answer, "count=%d log=%s", count, log));
    }
}
"""
# --- end: handler ---


def build(directory: Path) -> str:
    (directory / "handler.c").write_text(SOURCE)
    subprocess.run(["cc", "-static", "-O2", f"-I{ROOT / 'include'}", "handler.c", "-o",
                    "handler"], cwd=directory, check=True, timeout=120)
    return str(directory / "handler")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="minikvm-step18-") as scratch:
        program = build(Path(scratch))

        # --- step: snapshot ---
        process = Process.spawn(program, [program], {}, policy=None)
        snapshot, reply = snapshot_at_ready_point(process, timeout=10)
        process.close()                  # the snapshot is a copy: the original can go
        if snapshot is None:
            print(f"no snapshot: {reply.message}")
            return 1
        print(f"ready point: minikvm_wait_request(buffer, {snapshot.wait[1]})")
        # --- end: snapshot ---

        # --- step: no-reset ---
        fork = snapshot.fork()
        for word in ("a", "b", "c"):
            reply = fork.request(word.encode(), timeout=10, reset=False)
            print(f"without reset: {reply.response.decode()}")
        # --- end: no-reset ---

        # --- step: reset ---
        for word in ("a", "b", "c"):
            stats = fork.reset()
            reply = fork.request(word.encode(), timeout=10, reset=False)
            print(f"after a reset: {reply.response.decode()}")
        print(f"the last reset restored {stats.pages} pages "
              f"({stats.guest_pages} written by the guest, {stats.host_pages} by the host)")
        fork.reset()
        # --- end: reset ---

        # --- step: other-fork ---
        other = snapshot.fork()
        other.request(b"only in the other fork", reset=False)
        print(f"a second fork: {fork.request(b'x').response.decode()}")
        other.close()
        # --- end: other-fork ---

        # --- step: call ---
        print(f"add(40, 2) = {fork.call('add', 40, 2)}")
        print(f"length(\"snapshot\") = {fork.call('length', 'snapshot')}")
        # --- end: call ---

        # --- step: file ---
        path = Path(scratch) / "handler.snap"
        save(snapshot, path)
        with load(path) as loaded, loaded.fork() as resumed:
            print(f"from the file: {resumed.request(b'z').response.decode()}")
        # --- end: file ---
        fork.close()
        snapshot.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
