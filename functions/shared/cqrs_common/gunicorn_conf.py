"""gunicorn settings for every role, in the container and under `make run` alike.

One worker process with 8 threads: the roles spend their time waiting on HTTP and the store,
so threads give concurrency without a process (and its memory) per request; Knative's
containerConcurrency is 8 to match, and it scales out with more pods instead of more workers.
"""

import os
import signal

from cqrs_common.limits import worker_threads

bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
threads = worker_threads()  # 8 (cqrs_common.limits.WORKER_THREADS)
# HTTP/1.1 by h11, each request read whole by the worker's event loop before one of its threads
# takes it: a slow or silent client cannot hold the 8 threads (cqrs_common.gunicorn_worker).
worker_class = "cqrs_common.gunicorn_worker.H11Worker"
# The master imports and builds the app, then forks the worker, which shares those pages with it
# instead of importing everything a second time: about 2 MiB less PSS per role (make bench). The
# worker still starts the relay itself (post_worker_init); pre_fork closes what the master opened.
preload_app = True
# No worker timeout (Knative's own request timeout applies), as the Knative Python samples do.
timeout = 0
# In-flight requests get this long after SIGTERM, inside Kubernetes' 30 s grace period.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "20"))
# Longer than the idle timeout of queue-proxy and Envoy, so they close idle connections first.
keepalive = 75
accesslog = None  # each role logs one JSON line per request itself
# gunicorn still builds its access-log fields for every request when logconfig_dict is set,
# only to drop them: about 5% of a role's CPU under load (make bench, py-spy).
logger_class = "cqrs_common.gunicorn_logging.NoAccessLogger"
# gunicorn 25+ opens a control socket in $HOME by default: nothing here uses it, the six roles
# of `make run` would all claim the same path, and its thread is memory in every master.
control_socket_disable = True
errorlog = "-"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "cqrs_common.logs.JsonFormatter",
            "role": os.environ.get("K_SERVICE", os.environ.get("CQRS_ROLE", "gunicorn")),
        }
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stdout",
        }
    },
    "root": {"handlers": ["stdout"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
    },
}


def on_starting(server) -> None:
    """Two malloc arenas (below); and, under `make run`, stop when the supervisor is gone."""
    _limit_malloc_arenas()
    _watch_lifeline()


def _watch_lifeline() -> None:
    """Under devtools.stack, fd CQRS_SUPERVISOR_FD is the read end of a pipe only the
    supervisor can write to: it reads end-of-file when the supervisor exits, however it exits
    (SIGKILL included), and this master then stops as on SIGTERM, workers and all."""
    import threading

    fd = os.environ.get("CQRS_SUPERVISOR_FD", "")
    if not fd.isdigit():
        return

    def watch() -> None:
        try:
            while os.read(int(fd), 64):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-lifeline", daemon=True).start()


def _limit_malloc_arenas() -> None:
    """Two malloc arenas, as MALLOC_ARENA_MAX=2 would give, set before any thread exists.

    glibc gives threads that allocate at once arenas of their own (up to 8 per core) and keeps
    what each frees; with 8 request threads and the relay's senders that was about 2 MiB more
    PSS per role (make bench). The GIL serialises Python's allocations anyway.
    """
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        ctypes.CDLL(None).mallopt(-8, 2)  # M_ARENA_MAX


def pre_fork(server, worker) -> None:
    """In the master, just before it forks a worker: no store connection may cross the fork
    (cqrs_common.db.close_all), and what the master built is frozen out of the collector, whose
    passes would otherwise write to every shared object and copy its page into the worker."""
    import gc

    from cqrs_common import db

    db.close_all()
    gc.freeze()


def _flask_app(worker):
    """The role's Flask app inside the worker (the worker wraps it), or None: in the master,
    or when the app failed to load."""
    from flask import Flask

    app = getattr(worker, "wsgi", None)
    app = getattr(app, "__wrapped__", app)
    return app if isinstance(app, Flask) else None


def post_worker_init(worker) -> None:
    """Start what the app runs beside its requests (order-db's outbox relay), and on SIGTERM turn
    not-ready first; gunicorn then finishes in-flight requests and exits."""
    from cqrs_common import lifecycle

    app = _flask_app(worker)
    if app is not None:
        lifecycle.start(app)
    stop = signal.getsignal(signal.SIGTERM)

    def drain(signum: int, frame) -> None:
        lifecycle.DRAINING.set()
        if callable(stop):
            stop(signum, frame)

    signal.signal(signal.SIGTERM, drain)


def worker_exit(server, worker) -> None:
    """The worker is leaving (after its last request): stop what `post_worker_init` started.
    gunicorn also calls this in the master for a worker that vanished: it has no app there."""
    from cqrs_common import lifecycle

    app = _flask_app(worker)
    if app is not None:
        lifecycle.stop(app)
