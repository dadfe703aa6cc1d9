"""Layer 7 — observing a guest: the pieces of a sampling profiler (flame graphs).

It sits beside snapshots and debugging because a sampler reads a whole
thread's state (RIP, the RBP chain through the process's own record of
mappings) from outside, as they do.  So far it holds the pure parts: the
frame-pointer walk over a memory-reading callable
(:mod:`minikvm.observe.stack_walk`), its addresses as function names
(:mod:`minikvm.observe.names`), collapsed stacks
(:mod:`minikvm.observe.folded`), the flame graph SVG
(:mod:`minikvm.observe.svg`) and the speedscope file
(:mod:`minikvm.observe.speedscope`); the sampler that interrupts KVM_RUN
and the ``--flamegraph`` option come on top of them.

See docs/explanation/layout.md for the layer map."""
