"""Diagrams drawn from the code at build time, never by hand.

Each directive below computes its picture from minikvm itself, so the
picture changes when the code does:

* ``layer-map`` — the units of minikvm (a package such as ``kvm/``, or a
  top-level module such as ``ioctl.py``) as boxes, one row per layer, with
  the imports between units as arrows.  A unit's layer and summary come
  from its docstring ("Layer N — ..."), its imports from the source, read
  with :mod:`ast`.  Drawn with Graphviz (``sphinx.ext.graphviz``).
* ``memory-map`` — the fixed addresses of :mod:`minikvm.cpu.layout`, in hex,
  each with its ``#:`` doc comment, as a stack of regions.  The directive's
  options say which constants bound the regions of each map; values and
  words come from the module.
* ``page-walk`` — a 4-level page-table tree built with
  :class:`minikvm.paging.PageTables` over real (unshared, host-only) guest
  memory, for the mappings listed in the directive, with the walk of one
  address drawn in bold.
* ``sequence-diagram`` — participants and messages written as text in the
  directive, laid out as an SVG sequence diagram.

The benchmark report (table and chart from a committed JSON file) is in
``benchmark_report.py``.
"""

from __future__ import annotations

import ast
import functools
import html
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.ext.graphviz import graphviz
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective

from minikvm_reference import LAYER_IN_DOCSTRING, NOT_API, PACKAGE

#: Colours of the layer map's rows, lowest layer first (a light palette, so
#: black text stays readable in both of the theme's modes).
LAYER_COLOURS = ("#e8eef7", "#e6f2e6", "#fbf0dc", "#f6e3e3", "#ece6f4", "#e3f1f1",
                 "#f3eadf", "#e9e9e9", "#f7e6ef")
#: The layer every other one may use (the kernel's and the CPU's names):
#: the map leaves out the arrows into it, which would come from every box.
FOUNDATION_LAYER = 0
#: Characters per line of a summary inside a box.
WRAP = 34


def graphviz_node(dot: str, alt: str, docname: str) -> graphviz:
    """A ``sphinx.ext.graphviz`` node for *dot*, as its directive makes one."""
    node = graphviz()
    node["code"] = dot
    node["options"] = {"docname": docname}
    node["alt"] = alt
    node["align"] = "center"
    return node


def wrap(text: str, width: int = WRAP) -> list[str]:
    """*text* cut into lines of at most *width* characters, at spaces."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def label_text(text: str) -> str:
    """*text* for a Graphviz HTML-like label: escaped, without reST markup."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "").replace("*", "")
    return html.escape(text, quote=True)


# --- the layer map ------------------------------------------------------------


@dataclass
class Unit:
    """A package or a top-level module of minikvm."""
    name: str            # "kvm" or "ioctl"
    is_package: bool
    layer: int
    summary: str
    members: list[str]   # a package's modules
    imports: dict[str, bool]  # unit -> True when every import of it is for typing only

    @property
    def title(self) -> str:
        return f"{self.name}/" if self.is_package else f"{self.name}.py"

    @property
    def dotted(self) -> str:
        return f"minikvm.{self.name}"


def first_paragraph(path: Path) -> str:
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(docstring.split("\n\n")[0].split())


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imported_units(path: Path) -> dict[str, bool]:
    """The minikvm units *path* imports: unit -> "only under TYPE_CHECKING"."""
    relative = path.relative_to(PACKAGE)
    package = ["minikvm", *relative.parts[:-1]]
    found: dict[str, bool] = {}

    def note(dotted: str, typing_only: bool) -> None:
        parts = dotted.split(".")
        if parts[0] != "minikvm" or len(parts) < 2:
            return
        found[parts[1]] = found.get(parts[1], True) and typing_only

    def visit(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, typing_only)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                note(alias.name, typing_only)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "minikvm":   # from minikvm import ioctl, x86
                for alias in node.names:
                    note(f"minikvm.{alias.name}", typing_only)
            else:
                note(module, typing_only)
        for child in ast.iter_child_nodes(node):
            visit(child, typing_only)

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return found


