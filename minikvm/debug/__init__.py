"""Layer 7 — debugging a guest with gdb: ``minikvm run --gdb HOST:PORT``.

It sits beside snapshots because a stub reads and writes a whole
process's state (registers of every thread, its memory through its own
record of mappings) as a snapshot does.  From the wire up:
:mod:`~minikvm.debug.packets` (framing), :mod:`~minikvm.debug.address`
(where it may listen), :mod:`~minikvm.debug.target` (the registers gdb
is told of), :mod:`~minikvm.debug.registers` (a thread's registers as
bytes), :mod:`~minikvm.debug.memory` (the debugger's memory access),
:mod:`~minikvm.debug.signals` (gdb's signal numbers),
:mod:`~minikvm.debug.stub` (the commands) and
:mod:`~minikvm.debug.session` (where the program stops and how it goes on).

See docs/explanation/layout.md for the layer map."""
