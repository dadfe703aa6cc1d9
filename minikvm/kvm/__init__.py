"""Layer 1 — KVM itself: one class per file descriptor (system, VM, vCPU), guest memory, typed exits.

See docs/explanation/layout.md for the layer map."""