@functools.cache
def units() -> tuple[Unit, ...]:
    """Every unit of the package, with its layer, summary and imports."""
    found = []
    for entry in sorted(PACKAGE.iterdir()):
        if entry.is_dir() and (entry / "__init__.py").exists():
            sources = sorted(entry.rglob("*.py"))
            described = entry / "__init__.py"
            members = [path.stem for path in sources if path.name != "__init__.py"]
        elif entry.suffix == ".py" and entry.stem not in NOT_API:
            sources, described, members = [entry], entry, []
        else:
            continue
        match = LAYER_IN_DOCSTRING.match(first_paragraph(described))
        if not match:
            raise ValueError(f"{described.relative_to(PACKAGE.parent)}: the docstring does not "
                             "start with 'Layer N — <what it owns>', so the layer map cannot "
                             "place it")
        imports: dict[str, bool] = {}
        for source in sources:
            for unit, typing_only in imported_units(source).items():
                imports[unit] = imports.get(unit, True) and typing_only
        imports.pop(entry.stem, None)
        found.append(Unit(entry.stem, entry.is_dir(), int(match.group(1)),
                          match.group(2).rstrip("."), members, imports))
    return tuple(found)


def layer_map_dot(link: Callable[[str], str | None], detailed: bool) -> str:
    """The Graphviz source of the layer map.  *link* gives a unit's page."""
    all_units = units()
    by_layer: dict[int, list[Unit]] = {}
    for unit in all_units:
        by_layer.setdefault(unit.layer, []).append(unit)
    lines = ["digraph layers {",
             '  graph [rankdir=TB, nodesep=0.25, ranksep=0.45, fontname="sans-serif", '
             'bgcolor="transparent"];',
             '  node [shape=plain, fontname="sans-serif", fontsize=10];',
             '  edge [color="#7a869a", arrowsize=0.6, penwidth=0.8];']
    for layer in sorted(by_layer, reverse=True):
        colour = LAYER_COLOURS[layer % len(LAYER_COLOURS)]
        lines.append(f"  subgraph layer_{layer} {{")
        lines.append("    rank=same;")
        lines.append(f'    "L{layer}" [label=<<FONT POINT-SIZE="11"><B>Layer {layer}</B>'
                     f'</FONT>>, shape=plaintext];')
        for unit in by_layer[layer]:
            rows = [f'<TR><TD><B>{label_text(unit.title)}</B></TD></TR>']
            rows += [f'<TR><TD>{label_text(line)}</TD></TR>' for line in wrap(unit.summary)]
            if detailed and unit.members:
                modules = " · ".join(unit.members)
                rows += [f'<TR><TD><FONT POINT-SIZE="8" COLOR="#4a5568">{label_text(line)}'
                         f'</FONT></TD></TR>' for line in wrap(modules, WRAP + 10)]
            href = link(unit.dotted)
            attributes = f' HREF="{html.escape(href)}" TARGET="_top" TOOLTIP="{unit.dotted}"' \
                if href else ""
            lines.append(f'    "{unit.name}" [label=<<TABLE BORDER="1" CELLBORDER="0" '
                         f'CELLSPACING="0" CELLPADDING="2" COLOR="#5a6478" BGCOLOR="{colour}"'
                         f'{attributes}>{"".join(rows)}</TABLE>>];')
        lines.append("  }")
    ordered = sorted(by_layer, reverse=True)
    for upper, lower in zip(ordered, ordered[1:]):   # keep the rows in layer order
        lines.append(f'  "L{upper}" -> "L{lower}" [style=invis];')
    layer_of = {unit.name: unit.layer for unit in all_units}
    for unit in all_units:
        for other, typing_only in sorted(unit.imports.items()):
            if layer_of.get(other) == FOUNDATION_LAYER:
                continue  # everyone uses it: see FOUNDATION_LAYER
            style = ', style=dashed' if typing_only else ''
            lines.append(f'  "{unit.name}" -> "{other}" [tooltip="{unit.name} imports '
                         f'{other}"{style}];')
    lines.append("}")
    return "\n".join(lines)


