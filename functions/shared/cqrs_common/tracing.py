"""OpenTelemetry traces, configured only by the standard OTEL_* variables: one order is one trace
from the dispatcher to stats-order-db, the outbox's asynchronous hop included.

With no exporter endpoint set, nothing of OpenTelemetry is imported and every helper here is a
no-op costing a flag test: cold start is a target. Then only the incoming trace headers are
passed on (cqrs_common.client does that), so a mesh's spans still join.

Two contexts travel with an event, and they are different things:
- the HTTP `traceparent`/`tracestate` headers: the transport hop (the sender's client span);
- the CloudEvents Distributed Tracing extension (`traceparent`/`tracestate` attributes, in
  binary mode the `ce-traceparent`/`ce-tracestate` headers): where the event was created,
  stored with the outbox row and unchanged by redeliveries. The relay's delivery span continues
  it, since nothing else in the relay's thread says which order it serves.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

TRACE_EXTENSIONS = ("traceparent", "tracestate")
# Probes and scrapes every few seconds would be most of the spans and say nothing.
EXCLUDED_URLS = "/healthz$,/readyz$,/metrics$"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_TRUE = frozenset({"true", "1", "yes", "on"})

_provider: Any = None  # the SDK's TracerProvider once configure() turned tracing on
_tracer: Any = None


def enabled() -> bool:
    return _provider is not None


def wanted(env: Mapping[str, str]) -> bool:
    """Whether the OTEL_* variables ask for traces to be exported."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    if "none" in exporters or "otlp" not in exporters:
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure(role: str) -> bool:
    """Export spans over OTLP/HTTP (protobuf) when the process's OTEL_* variables say so; True if
    on. Everything else is the SDK's reading of the standard variables (endpoint, headers,
    timeout, sampler, resource attributes); the one default of ours: service.name is the Knative
    Service name (`cqrs-<role>`) unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES names one.
    Idempotent: a process has one provider (the first call wins). Calls out get CLIENT spans from
    OpenTelemetry's urllib3 instrumentation (cqrs_common.transport uses urllib3)."""
    global _provider, _tracer
    if _provider is not None or not wanted(os.environ):
        return _provider is not None
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: f"cqrs-{role}"}))
    provider = TracerProvider(resource=resource)
    # Batched, off the request path; the SDK re-creates its thread in a forked gunicorn worker.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    URLLib3Instrumentor().instrument(tracer_provider=provider)
    _provider = provider
    _tracer = provider.get_tracer("cqrs_common")
    return True


def shutdown() -> None:
    """Send what is buffered (at exit; gunicorn's worker_exit hook)."""
    if _provider is not None:
        _provider.shutdown()


