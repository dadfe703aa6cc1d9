"""Shared test fixtures.

Tests that boot a guest are marked ``@pytest.mark.kvm``; where ``/dev/kvm``
cannot be opened they are skipped with one reason, and the pure tests
(encoders, parsers) still run.
"""

from __future__ import annotations

import os

import pytest


def kvm_unusable_reason() -> str:
    """Why /dev/kvm cannot be used here, or "" when it can."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist on this machine (no KVM)"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user (join the kvm group)"
    return ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = kvm_unusable_reason()
    if not reason:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "kvm" in item.keywords:
            item.add_marker(skip)
