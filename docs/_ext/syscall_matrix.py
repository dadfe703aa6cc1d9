"""The system-call support matrix, generated from ``minikvm.syscalls.table``.

One directive, ``syscall-matrix``, renders the table every family module
declares (:data:`minikvm.syscalls.table.FAMILIES`): each system call's
number, name, family, status, and the note that says what is missing
(partial) or which errno it always fails with (refused).  With the
``:summary:`` flag it renders the count of each status per family instead.
The page never retypes a row, so it cannot disagree with the dispatcher.

Usage, in a MyST page::

    ```{syscall-matrix}
    :summary:
    ```

    ```{syscall-matrix}
    ```
"""

from __future__ import annotations

import errno

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

#: (heading, relative width) of the full table's columns.
COLUMNS = [("Number", 8), ("Name", 20), ("Family", 10), ("Status", 10), ("Notes", 52)]
STATUS_ORDER = ("supported", "partial", "refused")


def _entry(content: nodes.Node | str) -> nodes.entry:
    cell = nodes.entry()
    paragraph = nodes.paragraph()
    paragraph += content if isinstance(content, nodes.Node) else nodes.Text(content)
    cell += paragraph
    return cell


def _table(headings: list[tuple[str, int]], rows: list[list[nodes.Node | str]]) -> nodes.table:
    """A docutils table with a header row (built as nodes: no RST escaping
    of notes that happen to contain ``*`` or ``_``)."""
    table = nodes.table(classes=["syscall-matrix"])
    group = nodes.tgroup(cols=len(headings))
    table += group
    for _, width in headings:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    header = nodes.row()
    for title, _ in headings:
        header += _entry(title)
    head += header
    group += head
    body = nodes.tbody()
    for cells in rows:
        row = nodes.row()
        for cell in cells:
            row += _entry(cell)
        body += row
    group += body
    return table


def notes_of(entry) -> str:
    """What the Notes column says: the note, and for a refusal its errno."""
    if entry.status == "refused":
        name = errno.errorcode.get(entry.errno, str(entry.errno))
        return f"always fails with {name}" + (f": {entry.note}" if entry.note else "")
    return entry.note or "—"


class SyscallMatrix(SphinxDirective):
    """``syscall-matrix`` — every system call minikvm handles, by number."""
    has_content = False
    option_spec = {"summary": directives.flag}

    def run(self) -> list[nodes.Node]:
        from minikvm.syscalls.table import FAMILIES
        if "summary" in self.options:
            return [self._summary(FAMILIES)]
        rows: list[list[nodes.Node | str]] = []
        by_number = sorted((entry.number, family, entry)
                           for family, entries in FAMILIES.items() for entry in entries)
        for number, family, entry in by_number:
            rows.append([str(number), nodes.literal(text=entry.name), family, entry.status,
                         notes_of(entry)])
        return [_table(COLUMNS, rows)]

    @staticmethod
    def _summary(families: dict[str, list]) -> nodes.table:
        headings = [("Family", 20)] + [(status.capitalize(), 15) for status in STATUS_ORDER] \
            + [("Total", 15)]
        rows: list[list[nodes.Node | str]] = []
        totals = [0] * (len(STATUS_ORDER) + 1)
        for family, entries in families.items():
            counts = [sum(1 for e in entries if e.status == status) for status in STATUS_ORDER]
            counts.append(len(entries))
            totals = [a + b for a, b in zip(totals, counts)]
            rows.append([family, *(str(count) for count in counts)])
        rows.append([nodes.strong(text="all"), *(str(count) for count in totals)])
        return _table(headings, rows)


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("syscall-matrix", SyscallMatrix)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
