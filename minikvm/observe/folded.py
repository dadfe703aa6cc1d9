"""Layer 7 — collapsed stacks, the text format flame graph tools read.

One line per distinct stack, outermost frame first, frames joined by
``;``, then a space and the number of samples: ``main;hot_a 12``.  It is
the format of Brendan Gregg's ``stackcollapse-*.pl`` output, which
``flamegraph.pl`` and speedscope both import.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence


def frame_name(name: str) -> str:
    """*name* made safe for one folded frame: no ``;`` and no newline."""
    return name.replace(";", ":").replace("\n", " ").replace("\r", " ") or "[unknown]"


def count_stacks(stacks: Iterable[Sequence[str]]) -> Counter[tuple[str, ...]]:
    """Samples per distinct stack; each stack outermost frame first."""
    return Counter(tuple(frame_name(frame) for frame in stack) for stack in stacks)


def format_folded(counts: Counter[tuple[str, ...]]) -> str:
    """The folded text, heaviest stacks first, ties in name order."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return "".join(f"{';'.join(stack)} {count}\n" for stack, count in ordered if stack)


def parse_folded(text: str) -> Counter[tuple[str, ...]]:
    """The counts back from folded text (for tests and for merging files)."""
    counts: Counter[tuple[str, ...]] = Counter()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            raise ValueError(f"folded line {number} is not 'frame;frame COUNT': {line!r}")
        counts[tuple(stack.split(";"))] += int(count)
    return counts
