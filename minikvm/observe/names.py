"""Layer 7 — a sampled stack's addresses as function names, outermost first.

A flame graph merges samples by function, so a frame is the bare symbol
name (``hot_a``, not ``hot_a+17``).  The first address is where the CPU
was; each later one is a return address, which points just *after* a
call — past the end of the caller when the call was its last instruction
(a ``noreturn`` callee) — so it is looked up one byte earlier, as perf
and gdb do.  An address no table covers becomes ``[unknown]``, the name
flamegraph.pl gives it, so such samples still count in their caller.
"""

from __future__ import annotations

from collections.abc import Sequence

from minikvm.process.symbols import SymbolTable

UNKNOWN = "[unknown]"


def function_at(address: int, tables: Sequence[SymbolTable]) -> str:
    """The name of the function covering *address* in the first table that has one."""
    for table in tables:
        found = table.lookup(address)
        if found is not None:
            return found[0].name
    return UNKNOWN


def stack_names(pcs: Sequence[int], tables: Sequence[SymbolTable]) -> list[str]:
    """*pcs* (innermost first, as :func:`~minikvm.observe.stack_walk.walk_frames`
    gives them) as function names, outermost first."""
    names = [function_at(pc if depth == 0 else pc - 1, tables)
             for depth, pc in enumerate(pcs)]
    names.reverse()
    return names
