"""OpenAI-shaped error responses: ``{"error": {"message", "type", "param", "code"}}``.

The official SDKs map the status to an exception class and show ``message``; ``code`` is our machine-readable
reason so a client can tell "PII rejected" from "budget exhausted" without parsing prose.
"""

from __future__ import annotations

import json

from tiered_http import Response

_TYPES = {
    400: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "insufficient_quota",
    502: "api_error",
    503: "api_error",
    504: "api_error",
}


def error_response(
    status: int,
    message: str,
    code: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A JSON error response in OpenAI's shape."""
    body = {"error": {"message": message, "type": _TYPES.get(status, "api_error"), "param": param, "code": code}}
    return Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )
