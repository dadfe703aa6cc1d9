"""Step 19 — a GDB stub: breakpoints and single steps as debug exits, registers as gdb sees them.

A debugger needs three things from whoever runs the program: stop it at
an address, run it one instruction at a time, and show its registers and
memory while it is stopped.  minikvm gets the first two from the CPU,
without any KVM debug feature: a breakpoint is an ``int3`` byte written
over the instruction, which raises an exception that comes back to the
host through the exception stubs of step 09; a single step is RFLAGS.TF,
which makes the CPU raise #DB after one instruction.  The third is the
register file of step 02, laid out in the order the GDB remote protocol
numbers registers.

``DebugSession`` turns those exits into stops and talks the protocol on
a socket.  Real gdb would sit at the other end (``minikvm run --gdb``);
here a few lines of Python play gdb, so each packet can be seen.

Run it:  python tutorials/19_gdb_stub.py
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from minikvm.debug.packets import Packet, PacketReader, frame
from minikvm.debug.session import DebugSession
from minikvm.debug.target import NUMBER, REGISTERS
from minikvm.process.process import Process
from minikvm.syscalls.dispatch import Dispatcher

SOURCE = r"""
long inner(long x) { return x + 1; }
long outer(long x) { return inner(x * 2) + 1; }
int main(void) { return (int)outer(20); }
"""


def build(directory: Path) -> str:
    (directory / "debugged.c").write_text(SOURCE)
    subprocess.run(["cc", "-static", "-g", "-O0", "-fno-omit-frame-pointer", "debugged.c",
                    "-o", "debugged"], cwd=directory, check=True, timeout=120)
    return str(directory / "debugged")


# --- step: client ---
class TinyGdb:
    """The gdb side of the protocol: send a packet, wait for its reply."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.reader = PacketReader()

    def ask(self, data: str) -> str:
        self.connection.sendall(frame(data.encode()))
        while True:
            for event in self.reader.feed(self.connection.recv(4096)):
                if isinstance(event, Packet):
                    self.connection.sendall(b"+")          # "got it"
                    return event.data.decode("latin-1")

    def register(self, registers: bytes, name: str) -> int:
        """One register out of a ``g`` reply: sizes come from the target description."""
        offset = sum(r.bits // 8 for r in REGISTERS[:NUMBER[name]])
        size = REGISTERS[NUMBER[name]].bits // 8
        return int.from_bytes(registers[offset:offset + size], "little")
# --- end: client ---


def debug(gdb: TinyGdb, symbols, inner: int) -> None:
    """What gdb does for ``break inner``, ``continue``, ``bt``, ``stepi``, ``continue``."""
    # --- step: session ---
    print("why stopped:", gdb.ask("?"))                      # before the first instruction
    print("break inner:", gdb.ask(f"Z0,{inner:x},1"))        # an int3 at inner
    print("continue:", gdb.ask("vCont;c"))                   # runs until the int3
    registers = bytes.fromhex(gdb.ask("g"))
    rip = gdb.register(registers, "rip")
    print(f"rip is inner: {rip == inner}")
    # At a function's first instruction its return address is on top of
    # the stack, and RBP is still its caller's frame pointer.
    rsp, rbp = gdb.register(registers, "rsp"), gdb.register(registers, "rbp")
    back = int.from_bytes(bytes.fromhex(gdb.ask(f"m{rsp:x},8")), "little")
    frames = [symbols.lookup(rip)[0].name, symbols.lookup(back - 1)[0].name]
    while rbp:                                               # the frame-pointer chain
        saved = bytes.fromhex(gdb.ask(f"m{rbp:x},10"))       # [rbp] = caller's rbp, then
        rbp, back = int.from_bytes(saved[:8], "little"), int.from_bytes(saved[8:], "little")
        found = symbols.lookup(back - 1)                     # the return address
        if found is None:
            break
        frames.append(found[0].name)
    print("backtrace:", " <- ".join(frames[:3]))
    print("remove it:", gdb.ask(f"z0,{inner:x},1"))
    print("stepi:", gdb.ask("vCont;s"))                      # TF: one instruction, then #DB
    after = gdb.register(bytes.fromhex(gdb.ask("g")), "rip")
    print(f"rip moved forward: {after > rip}")
    print("continue:", gdb.ask("vCont;c"))                   # W: exited, with its status
    # --- end: session ---


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="minikvm-step19-") as scratch:
        program = build(Path(scratch))
        # --- step: attach ---
        process = Process.spawn(program, [program], {}, policy=None)
        ours, theirs = socket.socketpair()
        session = DebugSession(process, Dispatcher(process), ours)
        inner = process.image.symbols.address_of("inner")
        client = threading.Thread(target=debug, args=(TinyGdb(theirs), process.image.symbols,
                                                      inner))
        client.start()
        result = session.run(timeout=30)
        client.join()
        # --- end: attach ---
        print("exit status:", result.exit_status)
        process.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
