"""Parsing and validating OpenAI-style request bodies into what the decision needs; rewriting them for upstreams.

Validation is deliberately shallow: the router checks what it must understand (model, messages/prompt, stream)
and passes every other field through untouched, so new OpenAI parameters keep working without a router release.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .pii import Segment


class BadRequest(ValueError):
    """A client error; `param` names the offending field (OpenAI's error.param)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ParsedRequest:
    """A validated body: the original JSON object plus the text the policy looks at."""

    body: dict[str, Any]
    model: str
    stream: bool
    text: str
    kind: str  # "chat" | "completion"
    pii_text: str = ""
    """Every string the client sent, joined by newlines (see `segments`)."""
    segments: tuple[Segment, ...] = ()
    """Every string of the body as it is forwarded upstream, object keys included, in document order, each labelled
    with its channel (the role of its message, or its top-level field): what the PII scan reads. Only the top-level
    `model` value is left out, because dispatch replaces it with the tier's model. A string that is itself a JSON
    object or array (tool-call arguments) is followed by its own strings, so values inside it are also seen apart."""
    raw_forwardable: bool = True
    """False when the raw bytes hold strings the parsed body does not (a repeated object key: `json.loads` keeps
    the last value, the bytes keep both), so the bytes must not be forwarded as they are: what goes upstream is
    then the re-serialised body, which is exactly what was scanned."""


# Values that name the request's structure rather than carry what someone wrote (seam joining skips them).
_STRUCTURAL_KEYS = frozenset({"role", "type", "id", "tool_call_id", "detail", "object", "finish_reason"})
_STRING_LITERAL = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_MAX_EMBEDDED_JSON = 65536


def _segments(value: Any, channel: str, out: list[Segment], structural: bool = False) -> int:
    """Append every string under `value` (keys too) to `out`; the number of JSON string literals it stands for."""
    if isinstance(value, str):
        inner: Any = None
        if value.lstrip()[:1] in ("{", "[") and len(value) <= _MAX_EMBEDDED_JSON:
            try:
                inner = json.loads(value)
            except (ValueError, RecursionError):
                inner = None
        if isinstance(inner, dict | list):
            # JSON inside a string (tool-call arguments): its own strings are what was written, so they take part
            # in joining across strings; the encoded whole is still scanned, but not joined to its neighbours
            out.append(Segment(value, channel, key=True))
            _segments(inner, channel, out)
        else:
            out.append(Segment(value, channel, key=structural))
        return 1
    if isinstance(value, dict):
        n = 0
        for key, item in value.items():
            out.append(Segment(key, channel, key=True))
            n += 1 + _segments(item, channel, out, key in _STRUCTURAL_KEYS)
        return n
    if isinstance(value, list):
        return sum(_segments(item, channel, out) for item in value)
    return 0


def forwarded_segments(body: dict[str, Any]) -> tuple[tuple[Segment, ...], int]:
    """The strings of `body` that dispatch forwards, as PII scan segments, and the number of string literals the body
    has in JSON (keys and values, the `model` value included)."""
    out: list[Segment] = []
    literals = 0
    for key, value in body.items():
        out.append(Segment(key, key, key=True))
        literals += 1
        if key == "model":
            literals += isinstance(value, str)
            continue
        if key == "messages" and isinstance(value, list):
            for msg in value:
                role = msg.get("role") if isinstance(msg, dict) else None
                literals += _segments(msg, f"messages:{role if isinstance(role, str) else '?'}", out)
        else:
            literals += _segments(value, key, out)
    return tuple(out), literals


def _literal_count(raw: bytes) -> int:
    """String literals in a JSON text (without a backslash every '"' delimits one)."""
    if b"\\" not in raw:
        return raw.count(b'"') // 2
    return len(_STRING_LITERAL.findall(raw))


def _redact_all(value: Any, redactor: Any) -> Any:
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, dict):
        return {k: _redact_all(v, redactor) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_all(v, redactor) for v in value]
    return value


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict):
                raise BadRequest(f"{where}[{i}] must be an object", where)
            if part.get("type") == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise BadRequest(f"{where}[{i}].text must be a string", where)
                parts.append(text)
        return "\n".join(parts)
    raise BadRequest(f"{where} must be a string or a list of content parts", where)


def parse_body(raw: bytes, kind: str) -> ParsedRequest:
    """Decode and validate a /v1/chat/completions (kind 'chat') or /v1/completions ('completion') body."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model", "auto")
    if not isinstance(model, str):
        raise BadRequest("'model' must be a string", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", "stream")
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty array", "messages")
        texts = []
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise BadRequest(f"messages[{i}] must be an object", "messages")
            if not isinstance(msg.get("role"), str):
                raise BadRequest(f"messages[{i}].role must be a string", "messages")
            content = msg.get("content")
            if content:
                texts.append(content if isinstance(content, str) else _content_text(content, f"messages[{i}].content"))
            elif content is not None and not isinstance(content, str):
                _content_text(content, f"messages[{i}].content")  # an empty list passes, anything else is an error
        text = "\n".join([t for t in texts if t])
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            text = prompt
        elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) and prompt:
            text = "\n".join(prompt)
        else:
            raise BadRequest("'prompt' must be a string or a non-empty array of strings", "prompt")
    segments, literals = forwarded_segments(body)
    return ParsedRequest(
        body=body,
        model=model,
        stream=stream,
        text=text,
        kind=kind,
        pii_text="\n".join(s.text for s in segments if not s.key),
        segments=segments,
        raw_forwardable=_literal_count(raw) == literals,
    )


def classification_text(parsed: ParsedRequest) -> str:
    """The text a route is chosen on: the last user turn (what is being asked now), else everything."""
    if parsed.kind == "chat":
        for msg in reversed(parsed.body["messages"]):
            if msg.get("role") == "user":
                return _content_text(msg.get("content"), "messages[].content")
    return parsed.text


def redact_body(parsed: ParsedRequest, redactor: Any) -> dict[str, Any]:
    """A copy of the body with every string (not only message text) passed through `redactor` (str -> str)."""
    body: dict[str, Any] = {k: (v if k == "model" else _redact_all(v, redactor)) for k, v in parsed.body.items()}
    return body
