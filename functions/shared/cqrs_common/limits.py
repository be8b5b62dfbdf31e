"""Limits on what a request may send, shared by the web layer and the gunicorn worker (which reads
requests before any app code is loaded, so this module imports nothing)."""

# A request body (JSON, a form or one CloudEvent) is never larger than this: 413 past it.
MAX_BODY_BYTES = 64 * 1024
# The request line and headers together; Envoy (Istio's sidecar, Knative's gateways) allows 60 KiB.
MAX_HEAD_BYTES = 64 * 1024
PROBLEM_JSON = "application/problem+json"
# An answer from another role is never larger than this (a page of the order log is far smaller):
# past it the answer is refused and its connection closed.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
