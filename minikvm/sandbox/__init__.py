"""Layer 4 — what the program may do: the policy, openat2, and the host's walls (Landlock, seccomp).

See docs/explanation/layout.md for the layer map."""
