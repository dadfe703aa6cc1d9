"""Layer 7 — snapshots: frozen memory and CPU state, fork, reset, snapshot files.

See docs/explanation/layout.md for the layer map."""