def force_flush(timeout_ms: int = 5000) -> None:
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def instrument_app(app: Any) -> None:
    """Server spans for every request of a Flask app, parented by the incoming traceparent."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor().instrument_app(
        app, tracer_provider=_provider, excluded_urls=EXCLUDED_URLS, enable_commenter=False
    )


def event_trace_attributes() -> dict[str, str]:
    """The current trace context as CloudEvents Distributed Tracing attributes, to store with the
    event (the outbox row) and set as its extensions. With tracing off, the served request's
    own traceparent/tracestate (a mesh's), so the event still names its origin; else {}."""
    if _tracer is not None:
        from opentelemetry import propagate

        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return {k: v for k, v in carrier.items() if k in TRACE_EXTENSIONS}
    return _request_trace_headers()


def served_headers(names: Iterable[str]) -> dict[str, str]:
    """Those headers of the request being served, if one is (outside a request: none)."""
    try:
        from flask import has_request_context, request
    except ImportError:  # pragma: no cover - flask is always there in the roles
        return {}
    if not has_request_context():
        return {}
    # Straight from the WSGI environ: Werkzeug's header view scans the environ per lookup, and
    # every call out asks for nine names (about 2 % of a role's CPU in make bench's profile).
    environ = request.environ
    found = {}
    for name in names:
        value = environ.get(_environ_key(name))
        if value is not None:
            found[name] = value
    return found


@functools.cache
def _environ_key(name: str) -> str:
    return "HTTP_" + name.upper().replace("-", "_")


def _request_trace_headers() -> dict[str, str]:
    found = served_headers(TRACE_EXTENSIONS)
    if "traceparent" not in found or not _TRACEPARENT.match(found["traceparent"]):
        return {}
    return found


def event_attributes(event: Any) -> dict[str, str]:
    """The Distributed Tracing attributes of a CloudEvent (SDK v2 event) or of a mapping."""
    if isinstance(event, Mapping):
        values = {name: event.get(name) for name in TRACE_EXTENSIONS}
    else:
        values = {name: event.get_extension(name) for name in TRACE_EXTENSIONS}
    return {name: str(value) for name, value in values.items() if value}


def context_from_event(event: Any) -> Any:
    """The OTel Context an event's traceparent/tracestate name; None when off or absent."""
    if _tracer is None:
        return None
    attributes = event_attributes(event)
    if "traceparent" not in attributes:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(attributes)


@contextlib.contextmanager
def continue_from_event(event: Any, name: str, kind: str = "PRODUCER") -> Iterator[Any]:
    """A span that carries on an event's stored trace: its child where nothing is being traced
    (the relay's thread), else a span of the current trace with a link to the event's origin.
    Yields the span (None when off). `kind` names an OTel SpanKind."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import trace

    origin = context_from_event(event)
    span_kind = trace.SpanKind[kind]
    current = trace.get_current_span().get_span_context()
    origin_span = trace.get_current_span(origin).get_span_context() if origin else None
    if origin_span is not None and not origin_span.is_valid:
        origin_span = None
    attributes = _event_span_attributes(event)
    if current.is_valid or origin_span is None:
        links = [trace.Link(origin_span)] if origin_span is not None else []
        with _tracer.start_as_current_span(
            name, kind=span_kind, links=links, attributes=attributes
        ) as span:
            yield span
    else:
        with _tracer.start_as_current_span(
            name, context=origin, kind=span_kind, attributes=attributes
        ) as span:
            yield span


@contextlib.contextmanager
def batch_span(events: Sequence[Any], name: str) -> Iterator[Any]:
    """A PRODUCER span for sending several events in one request: a span of its own, linked to
    each event's stored trace (as OTel's messaging conventions do for a batch). None when off."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import trace

    links = []
    for event in events:
        origin = context_from_event(event)
        span_context = trace.get_current_span(origin).get_span_context() if origin else None
        if span_context is not None and span_context.is_valid:
            links.append(trace.Link(span_context))
    attributes = {"messaging.batch.message_count": len(events)}
    with _tracer.start_as_current_span(
        name, kind=trace.SpanKind.PRODUCER, links=links, attributes=attributes
    ) as span:
        yield span


def link_event(event: Any) -> None:
    """On the current (server) span: the event's id and type, and a link to where the event was
    created when that is another span than the HTTP hop's parent (a relayed, replayed event)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    for key, value in _event_span_attributes(event).items():
        span.set_attribute(key, value)
    origin = context_from_event(event)
    if origin is None:
        return
    origin_span = trace.get_current_span(origin).get_span_context()
    parent = getattr(span, "parent", None)  # the SDK span's parent SpanContext
    if origin_span.is_valid and (parent is None or parent.span_id != origin_span.span_id):
        span.add_link(origin_span, {"cqrs.link": "event origin"})


def _event_span_attributes(event: Any) -> dict[str, str]:
    if isinstance(event, Mapping):
        return {}
    out = {"cloudevents.event_id": event.get_id(), "cloudevents.event_type": event.get_type()}
    subject = event.get_subject()
    if subject:
        out["cloudevents.event_subject"] = subject
    return out


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of what is being served now, for log lines: the active span
    when tracing is on, else the served request's traceparent header; None outside both."""
    if _tracer is not None:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            return f"{context.trace_id:032x}", f"{context.span_id:016x}"
    parent = _request_trace_headers().get("traceparent")
    if parent is None:
        return None
    match = _TRACEPARENT.match(parent)
    return (match.group(1), match.group(2)) if match else None


class TraceIdFilter(logging.Filter):
    """Puts `trace_id` and `span_id` on every record logged while a request or span is served;
    attach it to the role's log handler (the JSON formatter then needs both in its FIELDS)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "trace_id", None) is None:
            ids = current_ids()
            if ids is not None:
                record.trace_id, record.span_id = ids
        return True
