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


def setup(app: Sphinx) -> dict[str, object]:
    app.setup_extension("sphinx.ext.graphviz")
    app.add_directive("layer-map", LayerMap)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
