"""The router's OpenAPI 3.1 document, served at ``GET /openapi.json``.

It describes what the router itself checks and answers, not all of OpenAI's API: the fields the router validates
(``model``, ``stream``, ``messages``/``prompt``) are constrained exactly as ``request.parse_body`` constrains them,
and every other field is declared free (``additionalProperties``) because the router relays it untouched. The
``model`` values a client may send, and whether it may pin a tier by header, come from the live config, so the
document changes with the RoutingPolicy it serves; schemathesis drives the reliability fuzz test from it
(tests/reliability/test_router_schemathesis.py).
"""

from __future__ import annotations

from typing import Any

from .config import RouterConfig

OPENAPI_VERSION = "3.1.0"

_ERROR_STATUSES = {
    "400": "Malformed JSON or fields, a policy that rejects PII, no tier the request may reach can serve what it "
    "uses (tools, logprobs, context), or an upstream's own 400 (relayed).",
    "403": "Pinning a tier the policy does not allow, or no tier may serve the request under residency.",
    "404": "`model` (or the override header) names no route or tier.",
    "413": "The body exceeds the policy's maxBodyBytes.",
    "429": "The monthly budget is exhausted and the policy rejects cloud-bound requests, or a local tier stayed "
    "busy for a request that may not leave (its own 429, with Retry-After).",
    "502": "Every allowed tier failed (5xx or protocol error); the reason names each attempt.",
    "503": "Every allowed tier was unreachable or its circuit was open, or the router has no valid config yet.",
    "504": "Every allowed tier timed out.",
}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": "string"},
            },
        }
    },
}

# A completion as relayed from the upstream: the router does not rewrite it, so only its outline is promised.
_COMPLETION = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": "object"},
    },
}

_CONTENT_PART = {
    "type": "object",
    "description": "A content part; a part of type `text` must carry `text` as a string. Other types pass through.",
    "if": {"required": ["type"], "properties": {"type": {"const": "text"}}},
    "then": {"required": ["text"], "properties": {"text": {"type": "string"}}},
}

_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string"},
        "content": {
            "oneOf": [
                {"type": "null"},
                {"type": "string"},
                {"type": "array", "items": {"$ref": "#/components/schemas/ContentPart"}},
            ]
        },
    },
}


def _model_schema(config: RouterConfig | None) -> dict[str, Any]:
    """Every `model` value the router accepts: the policy and its auto names, routes, and pinnable tiers."""
    schema: dict[str, Any] = {
        "type": "string",
        "description": "`auto` (or the policy's name) lets the router decide; a route name forces that route; a "
        "tier name pins that tier where the policy allows pinning. Absent means auto.",
    }
    if config is not None:
        names = {"", *config.auto_models, config.policy, *(r.name for r in config.routes)}
        if config.override.enabled:
            allowed = config.override.allowed_tiers
            names |= {t.name for t in config.tiers if allowed is None or t.name in allowed}
        schema["enum"] = sorted(names)
    return schema


def _responses(ok: dict[str, Any], statuses: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"200": ok}
    for status, description in statuses.items():
        out[status] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return out


def _completion_operation(config: RouterConfig | None, kind: str) -> dict[str, Any]:
    body_ref = "ChatCompletionRequest" if kind == "chat" else "CompletionRequest"
    operation: dict[str, Any] = {
        "operationId": "createChatCompletion" if kind == "chat" else "createCompletion",
        "summary": "Route the request to a tier (PII scan, residency, classification, budget) and relay the answer.",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body_ref}"}}},
        },
        "responses": _responses(
            {
                "description": "The chosen tier's answer, relayed; `stream: true` relays server-sent events.",
                "headers": {
                    name: {"schema": {"type": "string"}, "description": text}
                    for name, text in (
                        ("x-tiered-tier", "The tier that answered."),
                        ("x-tiered-route", "The route chosen (empty when none matched)."),
                        ("x-tiered-reason", "Why: RouteMatched, PiiKeptLocal, ResidencyLocalOnly, ..."),
                    )
                },
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Completion"}},
                    # Before OpenAPI 3.2's itemSchema, a stream's schema describes each event.
                    "text/event-stream": {"schema": {"$ref": "#/components/schemas/Event"}},
                },
            },
            _ERROR_STATUSES,
        ),
    }
    if config is not None and config.override.enabled:
        allowed = config.override.allowed_tiers
        operation["parameters"] = [
            {
                "name": config.override.header,
                "in": "header",
                "required": False,
                "description": "Pin a tier (override). Never relaxes residency.",
                "schema": {
                    "type": "string",
                    "enum": [t.name for t in config.tiers if allowed is None or t.name in allowed],
                },
            }
        ]
    return operation


def _json_get(operation_id: str, summary: str, schema: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "responses": _responses(
                {"description": "OK", "content": {"application/json": {"schema": schema}}},
                errors,
            ),
        }
    }


def document(config: RouterConfig | None = None) -> dict[str, Any]:
    """The OpenAPI document for a router serving `config` (None: no valid config loaded yet)."""
    status_schema = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
    not_ready = {"503": "The router has no valid config yet."}
    max_body = f" Bodies over {config.max_body_bytes} bytes get 413." if config is not None else ""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "tiered router",
            "version": "1",
            "description": "OpenAI-compatible router in front of local and cloud tiers"
            + (f" (RoutingPolicy {config.namespace}/{config.policy})." if config is not None else ".")
            + max_body,
        },
        "paths": {
            "/v1/chat/completions": {"post": _completion_operation(config, "chat")},
            "/v1/completions": {"post": _completion_operation(config, "completion")},
            "/v1/models": _json_get(
                "listModels",
                "The auto model, tiers and routes as OpenAI model objects.",
                {
                    "type": "object",
                    "required": ["object", "data"],
                    "properties": {
                        "object": {"const": "list"},
                        "data": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id", "object"],
                                "properties": {"id": {"type": "string"}, "object": {"const": "model"}},
                            },
                        },
                    },
                },
                not_ready,
            ),
            "/healthz": _json_get("healthz", "Liveness: the process serves HTTP.", status_schema, {}),
            "/readyz": _json_get("readyz", "Readiness: a valid config is loaded.", status_schema, not_ready),
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics.",
                    "responses": {
                        "200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
                    },
                }
            },
            "/openapi.json": _json_get("openapi", "This document.", {"type": "object"}, {}),
        },
        "components": {
            "schemas": {
                "Error": _ERROR,
                "Event": {
                    "type": "object",
                    "required": ["data"],
                    "description": "A server-sent event: a completion chunk as JSON, or `[DONE]` at the end.",
                    "properties": {"data": {"type": "string"}},
                },
                "Completion": _COMPLETION,
                "ContentPart": _CONTENT_PART,
                "Message": _MESSAGE,
                "ChatCompletionRequest": {
                    "type": "object",
                    "required": ["messages"],
                    "description": "Fields other than model, stream and messages are relayed to the tier untouched.",
                    "properties": {
                        "model": _model_schema(config),
                        "stream": {"type": "boolean"},
                        "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Message"}},
                    },
                },
                "CompletionRequest": {
                    "type": "object",
                    "required": ["prompt"],
                    "description": "Fields other than model, stream and prompt are relayed to the tier untouched.",
                    "properties": {
                        "model": _model_schema(config),
                        "stream": {"type": "boolean"},
                        "prompt": {
                            "oneOf": [
                                {"type": "string"},
                                {"type": "array", "minItems": 1, "items": {"type": "string"}},
                            ]
                        },
                    },
                },
            }
        },
    }
