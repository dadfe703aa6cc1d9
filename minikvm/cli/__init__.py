"""Layer 8 — the command line: run, serve, snapshot, doctor.

See docs/explanation/layout.md for the layer map."""