class LayerMap(SphinxDirective):
    """``.. layer-map::`` — minikvm's units by layer, imports as arrows.

    ``:detailed:`` lists each package's modules in its box."""
    has_content = False
    option_spec = {"detailed": directives.flag}

    def run(self) -> list[nodes.Node]:
        builder = self.env.app.builder
        docname = self.env.docname
        api_pages = {f"reference/api/{unit.dotted}" for unit in units()}

        def link(dotted: str) -> str | None:
            target = f"reference/api/{dotted}"
            if target not in api_pages:
                return None
            try:
                return builder.get_relative_uri(docname, target)
            except Exception:  # noqa: BLE001 - a builder without URIs: no links
                return None

        for path in PACKAGE.rglob("*.py"):
            self.env.note_dependency(str(path))
        dot = layer_map_dot(link, "detailed" in self.options)
        node = graphviz_node(dot, "minikvm's layers: each unit's box in its layer's row, "
                                  "an arrow for each import between units", docname)
        return [node]


# --- the memory map -------------------------------------------------------------

#: Colours of a memory map's regions, by the first word of the constant
#: that starts them (a light palette, as for the layers).
REGION_COLOURS = ("#e8eef7", "#e6f2e6", "#fbf0dc", "#f6e3e3", "#ece6f4", "#e3f1f1")


def evaluate(expression: str, namespace: dict[str, float]) -> float:
    """The value of *expression*: a name of *namespace*, a number, or names
    and numbers joined by + and -.  Nothing else is evaluated (the memory
    map's boundaries, the benchmark chart's segments)."""
    def value(node: ast.expr) -> float:
        if (isinstance(node, ast.Constant) and isinstance(node.value, (int, float))
                and not isinstance(node.value, bool)):
            return node.value
        if isinstance(node, ast.Name) and node.id in namespace:
            return namespace[node.id]
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left - right
        raise ValueError(f"{expression!r} is not a known name, a number, or a sum or "
                         "difference of those")
    return value(ast.parse(expression, mode="eval").body)


@dataclass
class Boundary:
    address: int
    names: list[str]
    words: list[str]


def memory_map_dot(title: str, boundaries: list[Boundary]) -> str:
    """A stack of regions, lowest address on top, as the module docstring draws it."""
    rows = [f'<TR><TD COLSPAN="2" BORDER="0"><B>{label_text(title)}</B></TD></TR>']
    for index, boundary in enumerate(boundaries):
        parts = []
        if boundary.names:
            parts.append(f"<B>{label_text(' = '.join(boundary.names))}</B>")
        words = wrap(" ".join(boundary.words), 58)
        if words:
            parts.append('<FONT POINT-SIZE="9">'
                         + "<BR/>".join(label_text(line) for line in words) + "</FONT>")
        # The last boundary ends the map: a line, not a region.
        last = index == len(boundaries) - 1
        region = ('SIDES="T"' if last
                  else f'BGCOLOR="{REGION_COLOURS[index % len(REGION_COLOURS)]}"')
        rows.append(f'<TR><TD ALIGN="RIGHT" VALIGN="TOP" BORDER="0"><FONT FACE="monospace">'
                    f'{boundary.address:#_x}</FONT></TD><TD ALIGN="LEFT" VALIGN="TOP" '
                    f'BALIGN="LEFT" CELLPADDING="5" {region}>{"<BR/>".join(parts)}</TD></TR>')
    table = ('<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" COLOR="#5a6478">'
             + "".join(rows) + "</TABLE>")
    return "\n".join(["digraph memory {", '  graph [bgcolor="transparent"];',
                      '  node [shape=plain, fontname="sans-serif", fontsize=10];',
                      f"  map [label=<{table}>];", "}"])


