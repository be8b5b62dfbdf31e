"""The `images` marker: tests that build and run a real container image (make test-images)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "images: builds a role's image with a real container engine (minutes, root)"
    )
