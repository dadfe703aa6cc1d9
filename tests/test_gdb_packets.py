"""The GDB remote protocol's framing and the ``--gdb`` address check.

These are the parts of the gdb stub that take bytes from whoever connects,
so they are tested against hostile input as well as gdb's own: a bad
checksum, an endless packet, non-hex where hex belongs must each be
answered (``-`` or None), never raise.  Pure code: no /dev/kvm needed."""

from __future__ import annotations

import pytest

from minikvm.debug.address import GdbAddressError, parse_gdb_address
from minikvm.debug.packets import (Ack, Interrupt, Nak, Packet, PacketReader, checksum,
                                   escape, frame, hex_bytes, hex_int, unescape)


def test_frame_matches_the_manuals_example() -> None:
    # "$m4015bc,2#5a" is how gdb reads 2 bytes at 0x4015bc.
    assert frame(b"m4015bc,2") == b"$m4015bc,2#5a"
    assert frame(b"OK") == b"$OK#9a"


def test_escape_round_trips_every_byte() -> None:
    data = bytes(range(256))
    escaped = escape(data)
    assert not set(escaped) & set(b"#$*") and escaped.count(b"}") == 4
    assert unescape(escaped) == data


def test_reader_takes_packets_in_any_pieces_and_acks_them() -> None:
    wire = b"+" + frame(b"qSupported:multiprocess+") + b"-" + frame(b"g") + b"\x03"
    for size in (1, 3, len(wire)):
        reader = PacketReader()
        events = []
        for at in range(0, len(wire), size):
            events += reader.feed(wire[at:at + size])
        assert events == [Ack(), Packet(b"qSupported:multiprocess+"), Nak(), Packet(b"g"),
                          Interrupt()]
        assert bytes(reader.replies) == b"++"


def test_reader_unescapes_binary_data() -> None:
    reader = PacketReader()
    assert reader.feed(frame(b"X1000,2:}#")) == [Packet(b"X1000,2:}#")]


@pytest.mark.parametrize("wire", [
    b"$g#00",              # wrong checksum
    b"$g#zz",              # checksum not hex
    b"$g#-1",              # int() would take it
    b"$g# 7",              # so would a space
])
def test_a_bad_checksum_is_answered_nak(wire: bytes) -> None:
    reader = PacketReader()
    assert reader.feed(wire) == []
    assert bytes(reader.replies) == b"-"
    assert reader.feed(frame(b"g")) == [Packet(b"g")]       # and the next one is taken


def test_a_huge_packet_is_dropped_without_keeping_it() -> None:
    reader = PacketReader(max_packet=64)
    body = b"M" + b"0" * 100_000
    assert reader.feed(b"$" + body + b"#%02x" % checksum(body)) == []
    assert bytes(reader.replies) == b"-"
    assert len(reader._body) <= 128                         # bounded, whatever was sent
    assert reader.feed(frame(b"?")) == [Packet(b"?")]


def test_a_new_packet_start_abandons_a_broken_one() -> None:
    reader = PacketReader()
    assert reader.feed(b"$m10,4$" + frame(b"?")[1:]) == [Packet(b"?")]


def test_noise_between_packets_is_skipped() -> None:
    reader = PacketReader()
    assert reader.feed(b"\x00garbage\xff" + frame(b"c")) == [Packet(b"c")]


@pytest.mark.parametrize(("text", "value"), [
    (b"401136", 0x401136), (b"FFFFFFFFFFFFFFFF", 2**64 - 1), (b"0", 0),
    (b"", None), (b"0x10", None), (b"-1", None), (b"1_0", None), (b" 1", None),
    (b"10000000000000000", None), (b"\xff", None),
])
def test_hex_int_takes_only_plain_hex(text: bytes, value: int | None) -> None:
    assert hex_int(text) == value


def test_hex_int_and_hex_bytes_honour_their_limits() -> None:
    assert hex_int(b"100", limit=0x100) is None
    assert hex_bytes(b"90cc", limit=2) == b"\x90\xcc"
    assert hex_bytes(b"90cc90", limit=2) is None
    assert hex_bytes(b"9", limit=2) is None
    assert hex_bytes(b"9 c", limit=2) is None


@pytest.mark.parametrize(("text", "host", "port"), [
    ("127.0.0.1:1234", "127.0.0.1", 1234),
    ("127.0.0.1:0", "127.0.0.1", 0),
    ("localhost:9", "127.0.0.1", 9),
    ("127.5.6.7:65535", "127.5.6.7", 65535),
    ("[::1]:1234", "::1", 1234),
])
def test_loopback_addresses_are_taken(text: str, host: str, port: int) -> None:
    assert parse_gdb_address(text) == (host, port)


@pytest.mark.parametrize(("text", "says"), [
    ("127.0.0.1", "no port"),
    (":1234", "no port"),
    ("127.0.0.1:70000", "above 65535"),
    ("127.0.0.1:http", "not a number"),
    ("127.0.0.1:-1", "not a number"),
    ("example.org:1234", "not an IP address"),
    ("0.0.0.0:1234", "--gdb-any-address"),
    ("192.0.2.1:1234", "not a loopback address"),
])
def test_bad_addresses_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(GdbAddressError, match=says) as error:
        parse_gdb_address(text)
    assert repr(text) in str(error.value)


def test_any_address_must_be_asked_for() -> None:
    assert parse_gdb_address("0.0.0.0:1234", any_address=True) == ("0.0.0.0", 1234)
