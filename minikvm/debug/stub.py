"""Layer 7 — the GDB remote protocol's commands, answered for a stopped program.

gdb drives a remote target with short text packets (gdb manual, "Remote
Protocol" → "Packets", "General Query Packets", "Stop Reply Packets").
While the program is stopped, :meth:`GdbStub.wait_for_resume` reads
packets and answers them from a :class:`Debuggee` — the registers of a
thread, memory, breakpoints — until gdb says how to go on (continue,
step, kill, detach); that is returned as a :class:`Resume` and the
caller runs the program.  This module knows the protocol only; how a
stop happens and how a resume is carried out is
:mod:`minikvm.debug.session`.

What is answered, and why each is enough for stock gdb:

==================  =====================================================
``qSupported``      our packet size, and the features below
``qXfer:features``  the target description (:mod:`minikvm.debug.target`)
``qXfer:auxv``      the program's auxiliary vector: gdb finds a PIE's load
                    address (``AT_ENTRY``) and ld.so (``AT_BASE``) in it
``?``               why the program is stopped (the last stop reply)
``g G p P``         registers of the selected thread
``m M``             memory, through the process's own mappings
``Z0 z0``           software breakpoints (``int3``)
``vCont c C s S``   resume: continue, or step one thread; a signal to pass
``H T qC``          threads: select one, is it alive, which is current
``qfThreadInfo``    every thread's id (the guest's tids)
``k vKill D``       kill the program, or let it run on without gdb
==================  =====================================================

Everything else gets the empty reply, which the protocol defines as "not
supported": gdb then does without (hardware breakpoints, watchpoints —
gdb falls back to software watchpoints, stepping and checking).  Every
number in a packet is parsed with :func:`~minikvm.debug.packets.hex_int`
and bounded; a malformed packet gets ``E01``, never an exception."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Protocol

from minikvm.debug.memory import MAX_TRANSFER
from minikvm.debug.packets import MAX_PACKET, Ack, Interrupt, Nak, Packet, PacketReader, \
    frame, hex_bytes, hex_int
from minikvm.debug.registers import ReadOnlyRegister, RegisterFile, decode, encode, \
    encode_all, register_size
from minikvm.debug.signals import from_gdb
from minikvm.debug.target import REGISTERS, g_packet_size, target_xml

#: Error replies (the number is ours; gdb only shows it).
E_BAD_PACKET = b"E01"
E_FAULT = b"E14"      # EFAULT: no memory there
E_NO_THREAD = b"E03"  # ESRCH
#: The one breakpoint kind on x86: the 1-byte ``int3``.
BREAKPOINT_KIND = 1
#: A packet whose reply is "not supported".
UNSUPPORTED = b""


@dataclass(frozen=True)
class Resume:
    """How gdb wants the program to go on.

    *action* is ``continue``, ``step`` (*thread* one instruction, the
    others as the scheduler likes), ``kill`` or ``detach``; *signal* a
    Linux signal to pass to the program, or None."""

    action: str
    thread: int | None = None
    signal: int | None = None


class Debuggee(Protocol):
    """What the stub needs of a stopped program (:class:`minikvm.debug.session.DebugSession`)."""

    def threads(self) -> list[int]:
        """Every live thread id, the first one first."""

    def current_thread(self) -> int:
        """The thread the last stop happened in."""

    def register_file(self, thread: int) -> RegisterFile:
        """A copy of *thread*'s registers."""

    def store_registers(self, thread: int, file: RegisterFile) -> None:
        """Make *file* *thread*'s registers."""

    def read_memory(self, address: int, size: int) -> bytes:
        """Up to *size* bytes at *address* (short at the first unmapped byte)."""

    def write_memory(self, address: int, data: bytes) -> bool:
        """Write *data*; False if any byte is unmapped."""

    def insert_breakpoint(self, address: int) -> bool:
        """Put an ``int3`` at *address*; False if it cannot be written."""

    def remove_breakpoint(self, address: int) -> bool:
        """Take the ``int3`` at *address* out again."""

    def auxv(self) -> bytes:
        """The auxiliary vector the program started with, as bytes."""


