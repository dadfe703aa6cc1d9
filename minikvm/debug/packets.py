"""Layer 7 — framing of the GDB remote serial protocol: bytes ↔ packets.

gdb and a stub exchange packets framed as ``$`` *data* ``#`` *cc*, where
*cc* is the sum of the data bytes modulo 256 in two hex digits; the
receiver answers ``+`` (taken) or ``-`` (send again).  In data, ``#``,
``$``, ``}`` and ``*`` are escaped as ``}`` followed by the byte XOR 0x20
(``*`` also starts run-length encoding, which this stub never sends).  A
lone byte 0x03 outside a packet is an interrupt (Ctrl-C).  See the gdb
manual, "Remote Protocol" → "Overview".

Everything gdb sends is checked and bounded here, before any handler sees
it: a packet longer than :data:`MAX_PACKET` is dropped whole (and
answered ``-``), a bad checksum is answered ``-``, stray bytes between
packets are skipped.  Nothing a peer sends can raise."""

from __future__ import annotations

from dataclasses import dataclass

#: Largest packet data the stub takes, after unescaping; also the
#: ``PacketSize`` it announces in ``qSupported`` (hex), so a correct gdb
#: never sends more.  16 KiB holds a ``G`` packet of every x86-64 register
#: with room to spare and bounds what a hostile peer can make us buffer.
MAX_PACKET = 16 * 1024

#: The bytes that must be escaped in packet data.
ESCAPED = frozenset(b"#$}*")

#: The escape byte; the next byte is the original XOR 0x20.
ESCAPE = 0x7D

#: The bytes of a hex number, either case.
HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")

#: A lone 0x03 between packets: gdb asks the stub to stop the program.
INTERRUPT = 0x03


def checksum(data: bytes) -> int:
    """The protocol's checksum: the sum of the bytes modulo 256."""
    return sum(data) & 0xFF


def escape(data: bytes) -> bytes:
    """*data* with ``#$}*`` escaped, ready to sit between ``$`` and ``#``."""
    out = bytearray()
    for byte in data:
        if byte in ESCAPED:
            out += bytes((ESCAPE, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    """The inverse of :func:`escape`; a trailing lone ``}`` is dropped."""
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == ESCAPE:
            if i + 1 < len(data):
                out.append(data[i + 1] ^ 0x20)
            i += 2
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def frame(data: bytes) -> bytes:
    """``$`` *escaped data* ``#`` *checksum*: one packet on the wire.

    The checksum covers the bytes as sent, escapes included."""
    body = escape(data)
    return b"$" + body + b"#" + b"%02x" % checksum(body)


@dataclass(frozen=True)
class Packet:
    """One packet taken from gdb: its data, unescaped."""

    data: bytes


@dataclass(frozen=True)
class Interrupt:
    """gdb's Ctrl-C (a lone 0x03)."""


@dataclass(frozen=True)
class Ack:
    """``+``: gdb took our last packet."""


@dataclass(frozen=True)
class Nak:
    """``-``: gdb asks for our last packet again."""


#: What :meth:`PacketReader.feed` hands up.
Event = Packet | Interrupt | Ack | Nak


class PacketReader:
    """Turns the bytes gdb sends, in any pieces, into :data:`Event` s.

    Alongside, :attr:`replies` collects the ``+``/``-`` owed for each
    packet, which the caller sends (unless no-ack mode was agreed)."""

    _IDLE, _DATA, _SUM1, _SUM2 = range(4)

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        self.max_packet = max_packet
        self.replies = bytearray()
        self._state = self._IDLE
        self._body = bytearray()
        self._sum = b""
        self._too_long = False

    def feed(self, chunk: bytes) -> list[Event]:
        """Every whole event in *chunk* and what came before it."""
        events: list[Event] = []
        for byte in chunk:
            event = self._step(byte)
            if event is not None:
                events.append(event)
        return events

    def _step(self, byte: int) -> Event | None:
        if self._state == self._IDLE:
            if byte == ord("$"):
                self._start()
            elif byte == ord("+"):
                return Ack()
            elif byte == ord("-"):
                return Nak()
            elif byte == INTERRUPT:
                return Interrupt()
            return None                     # noise between packets is skipped
        if self._state == self._DATA:
            if byte == ord("#"):
                self._state = self._SUM1
            elif byte == ord("$"):          # a new packet before this one ended
                self._start()
            elif len(self._body) >= 2 * self.max_packet:
                self._too_long = True       # keep reading to its end, keep nothing
            else:
                self._body.append(byte)
            return None
        self._sum += bytes((byte,))
        if self._state == self._SUM1:
            self._state = self._SUM2
            return None
        self._state = self._IDLE
        return self._finish()

    def _start(self) -> None:
        self._state = self._DATA
        self._body = bytearray()
        self._sum = b""
        self._too_long = False

    def _finish(self) -> Event | None:
        wanted = hex_int(self._sum, 256)
        body = bytes(self._body)
        if self._too_long or wanted is None or wanted != checksum(body):
            self.replies += b"-"
            return None
        data = unescape(body)
        if len(data) > self.max_packet:
            self.replies += b"-"
            return None
        self.replies += b"+"
        return Packet(data)


def hex_bytes(text: bytes, limit: int) -> bytes | None:
    """``b"90cc"`` → ``b"\\x90\\xcc"``; ``None`` if not hex of even length
    or longer than *limit* bytes."""
    if len(text) % 2 or len(text) > 2 * limit:
        return None
    if not all(byte in HEX_DIGITS for byte in text):
        return None                         # fromhex() would skip spaces
    return bytes.fromhex(text.decode("ascii"))


def hex_int(text: bytes, limit: int = 1 << 64) -> int | None:
    """``b"401136"`` → 0x401136; ``None`` if not hex or not below *limit*."""
    if not text or len(text) > 16:
        return None
    if not all(byte in HEX_DIGITS for byte in text):
        return None                         # int() would also take "0x", "-", "_", spaces
    value = int(text, 16)
    return value if 0 <= value < limit else None
