"""Layer 3 — a running guest machine: the address space, the run loop, crash reports.

See docs/explanation/layout.md for the layer map."""