class MemoryMap(SphinxDirective):
    """``.. memory-map:: minikvm.cpu.layout`` — a map of fixed addresses.

    ``:title:`` names the map; ``:boundaries:`` lists the constants that
    start (or end) its regions.  Each content line ``EXPRESSION: words``
    adds a boundary no single constant names (the null page at 0, the
    bottom of the stack), where EXPRESSION is a number or names joined by
    + and -.  Each boundary shows its address in hex, its constants' names
    and their ``#:`` doc comments; the regions are not drawn to scale."""
    required_arguments = 1
    has_content = True
    option_spec = {"title": directives.unchanged_required,
                   "boundaries": directives.unchanged_required}

    def run(self) -> list[nodes.Node]:
        module_name = self.arguments[0]
        module = importlib.import_module(module_name)
        self.env.note_dependency(module.__file__)
        comments = {name: " ".join(" ".join(lines).split())
                    for (scope, name), lines in
                    ModuleAnalyzer.for_module(module_name).find_attr_docs().items()
                    if scope == ""}
        namespace = {name: value for name, value in vars(module).items()
                     if isinstance(value, int) and not isinstance(value, bool)}
        by_address: dict[int, Boundary] = {}
        for name in self.options["boundaries"].split():
            if name not in namespace:
                raise self.error(f"memory-map: {module_name} has no int constant {name}")
            if name not in comments:
                raise self.error(f"memory-map: {module_name}.{name} has no '#:' doc comment "
                                 "to show: write one above it")
            boundary = by_address.setdefault(namespace[name], Boundary(namespace[name], [], []))
            boundary.names.append(name)
            boundary.words.append(comments[name])
        for line in self.content:
            if not line.strip():
                continue
            expression, _, words = line.partition(":")
            try:
                address = int(evaluate(expression.strip(), namespace))
            except (ValueError, SyntaxError) as error:
                raise self.error(f"memory-map: {error}") from None
            boundary = by_address.setdefault(address, Boundary(address, [], []))
            if not any(char.isdigit() for char in expression.strip()[:1]):
                boundary.names.append(expression.strip())
            boundary.words.append(words.strip())
        dot = memory_map_dot(self.options.get("title", module_name),
                             [by_address[address] for address in sorted(by_address)])
        return [graphviz_node(dot, f"the memory map of {module_name}", self.env.docname)]


# --- the page walk ------------------------------------------------------------

#: Guest memory behind the page-walk diagram: enough for the page-table
#: pool the tables come from (the mapped pages themselves are never touched).
PAGE_WALK_MEMORY = 16 << 20
PERMISSIONS = re.compile(r"^[r-][w-][x-]$")
HIGHLIGHT = "#c0392b"


@dataclass
class Mapping:
    vaddr: int
    paddr: int
    size: int
    permissions: str
    name: str


def entry_bits(entry: int) -> str:
    """An entry's flags by name, as tutorial 07 prints them."""
    from minikvm.x86 import PTE_HUGE, PTE_NX, PTE_PRESENT, PTE_USER, PTE_WRITE
    names = [("P", PTE_PRESENT), ("W", PTE_WRITE), ("U", PTE_USER), ("PS", PTE_HUGE),
             ("NX", PTE_NX)]
    return " ".join(name for name, bit in names if entry & bit)


