"""The performance page's figures, rendered from a committed benchmark run.

``benchmarks/run.py --json`` prints one JSON object: each figure's median
under its key (``syscall_us``), its minimum under ``KEY_min``, the ratios,
what was skipped and why, and under ``machine`` what it ran on.  One such
file is committed (``benchmarks/results/``); these directives read it, so
the page shows one run, whole, and changing the run means committing a new
file — never retyping a number.

* ``benchmark-machine FILE`` — a sentence saying where and how the run was
  made (CPU, cores, kernel, KVM, Python, date, load, mode, command).
* ``benchmark-table FILE`` — one row a content line
  ``what | KEY | baseline: KEY | RATIO_KEY``: minikvm's figure, the
  baseline it is measured beside, and their ratio (any field may be ``-``).
  A figure shows its median and, in brackets, its minimum.
* ``benchmark-chart FILE`` — "where the time goes": one bar a content line
  ``what | EXPRESSION: part | EXPRESSION: part ...``, each EXPRESSION a key
  or keys joined by + and - (``syscall_us - exit_floor_us``), each bar as
  long as the page and split in proportion, as an SVG.

A key the file does not hold stops the build with its name, the file and
the keys it has: a renamed figure cannot leave a stale table behind.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from minikvm_diagrams import evaluate, wrap

#: Units by the word of a key that names them (``reset_cow_us_256`` is in µs),
#: and how many decimals a figure in each gets.
UNITS = {"ns": ("ns", 1), "us": ("µs", 1), "ms": ("ms", 1), "s": ("s", 3), "rps": ("/s", 0),
         "kib": ("KiB", 0)}
#: The segments' colours, in order (readable under black or white text).
SEGMENT_COLOURS = ("#8fb3de", "#f2c57c", "#e58f8f", "#9fd19f", "#c5a3d9")
BAR_WIDTH = 640
BAR_HEIGHT = 26
LABEL_FONT = 11


def unit_of(key: str) -> tuple[str, int]:
    """The unit of a figure, from the last word of its key that names one."""
    for word in reversed(key.split("_")):
        if word in UNITS:
            unit, decimals = UNITS[word]
            # Per-page figures are small: two decimals.
            return unit, decimals + 1 if key.endswith("_per_page") else decimals
    return "", 3


def number(value: float, decimals: int) -> str:
    """*value* with *decimals* decimals, or more for a small value, so that
    at least two significant digits show (0.0023 s, not 0.002 s)."""
    if 0 < abs(value) < 1:
        decimals = max(decimals, 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


class _BenchmarkDirective(SphinxDirective):
    """Reads the JSON file named by the directive's argument."""
    required_arguments = 1
    has_content = True

    def results(self) -> dict[str, object]:
        relative, path = self.env.relfn2path(self.arguments[0])
        self.env.note_dependency(relative)
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise self.error(f"{self.name}: cannot read {self.arguments[0]}: {error}") from None
        if not isinstance(data, dict) or not isinstance(data.get("machine"), dict):
            raise self.error(f"{self.name}: {self.arguments[0]} is not the output of "
                             "benchmarks/run.py --json (no 'machine' object)")
        return data

    def value(self, data: dict[str, object], key: str) -> float:
        if key not in data or not isinstance(data[key], (int, float)):
            figures = sorted(name for name, value in data.items()
                             if isinstance(value, (int, float)))
            raise self.error(f"{self.name}: {self.arguments[0]} has no figure {key!r} "
                             f"(it has: {', '.join(figures)})")
        return float(data[key])  # type: ignore[arg-type]

    def figure(self, data: dict[str, object], key: str) -> str:
        unit, decimals = unit_of(key)
        median = number(self.value(data, key), decimals)
        minimum = data.get(f"{key}_min")
        shown = f"{median} {unit}".strip()
        if isinstance(minimum, (int, float)):
            shown += f" ({number(minimum, decimals)})"
        return shown

    def inline(self, text: str) -> list[nodes.Node]:
        """*text* parsed as inline markup of the page (Markdown on a MyST page)."""
        parsed, messages = self.parse_inline(text)
        return [*parsed, *messages]


