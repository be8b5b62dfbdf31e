"""What every role's app has: problem+json errors, health, request logs, body limit, draining,
safe response headers, and the request's deadline (cqrs_common.deadline)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from cqrs_common import lifecycle, logs, metrics, problems, tracing
from cqrs_common.client import DeadlineExceededError, UpstreamError
from cqrs_common.cloudevents_io import BadEventError, UnsupportedEventModeError
from cqrs_common.config import Settings
from cqrs_common.db import StoreUnavailableError
from cqrs_common.deadline import Deadline
from cqrs_common.domain import ConflictError, ValidationError, reason_sentence
from cqrs_common.limits import ARRIVED_KEY, MAX_BODY_BYTES, worker_threads
from cqrs_common.problems import PROBLEM_JSON
from cqrs_common.roles import ROLES_BY_NAME

logger = logging.getLogger(__name__)

VALIDATION_PROBLEM = "urn:cqrs:problem:validation"
CONFLICT_PROBLEM = "urn:cqrs:problem:conflict"
BAD_EVENT_PROBLEM = "urn:cqrs:problem:bad-event"
UNAVAILABLE_PROBLEM = "urn:cqrs:problem:unavailable"
DEADLINE_PROBLEM = "urn:cqrs:problem:deadline"
AUTH_PROBLEM = "urn:cqrs:problem:caller"
PROBES = ("/healthz", "/readyz")
QUIET = (*PROBES, metrics.METRICS_PATH)
JSON_TYPES = ("application/json", PROBLEM_JSON)


class UnsupportedMediaType(Exception):
    """The body's content type is not one this route takes (415)."""


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    invalid_params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An RFC 9457 problem document (cqrs_common.problems)."""
    body = problems.document(status, title, detail, type_=type_, invalid_params=invalid_params)
    response = Response(body, status=status, mimetype=PROBLEM_JSON)
    response.headers.update(headers or {})
    return response


def validation_problem(exc: ValidationError) -> Response:
    detail = " ".join(reason_sentence(field, reason) for field, reason in exc.errors.items())
    return problem(
        400, "Invalid request", detail, type_=VALIDATION_PROBLEM, invalid_params=exc.errors
    )


def conflict_problem(detail: str) -> Response:
    """422, as the IETF Idempotency-Key draft answers a key reused with another request."""
    return problem(422, "Unprocessable Content", detail, type_=CONFLICT_PROBLEM)


def read_json_body() -> Any:
    """The request's JSON body with numbers kept exact (decimals, never floats)."""
    if not request.is_json:
        raise UnsupportedMediaType()
    try:
        return json.loads(request.get_data(cache=True), parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("body", "is not valid JSON") from None
    except RecursionError:
        raise ValidationError("body", "is nested too deeply") from None


def no_deadline() -> None:
    """Let the current request run past the role's budget (an operator's long job: replay)."""
    g.deadline = None


def create_base_app(
    settings: Settings,
    import_name: str,
    ready: Callable[[], None] | None = None,
) -> Flask:
    """A Flask app with the routes and handlers every role shares.

    `ready` raises when the role cannot serve (its store unreachable); /readyz then answers 503.
    """
    logs.configure(settings.role, settings.log_level)
    app = Flask(import_name)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["SETTINGS"] = settings
    _add_request_hooks(app, settings)
    _add_caller_check(app, settings)
    _add_probes(app, ready)
    _add_error_handlers(app)
    _add_telemetry(app, settings)
    return app


def _add_telemetry(app: Flask, settings: Settings) -> None:
    """Prometheus metrics always (GET /metrics); traces when the OTEL_* variables ask."""
    metrics.instrument(app, settings.role, threads=worker_threads())
    if tracing.configure(settings.role):
        tracing.instrument_app(app)
        lifecycle.on_stop(app, tracing.shutdown)  # send what is buffered before the exit


def _add_request_hooks(app: Flask, settings: Settings) -> None:
    access = logging.getLogger(f"cqrs.{settings.role}.access")

    @app.before_request
    def _start_clock() -> Response | None:
        g.started = time.perf_counter()
        g.deadline = Deadline.from_headers(
            request.headers, settings.request_timeout, request.environ.get(ARRIVED_KEY)
        )
        if g.deadline.expired() and request.path not in PROBES:
            # Its caller has given up by now: doing the work would only add to the load.
            return problem(
                503, "Deadline exceeded",
                "the request waited longer than its budget before it could start",
                type_=DEADLINE_PROBLEM, headers={"Retry-After": "1"},
            )  # fmt: skip
        return None

    @app.after_request
    def _finish(response: Response) -> Response:
        _secure_headers(response)
        if request.path in QUIET and response.status_code == 200:
            return response  # probes and scrapes every few seconds would drown the log
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        fields: dict[str, Any] = {
            "role": settings.role, "method": request.method, "path": request.path,
            "status": response.status_code, "duration_ms": round(elapsed * 1000, 2),
            "traceparent": request.headers.get("traceparent"), **g.get("log_fields", {}),
        }  # fmt: skip
        access.info("%s %s %s", request.method, request.path, response.status_code, extra=fields)
        return response


def _add_caller_check(app: Flask, settings: Settings) -> None:
    """With CQRS_AUTH=jwt, every request but probes and scrapes carries a token of a caller the
    topology allows (cqrs_common.auth); anything else is a 401 or 403 and changes nothing."""
    if not settings.auth.enabled:
        return
    from cqrs_common import auth  # PyJWT and cryptography: only where tokens are checked

    verifier = auth.verifier_for(settings.role, ROLES_BY_NAME[settings.role].service, settings.auth)
    if verifier is None:
        return  # a public role

    @app.before_request
    def _check_caller() -> Response | None:
        if request.path in auth.UNVERIFIED_PATHS:
            return None
        try:
            g.caller = verifier.verify(
                request.headers.get("Authorization"), write=auth.is_write(request.method)
            )
        except auth.AuthError as exc:
            logger.warning("refused caller: %s", exc.detail)
            title = "Unauthorized" if exc.status == 401 else "Forbidden"
            challenge = {"WWW-Authenticate": exc.www_authenticate} if exc.www_authenticate else {}
            return problem(exc.status, title, exc.detail, type_=AUTH_PROBLEM, headers=challenge)
        except auth.JwksError as exc:
            logger.warning("cannot check callers: %s", exc)
            return problem(503, "Service Unavailable", "cannot check the caller's token now",
                           type_=UNAVAILABLE_PROBLEM, headers={"Retry-After": "1"})  # fmt: skip
        return None


def _secure_headers(response: Response) -> None:
    """No browser guesses a type from the body; no cache keeps an answer about an order or the
    totals (they change, and may be one customer's); a redirect names a path, never a host:
    Werkzeug builds its own (a missing trailing slash) from the Host header, which the client
    chose, and the shop never sends anyone to another site."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype in JSON_TYPES:
        response.headers.setdefault("Cache-Control", "no-store")
    location = response.headers.get("Location")
    if location:
        target = urlsplit(location)
        if target.scheme or target.netloc:
            query = f"?{target.query}" if target.query else ""
            response.headers["Location"] = (target.path or "/") + query


def _add_probes(app: Flask, ready: Callable[[], None] | None) -> None:
    @app.get("/healthz")
    def healthz() -> Response:
        return Response('{"status":"alive"}', mimetype="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        if lifecycle.DRAINING.is_set():
            return problem(503, "Shutting down", type_=UNAVAILABLE_PROBLEM)
        if ready is not None:
            try:
                ready()
            except Exception as exc:  # any failure of the check means "not ready", with why
                return problem(503, "Not ready", str(exc), type_=UNAVAILABLE_PROBLEM)
        return Response('{"status":"ready"}', mimetype="application/json")


def _unavailable(detail: str) -> Response:
    return problem(
        503, "Service Unavailable", detail,
        type_=UNAVAILABLE_PROBLEM, headers={"Retry-After": "1"},
    )  # fmt: skip


def _bad_event(exc: BadEventError) -> Response:
    logger.warning("refused event: %s", exc, extra=g.get("log_fields", {}))
    status = 415 if isinstance(exc, UnsupportedEventModeError) else 400
    title = "Unsupported Media Type" if status == 415 else "Bad CloudEvent"
    return problem(status, title, str(exc), type_=BAD_EVENT_PROBLEM)


def upstream_status(exc: UpstreamError) -> int:
    """503 when the dependency certainly did nothing (a client may send the request again);
    504 when it may have acted: it timed out, or itself answered 504."""
    return 504 if isinstance(exc, DeadlineExceededError) or exc.status == 504 else 503


def _upstream(exc: UpstreamError) -> Response:
    if upstream_status(exc) == 504:
        logger.warning("outcome unknown: %s", exc)
        what = (
            "did not answer within the request's budget"
            if isinstance(exc, DeadlineExceededError)
            else "gave no answer that says what became of the request"
        )
        return problem(
            504, "Gateway Timeout",
            f"a dependency {what} ({exc.detail}); the request may have taken effect",
            type_=DEADLINE_PROBLEM,
        )  # fmt: skip
    logger.warning("upstream unavailable: %s", exc)
    return _unavailable(f"a dependency is unavailable ({exc.detail}); try again")


def _store(exc: StoreUnavailableError) -> Response:
    logger.warning("store unavailable: %s", exc)
    metrics.count_store_error(current_app.config["SETTINGS"].role)
    return problem(
        503, "Store unavailable", str(exc),
        type_=UNAVAILABLE_PROBLEM, headers={"Retry-After": "1"},
    )  # fmt: skip


def _http(exc: HTTPException) -> Response:
    status = exc.code or 500
    detail = exc.description
    if status == 413:
        detail = problems.BODY_TOO_LARGE
    allowed = getattr(exc, "valid_methods", None)
    headers = {"Allow": ", ".join(allowed)} if status == 405 and allowed else None
    return problem(status, exc.name, detail, headers=headers)


def _unexpected(exc: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.path)
    return problem(500, "Internal Server Error", "unexpected error; it has been logged")


def _add_error_handlers(app: Flask) -> None:
    handlers: dict[type[Exception], Callable[[Any], Response]] = {
        ValidationError: validation_problem,
        ConflictError: lambda exc: conflict_problem(str(exc)),
        BadEventError: _bad_event,
        UnsupportedMediaType: lambda exc: problem(
            415, "Unsupported Media Type", "send application/json"
        ),
        UpstreamError: _upstream,
        StoreUnavailableError: _store,
        HTTPException: _http,
        Exception: _unexpected,
    }
    for kind, handler in handlers.items():
        app.register_error_handler(kind, handler)
