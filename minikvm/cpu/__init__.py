"""Layer 2 — what the guest CPU needs: modes, descriptors (GDT, IDT, TSS), the memory map, guest code.

See docs/explanation/layout.md for the layer map."""