def page_walk_dot(mappings: list[Mapping], address: int) -> str:
    """The page-table tree :class:`~minikvm.paging.PageTables` builds for
    *mappings*, with the walk to *address* highlighted."""
    from minikvm.cpu.layout import PAGE_SIZE, PAGE_TABLE_POOL_START
    from minikvm.kvm.memory import GuestMemory
    from minikvm.paging import (ENTRIES_PER_TABLE, LEVEL_NAMES, LEVEL_SHIFTS, PageTables,
                                pte_flags, table_index)
    from minikvm.x86 import PTE_ADDRESS_MASK, PTE_HUGE, PTE_PRESENT

    next_table = [PAGE_TABLE_POOL_START]

    def allocate() -> int:
        table, next_table[0] = next_table[0], next_table[0] + PAGE_SIZE
        return table

    with GuestMemory(PAGE_WALK_MEMORY, shared=False, name="minikvm-docs") as memory:
        tables = PageTables(memory, allocate, lambda table: None)
        names = {}
        for mapping in mappings:
            read, write, execute = (mapping.permissions[i] != "-" for i in range(3))
            tables.map(mapping.vaddr, mapping.paddr, mapping.size,
                       pte_flags(read=read, write=write, execute=execute))
            names[mapping.paddr] = mapping.name
        walk = {(step.table_address, step.index) for step in tables.walk(address)}
        indices = " · ".join(f"{LEVEL_NAMES[level]} {table_index(address, level)}"
                             for level in range(4))
        lines = ["digraph walk {",
                 '  graph [rankdir=LR, nodesep=0.2, ranksep=0.5, bgcolor="transparent", '
                 f'fontname="sans-serif", fontsize=11, labelloc=t, label=<<B>{address:#_x}'
                 f'</B> = {indices} · offset {address & (PAGE_SIZE - 1):#x}>];',
                 '  node [shape=plain, fontname="sans-serif", fontsize=9];',
                 '  edge [color="#7a869a", arrowsize=0.6];',
                 f'  cr3 [label=<<TABLE BORDER="1" CELLBORDER="0" BGCOLOR="#e9e9e9"><TR><TD>'
                 f'<B>CR3</B></TD></TR><TR><TD>{tables.root:#x}</TD></TR></TABLE>>];',
                 f'  cr3 -> t{tables.root:x} [color="{HIGHLIGHT}", penwidth=2];']
        pending = [(tables.root, 0)]
        pages = set()
        while pending:
            table, level = pending.pop(0)
            rows = [f'<TR><TD COLSPAN="2"><B>{LEVEL_NAMES[level]}</B> at {table:#x}</TD></TR>']
            for index in range(ENTRIES_PER_TABLE):
                entry = memory.read_u64(table + 8 * index)
                if not entry & PTE_PRESENT:
                    if (table, index) in walk:   # the walk ends here: a page fault
                        rows.append(f'<TR><TD ALIGN="RIGHT" BGCOLOR="#f6d5d1">[{index}]</TD>'
                                    f'<TD ALIGN="LEFT" BGCOLOR="#f6d5d1">not present: #PF'
                                    f'</TD></TR>')
                    continue
                on_walk = (table, index) in walk
                colour = f' BGCOLOR="#f6d5d1"' if on_walk else ""
                rows.append(f'<TR><TD PORT="e{index}" ALIGN="RIGHT"{colour}>[{index}]</TD>'
                            f'<TD ALIGN="LEFT"{colour}>{entry_bits(entry)}</TD></TR>')
                target = entry & PTE_ADDRESS_MASK
                style = f' [color="{HIGHLIGHT}", penwidth=2]' if on_walk else ""
                if level == 3 or entry & PTE_HUGE:
                    pages.add((target, 1 << LEVEL_SHIFTS[level]))
                    lines.append(f"  t{table:x}:e{index} -> p{target:x}{style};")
                else:
                    pending.append((target, level + 1))
                    lines.append(f"  t{table:x}:e{index} -> t{target:x}{style};")
            lines.append(f'  t{table:x} [label=<<TABLE BORDER="1" CELLBORDER="0" '
                         f'CELLSPACING="0" CELLPADDING="2" BGCOLOR="#e8eef7">'
                         f'{"".join(rows)}</TABLE>>];')
        for page, size in sorted(pages):
            name = names.get(page, "")
            size_text = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
            lines.append(f'  p{page:x} [label=<<TABLE BORDER="1" CELLBORDER="0" '
                         f'BGCOLOR="#e6f2e6"><TR><TD><B>{label_text(name)}</B></TD></TR>'
                         f'<TR><TD>{size_text} at {page:#x}</TD></TR></TABLE>>];')
        lines.append("}")
        tables.words.release()
        return "\n".join(lines)


