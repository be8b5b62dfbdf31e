from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.inprocess import Shop, build


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    return build(tmp_path)
