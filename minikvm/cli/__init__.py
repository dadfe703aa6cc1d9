"""Layer 8 — the command line: run, serve, snapshot, doctor.

See docs/explanation/layout.md for the layer map."""

#: minikvm's version: its one definition (pyproject.toml reads it from
#: here, ``minikvm --version`` prints it).
__version__ = "0.1.0"