def table(headings: list[tuple[str, int]], rows: list[list[list[nodes.Node]]]) -> nodes.table:
    """A docutils table: *headings* are (title, relative width); cells are nodes."""
    result = nodes.table(classes=["benchmark-table"])
    group = nodes.tgroup(cols=len(headings))
    result += group
    for _, width in headings:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    header = nodes.row()
    head += header
    for title, _ in headings:
        header += nodes.entry("", nodes.paragraph(text=title))
    body = nodes.tbody()
    group += body
    for cells in rows:
        row = nodes.row()
        body += row
        for cell in cells:
            row += nodes.entry("", nodes.paragraph("", "", *cell))
    return result


class BenchmarkMachine(_BenchmarkDirective):
    """``.. benchmark-machine:: FILE`` — what the run was measured on."""
    has_content = False

    def run(self) -> list[nodes.Node]:
        results = self.results()
        machine = results["machine"]
        assert isinstance(machine, dict)

        def get(name: str) -> str:
            return str(machine.get(name, "?"))

        kvm = "PVM (the kvm_pvm module)" if get("kvm") == "pvm" else "hardware VMX/SVM"
        made = nodes.paragraph("", f"Measured on {get('date')}: {get('cpu')}, {get('cores')} "
                                   f"cores, Linux {get('kernel')}, /dev/kvm is {kvm}, Python "
                                   f"{get('python')}; load average "
                                   f"{get('load_average_at_start')} at the start and "
                                   f"{get('load_average_at_end')} at the end; ")
        made += nodes.literal(text=get("command"))
        made += nodes.Text(f" ({get('mode')} mode, {get('repetitions')} rounds) at commit ")
        made += nodes.literal(text=get("commit"))
        made += nodes.Text(".")
        paragraphs = [made]
        if machine.get("description"):
            paragraphs.append(nodes.paragraph(text=f"The machine: {machine['description']}."))
        skipped = results.get("skipped") or {}
        if isinstance(skipped, dict) and skipped:
            paragraphs.append(nodes.paragraph(text="Not measured in this run: " + "; ".join(
                f"{name} ({why})" for name, why in sorted(skipped.items())) + "."))
        return paragraphs


class BenchmarkTable(_BenchmarkDirective):
    """``.. benchmark-table:: FILE`` — figures beside their baselines."""

    def run(self) -> list[nodes.Node]:
        data = self.results()
        rows = []
        for line in self.content:
            if not line.strip():
                continue
            fields = [field.strip() for field in line.split("|")]
            if len(fields) != 4:
                raise self.error(f"benchmark-table: {line!r}: expected "
                                 "'what | KEY | baseline: KEY | RATIO_KEY'")
            what, key, baseline, ratio = fields
            mine: list[nodes.Node] = [] if key == "-" else [nodes.Text(self.figure(data, key))]
            base: list[nodes.Node] = []
            if baseline != "-":
                name, _, baseline_key = baseline.rpartition(":")
                if name.strip():
                    base += self.inline(name.strip() + ": ")
                base.append(nodes.Text(self.figure(data, baseline_key.strip())))
            ratio_cell: list[nodes.Node] = []
            if ratio != "-":
                ratio_cell = [nodes.literal(text=ratio),
                              nodes.Text(f" = {self.value(data, ratio):.3g}")]
            rows.append([self.inline(what), mine, base, ratio_cell])
        return [table([("figure", 32), ("minikvm: median (min)", 18), ("baseline", 34),
                       ("ratio of the medians", 16)], rows)]


