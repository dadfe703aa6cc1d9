"""Layer 7 — a run's samples written as a flame graph (``--flamegraph FILE``).

The file's suffix chooses the format: ``.svg`` an interactive flame graph
(:mod:`minikvm.observe.svg`), ``.folded`` collapsed stacks
(:mod:`minikvm.observe.folded`), ``.json`` a speedscope profile
(:mod:`minikvm.observe.speedscope`).  The suffix is checked before the
program starts (:func:`check_output_path`), so a typo costs no run.

Names come from the program's own symbol table (``.symtab``) and, for a
dynamic program, from those of the libraries it mapped and of its
interpreter (:mod:`minikvm.observe.libraries`); an address in none of them
is ``[unknown]`` — still counted under the frame that called into it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from minikvm.observe.folded import count_stacks, format_folded
from minikvm.observe.libraries import library_tables
from minikvm.observe.names import stack_names
from minikvm.observe.sampler import IN_HOST
from minikvm.observe.speedscope import format_speedscope
from minikvm.observe.svg import format_svg
from minikvm.syscalls.table import TABLE_BY_NUMBER

if TYPE_CHECKING:
    from minikvm.observe.sampler import Sampler

#: File suffix -> what is written.
FORMATS = {".svg": "an interactive flame graph", ".folded": "collapsed stacks",
           ".json": "a speedscope profile"}


def check_output_path(text: str) -> Path:
    """``--flamegraph FILE``: a known suffix, in a directory that exists."""
    path = Path(text)
    if path.suffix not in FORMATS:
        choices = ", ".join(f"{suffix} ({what})" for suffix, what in FORMATS.items())
        raise ValueError(f"{text!r} has no suffix minikvm writes: use {choices}")
    if not path.parent.is_dir():
        raise ValueError(f"{text!r}: the directory {str(path.parent)!r} does not exist")
    return path


def syscall_frame(number: int) -> str:
    """The frame a sample taken while the host handled system call *number*
    gets; ``[minikvm]`` for one in the host outside any system call."""
    if number == IN_HOST:
        return "[minikvm]"
    entry = TABLE_BY_NUMBER.get(number)
    return f"[syscall {entry.name if entry is not None else number}]"


def stack_counts(sampler: Sampler) -> Counter[tuple[str, ...]]:
    """Samples per stack of function names, outermost first."""
    tables = [sampler.proc.image.symbols, *library_tables(sampler.proc)]
    stacks = []
    for pcs, syscall in sampler.samples:
        names = stack_names(pcs, tables)
        if syscall is not None:
            names.append(syscall_frame(syscall))
        stacks.append(names)
    return count_stacks(stacks)


def write_flamegraph(path: Path, stream: TextIO, sampler: Sampler, title: str) -> str:
    """Write *sampler*'s samples to *stream*, in the format *path*'s suffix
    names (the file was opened before the sandbox's walls went up); a
    one-line summary for stderr."""
    counts = stack_counts(sampler)
    if path.suffix == ".svg":
        text = format_svg(counts, title)
    elif path.suffix == ".folded":
        text = format_folded(counts)
    else:
        text = format_speedscope(counts, title, sampler.hz)
    stream.write(text)
    return (f"minikvm: flame graph: {len(sampler.samples)} samples at {sampler.hz} Hz "
            f"written to {path}")
