"""Parsing and validating OpenAI-style request bodies into what the decision needs; rewriting them for upstreams.

Validation is deliberately shallow: the router checks what it must understand (model, messages/prompt, stream)
and passes every other field through untouched, so new OpenAI parameters keep working without a router release.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


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
    """Every string the client sent (tool-call arguments, `user`, metadata, tool descriptions too): what is
    scanned for PII, because every one of them is forwarded upstream."""


def _all_strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _all_strings(item, out)
    elif isinstance(value, list):
        for item in value:
            _all_strings(item, out)


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
    strings: list[str] = []
    for key, value in body.items():
        if key != "model":
            _all_strings(value, strings)
    return ParsedRequest(body=body, model=model, stream=stream, text=text, kind=kind, pii_text="\n".join(strings))


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
