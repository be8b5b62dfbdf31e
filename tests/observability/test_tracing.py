"""cqrs_common.tracing: off costs nothing; on, one trace crosses processes and the outbox hop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from cqrs_common import tracing
from devtools.stack import free_port
from tests.observability.otlp_receiver import OtlpReceiver, ReceivedSpan

REPO = Path(__file__).resolve().parents[2]
SERVER, CLIENT, PRODUCER = 2, 3, 4  # OTLP span kinds


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "otlp"}, True),
    ],
)
def test_only_the_otel_variables_turn_export_on(env: dict[str, str], wanted: bool) -> None:
    assert tracing.wanted(env) is wanted


@pytest.mark.parametrize(
    ("env", "service", "team"),
    [
        ({}, "cqrs-dispatcher", None),
        ({"OTEL_RESOURCE_ATTRIBUTES": "team=a%2Cb,tier=web"}, "cqrs-dispatcher", "a,b"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=shop"}, "shop", None),
        ({"OTEL_SERVICE_NAME": "front", "OTEL_RESOURCE_ATTRIBUTES": "team=x"}, "front", "x"),
    ],
)
def test_the_resource_is_the_sdks_reading_of_the_variables(
    env: dict[str, str], service: str, team: str | None
) -> None:
    """As the SDK reads them (percent-decoded values, OTEL_SERVICE_NAME first); cqrs-<role> is
    the default service name only."""
    script = """
import json
from cqrs_common import tracing
assert tracing.configure("dispatcher")
print(json.dumps(dict(tracing._provider.resource.attributes)))
"""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean["PYTHONPATH"] = os.pathsep.join([str(REPO / "functions" / "shared"), str(REPO)])
    clean["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"  # nothing is exported
    out = subprocess.run(
        [sys.executable, "-c", script], env={**clean, **env}, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    attributes = json.loads(out.stdout)
    assert (attributes["service.name"], attributes.get("team")) == (service, team)


def test_off_imports_nothing_of_opentelemetry_and_every_helper_is_a_no_op() -> None:
    script = """
import sys, flask
from cqrs_common import tracing
assert not tracing.configure("dispatcher")
app = flask.Flask("x")
tracing.instrument_app(app)
stored = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
with tracing.continue_from_event(stored, "x") as s:
    assert s is None
mesh = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
with app.test_request_context(headers={"traceparent": mesh}):
    # a mesh's trace still reaches the event and the log lines
    assert tracing.event_trace_attributes() == {"traceparent": mesh}
    assert tracing.current_ids() == ("a" * 32, "b" * 16)
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "functions" / "shared"), str(REPO)])
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_event_attributes_read_sdk_events_and_mappings() -> None:
    from cloudevents.core.bindings.http import from_http_event, to_binary_event
    from cloudevents.core.v1.event import CloudEvent

    parent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    event = CloudEvent(
        attributes={"type": "t", "source": "/s", "traceparent": parent, "tracestate": "k=v"},
        data=None,
    )
    assert tracing.event_attributes(event) == {"traceparent": parent, "tracestate": "k=v"}
    # Binary mode: the extension is a ce- header, apart from the hop's own traceparent header.
    message = to_binary_event(event)
    assert message.headers["ce-traceparent"] == parent
    assert "traceparent" not in message.headers
    received = from_http_event(message)
    assert tracing.event_attributes(received)["traceparent"] == parent
    assert tracing.event_attributes({"traceparent": parent}) == {"traceparent": parent}


# -- on: three processes, one trace ------------------------------------------------------------


def _start(stack: ExitStack, role: str, env: dict[str, str]) -> str:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.observability.traced_app", role, str(port)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    stack.callback(process.wait, 10)
    stack.callback(process.terminate)
    assert process.stdout is not None
    line = json.loads(process.stdout.readline())
    assert line == {"ready": port, "tracing": True}
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def traced() -> Iterator[tuple[OtlpReceiver, dict[str, str]]]:
    with ExitStack() as stack:
        receiver = stack.enter_context(OtlpReceiver())
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(
            PYTHONPATH=os.pathsep.join([str(REPO / "functions" / "shared"), str(REPO)]),
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",  # ms: spans reach the receiver soon
        )
        beta = _start(stack, "beta", env)
        alpha = _start(stack, "alpha", {**env, "NEXT_URL": beta})
        relay = _start(stack, "relay", {**env, "NEXT_URL": beta})
        yield receiver, {"alpha": alpha, "beta": beta, "relay": relay}


def _one(spans: list[ReceivedSpan], service: str, kind: int) -> ReceivedSpan:
    found = [s for s in spans if s.service == service and s.kind == kind]
    assert len(found) == 1, (service, kind, spans)
    return found[0]


@pytest.mark.slow
def test_one_trace_crosses_processes_and_the_stored_event_hop(
    traced: tuple[OtlpReceiver, dict[str, str]],
) -> None:
    receiver, urls = traced
    answer = requests.post(f"{urls['alpha']}/start", timeout=10).json()
    assert answer["status"] == 200
    stored = answer["stored"]
    trace_id = stored["traceparent"].split("-")[1]
    # later, from a thread with no request: the relay carries on the stored context
    delivered = requests.post(f"{urls['relay']}/deliver", json=stored, timeout=10).json()
    assert delivered["ids"][0] == trace_id

    spans = receiver.wait_for(lambda s: len([x for x in s if x.trace_id == trace_id]) >= 6)
    spans = receiver.trace(trace_id)
    assert {s.service for s in spans} == {"cqrs-alpha", "cqrs-beta", "cqrs-relay"}
    start = _one(spans, "cqrs-alpha", SERVER)
    call = _one(spans, "cqrs-alpha", CLIENT)
    send = _one(spans, "cqrs-relay", PRODUCER)
    relay_call = _one(spans, "cqrs-relay", CLIENT)
    works = [s for s in spans if s.service == "cqrs-beta" and s.kind == SERVER]
    assert start.parent_span_id == ""  # the order's root
    assert call.parent_span_id == start.span_id
    # the stored context is the server span's: the relay's send is its child
    assert stored["traceparent"].split("-")[2] == start.span_id
    assert send.parent_span_id == start.span_id
    assert relay_call.parent_span_id == send.span_id
    assert sorted(w.parent_span_id for w in works) == sorted([call.span_id, relay_call.span_id])


@pytest.mark.slow
def test_without_the_stored_attributes_the_delivery_starts_another_trace(
    traced: tuple[OtlpReceiver, dict[str, str]],
) -> None:
    """The check above can fail: an event that lost its trace context is a separate trace."""
    receiver, urls = traced
    answer = requests.post(f"{urls['alpha']}/start", timeout=10).json()
    trace_id = answer["stored"]["traceparent"].split("-")[1]
    delivered = requests.post(f"{urls['relay']}/deliver", json={}, timeout=10).json()
    assert delivered["ids"][0] != trace_id
    receiver.wait_for(lambda s: any(x.service == "cqrs-relay" for x in s))
    assert all(s.service != "cqrs-relay" for s in receiver.trace(trace_id))