class PageWalk(SphinxDirective):
    """``.. page-walk::`` — the page-table tree of a few mappings.

    Each content line is ``VADDR PADDR SIZE rwx NAME`` (numbers in any
    Python notation); ``:address:`` is the virtual address whose walk is
    drawn in bold.  The tables are built by :class:`minikvm.paging.PageTables`
    itself, in guest memory of the docs build, exactly as a machine's are."""
    has_content = True
    option_spec = {"address": directives.unchanged_required}

    def run(self) -> list[nodes.Node]:
        mappings = []
        for line in self.content:
            if not line.strip():
                continue
            fields = line.split(maxsplit=4)
            if len(fields) != 5 or not PERMISSIONS.match(fields[3]):
                raise self.error(f"page-walk: {line!r}: expected 'VADDR PADDR SIZE rwx NAME'")
            vaddr, paddr, size = (int(field, 0) for field in fields[:3])
            mappings.append(Mapping(vaddr, paddr, size, fields[3], fields[4]))
        address = int(self.options["address"], 0)
        paging = importlib.import_module("minikvm.paging")
        self.env.note_dependency(paging.__file__)
        return [graphviz_node(page_walk_dot(mappings, address),
                              f"the page-table tree, and the walk to {address:#x}",
                              self.env.docname)]


# --- sequence diagrams --------------------------------------------------------

#: Geometry of a sequence diagram, in SVG user units (pixels).
COLUMN = 128          # between two lifelines
HEADER = 46           # the participants' boxes
STEP = 40             # one message below the last
CHAR = 6.2            # the width of a character of the labels, roughly
BOLD_CHAR = 7.2       # ... and of the participants' names, in bold
#: A label may be wider than the arrow it names, up to this many columns.
LABEL_COLUMNS = 2.3
FONT = 11
MESSAGE = re.compile(r"^\s*([\w.]+)\s*(-->|->)\s*([\w.]+)\s*:\s*(.+?)\s*$")
PARTICIPANT = re.compile(r"^\s*participant\s+([\w.]+)\s*:\s*(.+?)\s*$")


def svg_text(x: float, y: float, lines: list[str], anchor: str = "middle",
             weight: str = "normal") -> str:
    spans = "".join(f'<tspan x="{x:.0f}" dy="{0 if i == 0 else FONT + 2}">'
                    f"{html.escape(line)}</tspan>" for i, line in enumerate(lines))
    return (f'<text x="{x:.0f}" y="{y:.0f}" text-anchor="{anchor}" font-weight="{weight}" '
            f'font-size="{FONT}" fill="currentColor">{spans}</text>')


