"""The profiler's pure parts: the frame-pointer walk, folded stacks, speedscope.

The walk is fed a guest-like stack built here as bytes, including the
garbage a program may leave in RBP; the sampler that reads a real guest's
memory comes on top of it.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path

import pytest

from minikvm.observe.folded import count_stacks, format_folded, parse_folded
from minikvm.observe.speedscope import SCHEMA, speedscope_document
from minikvm.observe.stack_walk import walk_frames

STACK_BASE = 0x7FFF_F000_0000


def reader(words: dict[int, int]):
    """A read_word over *words* (address → value); anything else unmapped."""
    return lambda address: words.get(address)


def chain(*frames: tuple[int, int, int]) -> dict[int, int]:
    """Memory holding frames (rbp, saved rbp, return address)."""
    words: dict[int, int] = {}
    for rbp, saved, ret in frames:
        words[rbp] = saved
        words[rbp + 8] = ret
    return words


def test_walk_follows_the_chain_to_its_end() -> None:
    words = chain((STACK_BASE, STACK_BASE + 0x40, 0x401100),
                  (STACK_BASE + 0x40, STACK_BASE + 0x80, 0x401200),
                  (STACK_BASE + 0x80, 0, 0x401300))
    assert walk_frames(0x401000, STACK_BASE, reader(words)) == [
        0x401000, 0x401100, 0x401200, 0x401300]


@pytest.mark.parametrize("rbp", [0, 0xDEADBEEF, 0x4141414141414141, 0xFFFF_FFFF_FFFF_FFF8,
                                 STACK_BASE + 3, STACK_BASE + 0x1000])
def test_walk_stops_on_a_wild_rbp(rbp: int) -> None:
    words = chain((STACK_BASE, STACK_BASE + 0x40, 0x401100))
    assert walk_frames(0x401000, rbp, reader(words)) == [0x401000]


def test_walk_stops_on_a_frame_that_does_not_move_up() -> None:
    loop = chain((STACK_BASE, STACK_BASE, 0x401100))
    assert walk_frames(0x401000, STACK_BASE, reader(loop)) == [0x401000, 0x401100]
    down = chain((STACK_BASE + 0x40, STACK_BASE, 0x401100), (STACK_BASE, STACK_BASE + 0x40, 1))
    assert walk_frames(0x401000, STACK_BASE + 0x40, reader(down)) == [0x401000, 0x401100]


def test_walk_is_bounded() -> None:
    words = chain(*[(STACK_BASE + 16 * n, STACK_BASE + 16 * (n + 1), 0x401000 + n)
                    for n in range(1000)])
    assert len(walk_frames(0x400000, STACK_BASE, reader(words), max_depth=128)) == 128


def test_folded_round_trip_and_order() -> None:
    counts = count_stacks([("main", "hot_a")] * 5 + [("main", "hot_b")] * 2
                          + [("main", "a;b")])
    text = format_folded(counts)
    assert text.splitlines() == ["main;hot_a 5", "main;hot_b 2", "main;a:b 1"]
    assert parse_folded(text) == counts
    with pytest.raises(ValueError, match="line 1"):
        parse_folded("main;hot_a\n")


def test_speedscope_shape() -> None:
    counts = Counter({("main", "hot_a"): 4, ("main", "[syscall write]"): 1})
    document = json.loads(json.dumps(speedscope_document(counts, "prog", 1000)))
    assert document["$schema"] == SCHEMA
    names = [frame["name"] for frame in document["shared"]["frames"]]
    profile, = document["profiles"]
    assert profile["type"] == "sampled" and profile["unit"] == "seconds"
    assert len(profile["samples"]) == len(profile["weights"]) == 2
    stacks = {tuple(names[i] for i in sample): weight
              for sample, weight in zip(profile["samples"], profile["weights"])}
    assert stacks == {("main", "hot_a"): 0.004, ("main", "[syscall write]"): 0.001}
    assert profile["endValue"] == pytest.approx(0.005)


def test_svg_parses_and_titles_name_the_functions() -> None:
    import xml.etree.ElementTree as ElementTree

    from minikvm.observe.svg import format_svg

    counts = Counter({("main", "hot_a"): 20, ("main", "hot_b"): 10,
                      ("main", "[syscall write]"): 3, ("main", "<&>\"odd"): 1})
    root = ElementTree.fromstring(format_svg(counts, "prog <1>"))
    namespace = "{http://www.w3.org/2000/svg}"
    titles = [title.text for title in root.iter(f"{namespace}title")]
    assert "hot_a (20 samples, 58.82%)" in titles
    assert "hot_b (10 samples, 29.41%)" in titles
    assert "main (34 samples, 100.00%)" in titles
    assert "[syscall write] (3 samples, 8.82%)" in titles
    assert '<&>"odd (1 samples, 2.94%)' in titles
    widths = {title.text.split(" (")[0]: float(group.find(f"{namespace}rect").get("width"))
              for group in root.iter(f"{namespace}g")
              for title in [group.find(f"{namespace}title")]}
    assert widths["hot_a"] == pytest.approx(2 * widths["hot_b"], abs=0.2)


def test_svg_carries_the_zoom_and_search_script_and_what_it_reads() -> None:
    import xml.etree.ElementTree as ElementTree

    from minikvm.observe.svg import SCRIPT, format_svg

    counts = Counter({("main", "hot_a"): 20, ("main", "<&>\"odd"): 1})
    root = ElementTree.fromstring(format_svg(counts, "prog"))
    namespace = "{http://www.w3.org/2000/svg}"
    script = root.find(f"{namespace}script")
    assert script is not None and script.text.strip() == SCRIPT.read_text().strip()
    controls = {text.get("id"): text.text for text in root.iter(f"{namespace}text")
                if text.get("id")}
    assert controls == {"reset-zoom": "Reset Zoom", "search": "Search", "matched": None}
    frames = [group for group in root.iter(f"{namespace}g") if group.get("class") == "frame"]
    assert {group.get("data-name") for group in frames} == {"all", "main", "hot_a", '<&>"odd'}
    for group in frames:
        rect = group.find(f"{namespace}rect")
        assert float(group.get("data-x")) == float(rect.get("x"))
        assert float(group.get("data-width")) == float(rect.get("width"))
        assert int(group.get("data-samples")) > 0 and int(group.get("data-level")) >= 0
    hot_a = next(group for group in frames if group.get("data-name") == "hot_a")
    assert (hot_a.get("data-samples"), hot_a.get("data-level")) == ("20", "2")


def test_names_come_from_the_real_symbol_table(tmp_path) -> None:
    """flame_hot.c built as the flame graph tests build it: frames name its functions."""
    import shutil
    import subprocess
    from pathlib import Path

    from minikvm.observe.names import UNKNOWN, stack_names
    from minikvm.process.symbols import read_symbols

    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (apt-get install gcc)")
    source = Path(__file__).parent / "programs" / "flame_hot.c"
    binary = tmp_path / "flame_hot"
    subprocess.run(["gcc", "-static", "-O1", "-fno-omit-frame-pointer", "-o", str(binary),
                    str(source)], check=True)
    table = read_symbols(binary.read_bytes(), str(binary))
    main, _ = table.lookup(table.address_of("main"))
    hot_a = table.address_of("hot_a")
    # The CPU inside hot_a; a return address one past main's last byte (a call
    # that was main's last instruction) still names main; then nowhere.
    pcs = [hot_a + 4, main.address + main.size, 0x10]
    assert stack_names(pcs, [table]) == [UNKNOWN, "main", "hot_a"]


def test_a_stripped_library_is_named_from_its_dynsym() -> None:
    """Debian's libc.so.6 has no .symtab: with dynamic=True its exports name
    addresses; a file that is not ELF gives no load address (so no table)."""
    from minikvm.observe.libraries import lowest_load_vaddr
    from minikvm.process.symbols import read_symbols

    libc = Path("/lib/x86_64-linux-gnu/libc.so.6")
    if not libc.exists():
        pytest.skip("no /lib/x86_64-linux-gnu/libc.so.6 on this host")
    data = libc.read_bytes()
    table = read_symbols(data, str(libc), dynamic=True)
    assert table.description.startswith((".symtab of", ".dynsym of"))
    rand = table.address_of("rand")
    assert table.shifted(0x7f0000000000).symbolize(0x7f0000000000 + rand + 1) == "rand+1"
    assert lowest_load_vaddr(data) == 0
    assert lowest_load_vaddr(b"not an ELF file") is None
    assert lowest_load_vaddr(b"\x7fELF" + b"\xff" * 60) is None