class GdbStub:
    """One gdb connection.  *connection* is a connected stream socket."""

    def __init__(self, connection: socket.socket, debuggee: Debuggee) -> None:
        self.connection = connection
        self.debuggee = debuggee
        self.reader = PacketReader()
        self.pending: list[object] = []
        self.no_ack = False
        self._no_ack_after_reply = False
        self.last_sent = b""
        self.last_stop = b"S05"
        #: The thread ``g``/``p`` read (``Hg``); 0 means the current one.
        self.selected = 0
        self.connected = True
        #: A resume is outstanding: the next stop is its reply.  The first
        #: stop is not sent unasked; gdb asks with ``?``.
        self.running = False

    # -- the wire -------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        self.last_sent = frame(data)
        try:
            self.connection.sendall(self.last_sent)
        except OSError:
            self.connected = False

    def _next_event(self) -> object | None:
        """The next packet (or Ctrl-C) from gdb, acked; None once gdb is gone."""
        while not self.pending:
            try:
                chunk = self.connection.recv(MAX_PACKET)
            except OSError:
                chunk = b""
            if not chunk:
                self.connected = False
                return None
            self.pending.extend(self.reader.feed(chunk))
            if self.reader.replies:
                if not self.no_ack:
                    try:
                        self.connection.sendall(bytes(self.reader.replies))
                    except OSError:
                        self.connected = False
                        return None
                self.reader.replies.clear()
        return self.pending.pop(0)

    # -- a stop -----------------------------------------------------------------
    def wait_for_resume(self, stop: bytes) -> Resume:
        """Tell gdb the program stopped (*stop*, a stop reply such as
        ``T05thread:1;``) — as the reply to its resume packet; the first
        stop is only kept for ``?`` — and answer it until it says how to go on.  A gdb
        that goes away detaches: the program runs on."""
        self.last_stop = stop
        self.selected = 0
        if self.connected and self.running:
            self._send(stop)                # the reply the resume packet is owed
        self.running = False
        while self.connected:
            event = self._next_event()
            if event is None:
                break
            if isinstance(event, Nak):
                try:
                    self.connection.sendall(self.last_sent)
                except OSError:
                    self.connected = False
                continue
            if isinstance(event, (Ack, Interrupt)):
                continue                     # already stopped: nothing to interrupt
            assert isinstance(event, Packet)
            answer = self.answer(event.data)
            if isinstance(answer, Resume):
                self.running = answer.action in ("continue", "step")
                return answer
            self._send(answer)
            if self._no_ack_after_reply:
                self.no_ack, self._no_ack_after_reply = True, False
        return Resume("detach")

    def report_end(self, stop: bytes) -> None:
        """The program is gone (``W``/``X`` *stop*): say so and let gdb close."""
        if not self.connected:
            return
        if self.running:                    # gdb waits for this as its reply
            self._send(stop)
            self.running = False
        self.connection.settimeout(2.0)
        while self.connected:
            event = self._next_event()
            if event is None:
                break
            if isinstance(event, Packet):
                self._send(self._after_end(event.data, stop))
        self.close()

    @staticmethod
    def _after_end(data: bytes, stop: bytes) -> bytes:
        """The reply to a packet that comes after the program ended (the
        time limit ended it while gdb held it stopped, say): a resume is
        answered with the end, kill and detach with OK."""
        if data[:1] in (b"c", b"s", b"C", b"S") or data.startswith(b"vCont;"):
            return stop
        if data == b"?":
            return stop
        return b"OK" if data[:1] in (b"k", b"D") or data.startswith(b"vKill") else b"E01"

    def close(self) -> None:
        self.connected = False
        try:
            self.connection.close()
        except OSError:
            pass

    # -- the packets ---------------------------------------------------------------
    def answer(self, data: bytes) -> bytes | Resume:
        """The reply to one packet, or how to resume."""
        kind = data[:1]
        if data.startswith(b"qSupported"):
            return (b"PacketSize=%x;qXfer:features:read+;qXfer:auxv:read+;swbreak+;"
                    b"QStartNoAckMode+;vContSupported+" % MAX_PACKET)
        if data == b"QStartNoAckMode":
            self._no_ack_after_reply = True  # this reply is still acked
            return b"OK"
        if data.startswith(b"qXfer:"):
            return self._transfer(data)
        if data == b"?":
            return self.last_stop
        if data == b"qAttached":
            return b"0"                     # minikvm started it: gdb kills it on quit
        if data == b"qC":
            return b"QC%x" % self.debuggee.current_thread()
        if data == b"qfThreadInfo":
            return b"m" + b",".join(b"%x" % tid for tid in self.debuggee.threads())
        if data == b"qsThreadInfo":
            return b"l"
        if data.startswith(b"qSymbol"):
            return b"OK"
        if kind == b"H":
            return self._select_thread(data[1:2], data[2:])
        if kind == b"T":
            thread = hex_int(data[1:])
            return b"OK" if thread in self.debuggee.threads() else E_NO_THREAD
        if data == b"g":
            return encode_all(self._file()).hex().encode()
        if kind == b"G":
            return self._write_all(data[1:])
        if kind == b"p":
            return self._read_register(data[1:])
        if kind == b"P":
            return self._write_register(data[1:])
        if kind == b"m":
            return self._read_memory(data[1:])
        if kind == b"M":
            return self._write_memory(data[1:])
        if kind in (b"Z", b"z"):
            return self._breakpoint(kind == b"Z", data[1:])
        if data == b"vCont?":
            return b"vCont;c;C;s;S"
        if data.startswith(b"vCont;"):
            return self._vcont(data[6:])
        if kind in (b"c", b"s"):
            return Resume("continue" if kind == b"c" else "step",
                          self.debuggee.current_thread())
        if kind in (b"C", b"S"):
            signal = hex_int(data[1:].split(b";")[0], 256)
            if signal is None:
                return E_BAD_PACKET
            return Resume("continue" if kind == b"C" else "step",
                          self.debuggee.current_thread(), from_gdb(signal))
        if kind == b"k" or data.startswith(b"vKill"):
            if data.startswith(b"vKill"):
                self._send(b"OK")
            return Resume("kill")
        if kind == b"D":
            self._send(b"OK")
            return Resume("detach")
        return UNSUPPORTED

    def _thread(self) -> int:
        threads = self.debuggee.threads()
        if self.selected in threads:
            return self.selected
        return self.debuggee.current_thread()

    def _file(self) -> RegisterFile:
        return self.debuggee.register_file(self._thread())

    def _select_thread(self, operation: bytes, text: bytes) -> bytes:
        if text in (b"0", b"-1"):
            thread = 0
        else:
            parsed = hex_int(text)
            if parsed is None or parsed not in self.debuggee.threads():
                return E_NO_THREAD
            thread = parsed
        if operation == b"g":
            self.selected = thread
        return b"OK"                        # Hc: resumes name their threads (vCont)

    def _read_register(self, text: bytes) -> bytes:
        number = hex_int(text, len(REGISTERS))
        if number is None:
            return E_BAD_PACKET
        return encode(self._file(), number).hex().encode()

    def _write_register(self, text: bytes) -> bytes:
        number_text, _, value_text = text.partition(b"=")
        number = hex_int(number_text, len(REGISTERS))
        if number is None:
            return E_BAD_PACKET
        value = hex_bytes(value_text, register_size(number))
        if value is None or len(value) != register_size(number):
            return E_BAD_PACKET
        file = self._file()
        try:
            decode(file, number, value)
        except ReadOnlyRegister:
            return E_BAD_PACKET
        self.debuggee.store_registers(self._thread(), file)
        return b"OK"

    def _write_all(self, text: bytes) -> bytes:
        values = hex_bytes(text, g_packet_size())
        if values is None or len(values) != g_packet_size():
            return E_BAD_PACKET
        file = self._file()
        offset = 0
        for number in range(len(REGISTERS)):
            size = register_size(number)
            try:
                decode(file, number, values[offset:offset + size])
            except ReadOnlyRegister:
                pass                        # a G carries every register: keep ours
            offset += size
        self.debuggee.store_registers(self._thread(), file)
        return b"OK"

    def _address_length(self, text: bytes) -> tuple[int, int] | None:
        address_text, _, length_text = text.partition(b",")
        address, length = hex_int(address_text), hex_int(length_text)
        if address is None or length is None:
            return None
        return address, length

    def _read_memory(self, text: bytes) -> bytes:
        parsed = self._address_length(text)
        if parsed is None:
            return E_BAD_PACKET
        address, length = parsed
        data = self.debuggee.read_memory(address, min(length, MAX_TRANSFER))
        if not data and length:
            return E_FAULT
        return data.hex().encode()

    def _write_memory(self, text: bytes) -> bytes:
        header, _, value_text = text.partition(b":")
        parsed = self._address_length(header)
        if parsed is None:
            return E_BAD_PACKET
        address, length = parsed
        data = hex_bytes(value_text, MAX_TRANSFER)
        if data is None or len(data) != length:
            return E_BAD_PACKET
        return b"OK" if self.debuggee.write_memory(address, data) else E_FAULT

    def _breakpoint(self, insert: bool, text: bytes) -> bytes:
        fields = text.split(b";")[0].split(b",")
        if len(fields) != 3:
            return E_BAD_PACKET
        if fields[0] != b"0":
            return UNSUPPORTED              # hardware breakpoints, watchpoints
        address, kind = hex_int(fields[1]), hex_int(fields[2])
        if address is None or kind != BREAKPOINT_KIND:
            return E_BAD_PACKET
        done = (self.debuggee.insert_breakpoint(address) if insert
                else self.debuggee.remove_breakpoint(address))
        return b"OK" if done else E_FAULT

    def _vcont(self, text: bytes) -> bytes | Resume:
        """``vCont;s:1;c``: the first action naming a thread (or none)
        wins for that thread; one vCPU runs the rest as usual."""
        current = self.debuggee.current_thread()
        chosen: Resume | None = None
        for action in text.split(b";"):
            verb, _, thread_text = action.partition(b":")
            thread = current if thread_text in (b"", b"-1", b"0") else hex_int(thread_text)
            if thread is None:
                return E_BAD_PACKET
            signal = None
            if verb[:1] in (b"C", b"S"):
                number = hex_int(verb[1:], 256)
                if number is None:
                    return E_BAD_PACKET
                signal = from_gdb(number)
            elif verb not in (b"c", b"s"):
                return E_BAD_PACKET         # t, r: not offered in vCont?
            resume = Resume("step" if verb[:1] in (b"s", b"S") else "continue", thread, signal)
            if chosen is None or (resume.action == "step" and chosen.action != "step"):
                chosen = resume
        return chosen if chosen is not None else E_BAD_PACKET

    def _transfer(self, data: bytes) -> bytes:
        """``qXfer:OBJECT:read:ANNEX:OFFSET,LENGTH`` → ``m``/``l`` + a piece."""
        parts = data.split(b":")
        if len(parts) != 5 or parts[2] != b"read":
            return UNSUPPORTED
        _, what, _, annex, window = parts
        if what == b"features" and annex == b"target.xml":
            document = target_xml()
        elif what == b"auxv" and annex == b"":
            document = self.debuggee.auxv()
        else:
            return UNSUPPORTED if what not in (b"features", b"auxv") else b"E00"
        parsed = self._address_length(window)
        if parsed is None:
            return E_BAD_PACKET
        offset, length = parsed
        length = min(length, MAX_PACKET // 2)
        piece = document[offset:offset + length]
        return (b"m" if offset + length < len(document) else b"l") + piece
