from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask

from tests.unit.inprocess import Router, build


@pytest.fixture
def shop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dict[str, Flask], Router]]:
    apps, router = build(tmp_path)
    original = requests.Session.get_adapter

    def get_adapter(self: requests.Session, url: str):
        return router if ".test" in url.split("/")[2] else original(self, url)

    monkeypatch.setattr(requests.Session, "get_adapter", get_adapter)
    yield apps, router
