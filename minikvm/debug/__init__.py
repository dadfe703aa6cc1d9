"""Layer 7 — debugging a guest with gdb: the GDB remote serial protocol.

It sits beside snapshots because a stub reads and writes a whole
process's state (registers of every thread, its memory through its own
record of mappings) as a snapshot does.  So far it holds the protocol's
framing (:mod:`minikvm.debug.packets`) and the check of the ``--gdb``
address (:mod:`minikvm.debug.address`); the stub that serves a session
comes on top of them.

See docs/explanation/layout.md for the layer map."""
