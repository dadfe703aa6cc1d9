"""C guests written for minikvm's own APIs (``include/minikvm.h``).

:func:`guest` builds one like :func:`tests.programs.build.program` does the
plain test programs: once per session, cached, skipped when no compiler.
"""

from __future__ import annotations

import functools
from pathlib import Path

from tests.programs.build import DEFAULT_BUILD_DIR, build

GUEST_DIR = Path(__file__).resolve().parent


@functools.cache
def guest(name: str, variant: str = "glibc-static") -> Path:
    """The executable of ``tests/guests/<name>.c`` as *variant*."""
    return build(GUEST_DIR / f"{name}.c", DEFAULT_BUILD_DIR, variant)


HOSTILE_DIR = GUEST_DIR.parent / "hostile"


@functools.cache
def hostile_guest(name: str, variant: str = "glibc-static") -> Path:
    """The executable of ``tests/hostile/<name>.c``, a request handler that
    attacks the snapshot's reset, built where tests/test_hostile.py builds
    the other hostile programs."""
    return build(HOSTILE_DIR / f"{name}.c", DEFAULT_BUILD_DIR / "hostile", variant)
