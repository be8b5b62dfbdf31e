"""A role's life in its worker process: what starts once the worker serves, what stops when it
exits, and whether it is draining. gunicorn_conf calls `start` and `stop` from the worker's
hooks, so nothing runs at import time and nothing relies on atexit; tests call them by hand."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from flask import Flask

logger = logging.getLogger(__name__)

# Set when the process is asked to stop (SIGTERM): /readyz turns 503 so no new work comes in
# while in-flight requests finish, and the outbox relay claims nothing new.
DRAINING = threading.Event()

_KEY = "cqrs.lifecycle"


def _hooks(app: Flask) -> dict[str, list[Callable[[], None]]]:
    return app.extensions.setdefault(_KEY, {"start": [], "stop": []})


def on_start(app: Flask, hook: Callable[[], None]) -> None:
    _hooks(app)["start"].append(hook)


def on_stop(app: Flask, hook: Callable[[], None]) -> None:
    _hooks(app)["stop"].append(hook)


def start(app: Flask) -> None:
    for hook in _hooks(app)["start"]:
        hook()


def stop(app: Flask) -> None:
    """Every stop hook, last registered first; one failing does not skip the others."""
    for hook in reversed(_hooks(app)["stop"]):
        try:
            hook()
        except Exception:
            logger.exception("stop hook %s failed", getattr(hook, "__qualname__", hook))