def sequence_svg(participants: list[tuple[str, str]],
                 messages: list[tuple[str, str, str, bool]]) -> str:
    """An SVG sequence diagram: participants left to right, messages top to
    bottom; a dashed arrow is an answer, an arrow to itself a step inside."""
    column = {name: index for index, (name, _) in enumerate(participants)}
    x = {name: COLUMN / 2 + index * COLUMN for name, index in column.items()}
    layout: list[tuple[str, str, list[str], bool, float]] = []
    y = HEADER + 16
    width = COLUMN * len(participants)
    for source, target, text, answer in messages:
        span = max(abs(column[target] - column[source]), LABEL_COLUMNS)
        lines = wrap(text, int(span * COLUMN / CHAR) - 2)
        y += (len(lines) - 1) * (FONT + 2) + (STEP if source != target else STEP + 10)
        layout.append((source, target, lines, answer, y))
    height = y + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height:.0f}" '
             f'width="100%" style="max-width:{width}px" role="img" font-family="sans-serif">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
             'fill="currentColor"/></marker></defs>']
    for name, label in participants:
        left = x[name] - COLUMN / 2 + 4
        parts.append(f'<rect x="{left:.0f}" y="2" width="{COLUMN - 8}" height="{HEADER - 8}" '
                     'rx="4" fill="none" stroke="currentColor" stroke-width="1"/>')
        lines = wrap(label, int((COLUMN - 12) / BOLD_CHAR))[:3]
        top = 2 + (HEADER - 8) / 2 - (len(lines) - 1) * (FONT + 2) / 2 + FONT / 2 - 1
        parts.append(svg_text(x[name], top, lines, weight="bold"))
        parts.append(f'<line x1="{x[name]:.0f}" y1="{HEADER - 6}" x2="{x[name]:.0f}" '
                     f'y2="{height - 4:.0f}" stroke="currentColor" stroke-opacity="0.35" '
                     'stroke-dasharray="3 3"/>')
    for source, target, lines, answer, y in layout:
        dash = ' stroke-dasharray="5 3"' if answer else ""
        label_top = y - 6 - (len(lines) - 1) * (FONT + 2)
        if source == target:   # a step inside one participant: a loop to its right
            left = x[source]
            parts.append(f'<path d="M {left:.0f} {y - 10:.0f} h 22 v 14 h -20" fill="none" '
                         f'stroke="currentColor"{dash} marker-end="url(#arrow)"/>')
            label_left = min(left + 28, width - max(len(line) for line in lines) * CHAR - 4)
            parts.append(svg_text(label_left, label_top - 6, lines, anchor="start"))
            continue
        start, end = x[source], x[target]
        step = 4 if end > start else -4
        parts.append(f'<line x1="{start:.0f}" y1="{y:.0f}" x2="{end - step:.0f}" y2="{y:.0f}" '
                     f'stroke="currentColor"{dash} marker-end="url(#arrow)"/>')
        half = max(len(line) for line in lines) * CHAR / 2 + 4   # keep the label inside
        centre = min(max((start + end) / 2, half), width - half)
        parts.append(svg_text(centre, label_top, lines))
    parts.append("</svg>")
    return "".join(parts)


class SequenceDiagram(SphinxDirective):
    """``.. sequence-diagram::`` — who calls whom, in order.

    Content lines: ``participant NAME: its label`` (left to right, in
    order), then messages ``A -> B: what`` (a call or an event) and
    ``A --> B: what`` (an answer, dashed); ``A -> A: what`` is a step
    inside A.  ``:alt:`` describes the picture for screen readers."""
    has_content = True
    option_spec = {"alt": directives.unchanged_required}

    def run(self) -> list[nodes.Node]:
        participants: list[tuple[str, str]] = []
        messages: list[tuple[str, str, str, bool]] = []
        for line in self.content:
            if not line.strip():
                continue
            if match := PARTICIPANT.match(line):
                participants.append((match.group(1), match.group(2)))
            elif match := MESSAGE.match(line):
                source, arrow, target, text = match.groups()
                messages.append((source, target, text, arrow == "-->"))
            else:
                raise self.error(f"sequence-diagram: cannot read {line!r}: expected "
                                 "'participant NAME: label', 'A -> B: text' or 'A --> B: text'")
        known = {name for name, _ in participants}
        for source, target, _, _ in messages:
            for name in (source, target):
                if name not in known:
                    raise self.error(f"sequence-diagram: {name!r} is not a participant "
                                     f"(declare it: 'participant {name}: label')")
        svg = sequence_svg(participants, messages)
        alt = html.escape(self.options.get("alt", "a sequence diagram"), quote=True)
        return [nodes.raw("", f'<figure class="sequence-diagram" aria-label="{alt}">'
                              f"{svg}</figure>", format="html")]


def setup(app: Sphinx) -> dict[str, object]:
    app.setup_extension("sphinx.ext.graphviz")
    app.add_directive("layer-map", LayerMap)
    app.add_directive("memory-map", MemoryMap)
    app.add_directive("page-walk", PageWalk)
    app.add_directive("sequence-diagram", SequenceDiagram)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
