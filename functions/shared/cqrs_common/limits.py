"""Limits and facts shared by the web layer and the gunicorn worker (which reads requests before
any app code is loaded, so this module imports only os)."""

import os

# A request body (JSON, a form or one CloudEvent) is never larger than this: 413 past it.
MAX_BODY_BYTES = 64 * 1024
# The request line and headers together; Envoy (Istio's sidecar, Knative's gateways) allows 60 KiB.
MAX_HEAD_BYTES = 64 * 1024
# An answer from another role is never larger than this (a page of the order log is far smaller):
# past it the answer is refused and its connection closed.
MAX_ANSWER_BYTES = 8 * 1024 * 1024

# Every role serves with one gunicorn worker process of this many threads (GUNICORN_THREADS
# overrides it). Derived from it: each Knative Service's containerConcurrency (workers x threads,
# checked by tests/manifests) and order-db's relay, which keeps as many deliveries in flight as a
# receiver takes at once.
WORKER_THREADS = 8

# Set by the gunicorn worker in each request's environ: when the request had fully arrived
# (time.monotonic()), so the time it then waited for a thread counts against its budget.
ARRIVED_KEY = "cqrs.arrived"


def worker_threads() -> int:
    """The threads of this process's gunicorn worker (GUNICORN_THREADS, else WORKER_THREADS)."""
    return int(os.environ.get("GUNICORN_THREADS", WORKER_THREADS))
