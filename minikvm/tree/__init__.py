"""Layer 7 — the process tree: many guest processes in one sandbox.

A guest process is a host process with a VM of its own (:mod:`~minikvm.tree.fork`);
the sandbox's processes find each other in a shared table
(:mod:`~minikvm.tree.table`), learn how their children ended from the host
(:mod:`~minikvm.tree.wait`), and end together when the first one ends
(:mod:`~minikvm.tree.family`).  See docs/explanation/processes.md.
"""
