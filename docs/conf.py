"""Sphinx configuration for the minikvm docs (Diátaxis: tutorials, how-to
guides, reference, explanation).  Built strictly in CI:

    python -m sphinx -n -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))          # minikvm itself, for autodoc
sys.path.insert(0, str(DOCS / "_ext"))  # our own extension

project = "minikvm"
author = "the minikvm authors"
copyright = "the minikvm authors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "minikvm_reference",  # docs/_ext: API pages and the ioctl/struct tables, from the code
    "syscall_matrix",     # docs/_ext: the system-call support matrix, from minikvm.syscalls.table
    "minikvm_diagrams",   # docs/_ext: layer map, memory map, page walk, sequence diagram
    "benchmark_report",   # docs/_ext: the performance table and chart, from a benchmark JSON
]

# Diagrams are drawn by Graphviz's `dot` (Debian: apt-get install graphviz)
# at build time, as SVG: sharp at any size, and its boxes are links.
graphviz_output_format = "svg"

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = "minikvm"

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # so pages can link to #sections of other pages

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
autodoc_typehints = "signature"
# No intersphinx (the build needs no network).  Python references that name
# a real but undocumented object (os.PathLike, a module constant) become
# plain text; see docs/_ext/minikvm_reference.py.  Names that exist nowhere
# still fail the build.
