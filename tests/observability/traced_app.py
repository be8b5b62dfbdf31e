"""A stand-in role for the tracing tests, run as its own process (one TracerProvider each, as in
the shop): `python -m tests.observability.traced_app <role> <port>`, configured by OTEL_*.

POST /start  a server span that calls NEXT_URL/work and answers the event trace attributes
             an outbox row would store;
POST /deliver with stored attributes as JSON: later, in another thread with no request (the
             relay's), continue them and call NEXT_URL/work;
POST /work   a plain traced request.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from cqrs_common import tracing
from cqrs_common.client import Client


def call(url: str) -> int:
    """One POST through the shop's own client (its spans are the urllib3 instrumentation's)."""
    return Client(retries=0).request("POST", url, data=b"{}").status_code


def create_app(role: str) -> Flask:
    app = Flask(role)
    next_url = os.environ.get("NEXT_URL", "")

    @app.post("/start")
    def start() -> Any:
        status = call(f"{next_url}/work")
        return jsonify(status=status, stored=tracing.event_trace_attributes())

    @app.post("/deliver")
    def deliver() -> Any:
        stored = request.get_json()
        done: dict[str, Any] = {}

        def relay() -> None:
            with tracing.continue_from_event(stored, "send order.recorded"):
                done["status"] = call(f"{next_url}/work")
                done["ids"] = tracing.current_ids()

        worker = threading.Thread(target=relay)
        worker.start()
        worker.join()
        return jsonify(done)

    @app.post("/work")
    def work() -> Any:
        return jsonify(ids=tracing.current_ids())

    tracing.instrument_app(app)
    return app


def main() -> None:
    role, port = sys.argv[1], int(sys.argv[2])
    tracing.configure(role)
    server = make_server("127.0.0.1", port, create_app(role), threaded=True)

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    print(json.dumps({"ready": port, "tracing": tracing.enabled()}), flush=True)
    try:
        server.serve_forever()
    finally:
        tracing.shutdown()  # what is buffered goes out before the process ends


if __name__ == "__main__":
    main()