def chart_svg(bars: list[tuple[str, str, int, list[tuple[str, float]]]]) -> str:
    """Stacked bars, each 100 % of the page's width: (title, unit, decimals, parts)."""
    height = 0
    pieces: list[str] = []
    for title, unit, decimals, parts in bars:
        total = sum(value for _, value in parts)
        pieces.append(f'<text x="0" y="{height + 14}" font-size="12" font-weight="bold" '
                      f'fill="currentColor">{html.escape(title)}: {number(total, decimals)} '
                      f'{unit}</text>')
        height += 20
        left = 0.0
        for index, (label, value) in enumerate(parts):
            width = BAR_WIDTH * value / total if total else 0
            colour = SEGMENT_COLOURS[index % len(SEGMENT_COLOURS)]
            pieces.append(f'<rect x="{left:.1f}" y="{height}" width="{width:.1f}" '
                          f'height="{BAR_HEIGHT}" fill="{colour}" stroke="white"/>')
            share = f"{100 * value / total:.0f} %" if total else ""
            if width > 44:
                pieces.append(f'<text x="{left + width / 2:.1f}" y="{height + 17}" '
                              f'text-anchor="middle" font-size="{LABEL_FONT}" fill="#1a1a1a">'
                              f"{share}</text>")
            left += width
        height += BAR_HEIGHT + 6
        for index, (label, value) in enumerate(parts):   # the legend, one line a part
            colour = SEGMENT_COLOURS[index % len(SEGMENT_COLOURS)]
            text = (f"{number(value, decimals)} {unit} ({100 * value / total:.0f} %): {label}"
                    if total else label)
            for number_of_line, line in enumerate(wrap(text, 96)):
                if number_of_line == 0:
                    pieces.append(f'<rect x="0" y="{height + 3}" width="10" height="10" '
                                  f'fill="{colour}"/>')
                pieces.append(f'<text x="16" y="{height + 12}" font-size="{LABEL_FONT}" '
                              f'fill="currentColor">{html.escape(line)}</text>')
                height += LABEL_FONT + 4
        height += 16
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {BAR_WIDTH} {height}" '
            f'width="100%" style="max-width:{BAR_WIDTH}px" role="img" '
            f'font-family="sans-serif">{"".join(pieces)}</svg>')


class BenchmarkChart(_BenchmarkDirective):
    """``.. benchmark-chart:: FILE`` — where the time goes, bar by bar."""

    def run(self) -> list[nodes.Node]:
        data = self.results()
        numbers = {key: float(value) for key, value in data.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool)}
        bars = []
        for line in self.content:
            if not line.strip():
                continue
            title, *segments = [field.strip() for field in line.split("|")]
            if not segments:
                raise self.error(f"benchmark-chart: {line!r}: expected "
                                 "'what | EXPRESSION: part | EXPRESSION: part ...'")
            parts = []
            unit, decimals = "", 0
            for segment in segments:
                expression, _, label = segment.partition(":")
                for key in expression.replace("+", " ").replace("-", " ").split():
                    self.value(data, key)   # a clear error for a missing key
                    if not unit:
                        unit, decimals = unit_of(key)
                value = evaluate(expression.strip(), numbers)
                if value < 0:
                    raise self.error(f"benchmark-chart: {expression.strip()} is {value:.3f}, "
                                     "negative: a part of a bar cannot be")
                parts.append((label.strip(), value))
            bars.append((title, unit, decimals, parts))
        alt = "; ".join(f"{title}: " + ", ".join(f"{label} {number(value, decimals)} {unit}"
                                                 for label, value in parts)
                        for title, unit, decimals, parts in bars)
        return [nodes.raw("", f'<figure class="benchmark-chart" aria-label="'
                              f'{html.escape(alt, quote=True)}">{chart_svg(bars)}</figure>',
                          format="html")]


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("benchmark-machine", BenchmarkMachine)
    app.add_directive("benchmark-table", BenchmarkTable)
    app.add_directive("benchmark-chart", BenchmarkChart)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
