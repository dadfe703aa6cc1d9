"""Layer 7 — a flame graph as SVG, in the shape Brendan Gregg's flamegraph.pl draws.

Each frame is a rectangle whose width is its share of the samples, stacked
on its caller (the root, "all", at the bottom), with a ``<title>`` that a
browser shows on hover ("hot_a (12 samples, 40.00%)").  Frames narrower
than :data:`MIN_WIDTH` pixels are left out, as flamegraph.pl does, so a
profile with many rare stacks stays a small file.  Colours are a warm hue
picked from the frame's name, so a function keeps its colour across
graphs; ``[syscall NAME]`` frames are blue so time in emulation stands out.

Like flamegraph.pl's, the file is interactive in a browser: a small script
(``flamegraph.js`` beside this module, embedded in the SVG) zooms to a
frame on click, "Reset Zoom" undoes it, and "Search" highlights the frames
whose name matches a regular expression and shows their share of the
samples.  Each frame's ``<g>`` carries its name, sample count and unzoomed
geometry as ``data-`` attributes, so the script needs no other state.
"""

from __future__ import annotations

import zlib
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import escape

WIDTH = 1200          #: pixels across the whole graph
FRAME_HEIGHT = 16     #: pixels per stack level
MIN_WIDTH = 0.1       #: frames narrower than this many pixels are not drawn
FONT_SIZE = 12
CHAR_WIDTH = 0.59 * FONT_SIZE   #: average glyph width of Verdana, to fit labels
SCRIPT = Path(__file__).with_name("flamegraph.js")   #: zoom and search, embedded


class _Node:
    """One frame in the merged call tree: samples here and below, children by name."""

    def __init__(self) -> None:
        self.total = 0
        self.children: dict[str, _Node] = {}


def _tree(counts: Counter[tuple[str, ...]]) -> _Node:
    root = _Node()
    for stack, count in counts.items():
        node = root
        node.total += count
        for frame in stack:
            node = node.children.setdefault(frame, _Node())
            node.total += count
    return root


def _depth(node: _Node) -> int:
    return 1 + max((_depth(child) for child in node.children.values()), default=0)


def _colour(name: str) -> str:
    hash_ = zlib.crc32(name.encode())
    if name.startswith("[syscall "):
        return f"rgb({60 + hash_ % 40},{120 + hash_ % 60},{200 + hash_ % 55})"
    return f"rgb({205 + hash_ % 50},{(hash_ >> 8) % 230},{(hash_ >> 16) % 55})"


_QUOTE = {'"': "&quot;"}   #: escape() entities for a double-quoted attribute


def _controls(height: int) -> list[str]:
    """The "Reset Zoom" and "Search" buttons (top corners) and the line where
    the script shows the matched share (bottom right)."""
    style = f'font-family="Verdana" font-size="{FONT_SIZE}" cursor="pointer"'
    return [
        f'<text id="reset-zoom" x="10" y="{FRAME_HEIGHT - 2}" opacity="0" {style}>'
        f'Reset Zoom</text>\n',
        f'<text id="search" x="{WIDTH - 10}" y="{FRAME_HEIGHT - 2}" text-anchor="end" '
        f'{style}>Search</text>\n',
        f'<text id="matched" x="{WIDTH - 10}" y="{height - 2}" text-anchor="end" '
        f'font-family="Verdana" font-size="{FONT_SIZE}"></text>\n',
    ]


def format_svg(counts: Counter[tuple[str, ...]], title: str) -> str:
    """The SVG document for *counts* (stack, outermost first → samples)."""
    root = _tree(counts)
    levels = _depth(root)
    height = (levels + 2) * FRAME_HEIGHT
    total = root.total or 1
    scale = WIDTH / total
    parts = [
        '<?xml version="1.0" standalone="no"?>\n',
        f'<svg version="1.1" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" data-char-width="{CHAR_WIDTH:.2f}" '
        f'xmlns="http://www.w3.org/2000/svg">\n',
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#f8f8f8"/>\n',
        f'<text x="{WIDTH / 2}" y="{FRAME_HEIGHT - 2}" text-anchor="middle" '
        f'font-family="Verdana" font-size="{FONT_SIZE + 2}">{escape(title)}</text>\n',
        *_controls(height),
    ]

    def draw(name: str, node: _Node, x: float, level: int) -> None:
        width = node.total * scale
        if width < MIN_WIDTH:
            return
        y = height - (level + 1) * FRAME_HEIGHT
        share = 100 * node.total / total
        label = escape(name)
        parts.append(
            f'<g class="frame" data-name="{escape(name, _QUOTE)}" data-samples="{node.total}" '
            f'data-x="{x:.1f}" data-width="{width:.1f}" data-level="{level}">'
            f'<title>{label} ({node.total} samples, {share:.2f}%)</title>'
            f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{FRAME_HEIGHT - 1}" '
            f'fill="{_colour(name)}" rx="2" ry="2"/>')
        fits = int((width - 6) / CHAR_WIDTH)
        if fits >= 3:
            text = name if len(name) <= fits else name[:fits - 2] + ".."
            parts.append(f'<text x="{x + 3:.1f}" y="{y + FRAME_HEIGHT - 4}" '
                         f'font-family="Verdana" font-size="{FONT_SIZE}">{escape(text)}</text>')
        parts.append("</g>\n")
        child_x = x
        for child_name in sorted(node.children):
            child = node.children[child_name]
            draw(child_name, child, child_x, level + 1)
            child_x += child.total * scale

    draw("all", root, 0.0, 0)
    # CDATA keeps the script's "<" and "&&" out of the XML parser's way.
    script = SCRIPT.read_text(encoding="utf-8").replace("]]>", "]]]]><![CDATA[>")
    parts.append(f'<script type="text/ecmascript"><![CDATA[\n{script}]]></script>\n')
    parts.append("</svg>\n")
    return "".join(parts)
