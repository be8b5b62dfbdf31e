"""RFC 9457 problem documents, built one way for the web layer (cqrs_common.web) and for the
gunicorn worker, which refuses requests before any app code is loaded (so this module imports
only the standard library and cqrs_common.limits)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from cqrs_common.limits import MAX_BODY_BYTES, MAX_HEAD_BYTES

PROBLEM_JSON = "application/problem+json"

# What a refusal for size says, wherever it is made (the worker's loop or Flask).
BODY_TOO_LARGE = f"the body is larger than {MAX_BODY_BYTES // 1024} KiB"
LINE_TOO_LONG = f"the request line is longer than {MAX_HEAD_BYTES // 1024} KiB"
HEAD_TOO_LARGE = f"the request line and headers are larger than {MAX_HEAD_BYTES // 1024} KiB"


def document(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    invalid_params: Mapping[str, str] | None = None,
) -> str:
    """The problem as JSON text: type, title, status, and detail and invalid-params if given."""
    body: dict[str, object] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if invalid_params:
        body["invalid-params"] = [{"name": k, "reason": v} for k, v in invalid_params.items()]
    return json.dumps(body)
