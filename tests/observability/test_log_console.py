"""devtools.logs: one short line per request for the terminal, followed files, and
the trace id on every line of a request."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from flask import Flask

from cqrs_common import tracing
from devtools import logs as log_console
from tests.support import wait_for

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def test_a_request_line_is_short_and_names_the_trace() -> None:
    entry = {
        "timestamp": "2026-01-02T03:04:05.678+00:00", "severity": "INFO", "role": "order-db",
        "message": "POST / 200", "method": "POST", "path": "/", "status": 200,
        "duration_ms": 3.14, "ce_type": "com.example.cqrs.order.placed", "traceparent": PARENT,
    }  # fmt: skip
    line = log_console.compact_line(entry)
    assert line.endswith("order-db       POST / 200 3.1ms order.placed 4bf92f35")
    assert len(line.split()[0]) == len("03:04:05.678")
    assert log_console.compact_line({**entry, "trace_id": "f" * 32}).endswith("ffffffff")


def test_other_lines_keep_their_level_and_message_and_non_json_passes_through() -> None:
    line = log_console.render(
        json.dumps({"timestamp": "x", "severity": "WARNING", "message": "store down"}), "query"
    )
    assert "query" in line and line.endswith("WARNING store down")
    assert log_console.render("[INFO] Booting worker", "dispatcher").endswith(
        "dispatcher     [INFO] Booting worker"
    )


def test_follow_shows_new_lines_of_every_file(tmp_path: Path) -> None:
    paths = [log_console.log_path(tmp_path, role) for role in ("dispatcher", "order-db")]
    paths[0].parent.mkdir(parents=True)
    paths[0].write_text('{"message": "before"}\n')  # already there: not shown
    shown: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=log_console.follow, args=(paths, shown.append, stop), kwargs={"poll": 0.02}
    )
    thread.start()
    try:
        time.sleep(0.1)  # the follower has opened the file at its end
        with paths[0].open("a") as out:
            out.write('{"method": "GET", "path": "/order", "status": 200}\n{"mess')
        paths[1].write_text("started\n")  # a file that appears later
        wait_for(lambda: len(shown) >= 2 or None, timeout=5)
        with paths[0].open("a") as out:
            out.write('age": "done"}\n')  # the rest of a half-written line
        wait_for(lambda: len(shown) >= 3 or None, timeout=5)
    finally:
        stop.set()
        thread.join()
    assert not any("before" in s for s in shown)
    assert any("GET /order 200" in s for s in shown)
    assert any(s.endswith("started") for s in shown)
    assert any(s.endswith("INFO done") for s in shown)


def test_every_log_line_of_a_request_carries_its_trace_id() -> None:
    app = Flask("t")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(tracing.TraceIdFilter())
    log = logging.getLogger("cqrs.test.trace")
    log.addHandler(handler)
    try:
        with app.test_request_context(headers={"traceparent": PARENT}):
            log.warning("inside")
        log.warning("outside")
    finally:
        log.removeHandler(handler)
    assert records[0].trace_id == TRACE  # type: ignore[attr-defined]
    assert not hasattr(records[1], "trace_id")
