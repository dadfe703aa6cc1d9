"""Layer 5 — a Linux program: its ELF image, initial stack, files, signal frames and threads.

See docs/explanation/layout.md for the layer map."""
