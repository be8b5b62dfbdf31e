"""`make replay` against a shop that is not running, and against one that is."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from devtools.stack import free_port
from tests.cli.support import make, own_lines, python
from tests.support import json_server


@pytest.fixture(scope="module", autouse=True)
def bootstrapped() -> None:
    """The virtual environment make replay wants, set up first: its pip output is not replay's."""
    assert make("venv-run", timeout=600).returncode == 0


def test_make_replay_with_nothing_running_says_so_in_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = make("replay", f"REPLAY_URL={url}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert own_lines(result.stderr) == [
        f"make replay: nothing answers at {url}: start the shop with `make run`, or set REPLAY_URL"
    ], result.stderr


def test_replay_script_exits_1_without_a_traceback() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = python("-m", "devtools.replay", "--url", url)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def process_data() -> Iterator[tuple[str, list[str]]]:
    """A stand-in for process-data's POST /replay."""
    seen: list[str] = []
    with json_server(json.dumps({"replayed": 3}).encode(), lambda h: seen.append(h.path)) as url:
        yield url, seen


def test_make_replay_asks_process_data_at_replay_url(process_data) -> None:
    url, seen = process_data
    result = make("replay", f"REPLAY_URL={url}/")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"replayed": 3}
    assert seen == ["/replay"]
