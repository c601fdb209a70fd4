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
            texts.append(_content_text(msg.get("content"), f"messages[{i}].content"))
        text = "\n".join(t for t in texts if t)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            text = prompt
        elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) and prompt:
            text = "\n".join(prompt)
        else:
            raise BadRequest("'prompt' must be a string or a non-empty array of strings", "prompt")
    return ParsedRequest(body=body, model=model, stream=stream, text=text, kind=kind)


def classification_text(parsed: ParsedRequest) -> str:
    """The text a route is chosen on: the last user turn (what is being asked now), else everything."""
    if parsed.kind == "chat":
        for msg in reversed(parsed.body["messages"]):
            if msg.get("role") == "user":
                return _content_text(msg.get("content"), "messages[].content")
    return parsed.text


def redact_body(parsed: ParsedRequest, redactor: Any) -> dict[str, Any]:
    """A copy of the body with every text field passed through `redactor` (a str -> str function)."""
    body = dict(parsed.body)
    if parsed.kind == "chat":
        new_messages = []
        for msg in body["messages"]:
            msg = dict(msg)
            content = msg.get("content")
            if isinstance(content, str):
                msg["content"] = redactor(content)
            elif isinstance(content, list):
                msg["content"] = [
                    {**p, "text": redactor(p["text"])} if isinstance(p, dict) and p.get("type") == "text" else p
                    for p in content
                ]
            new_messages.append(msg)
        body["messages"] = new_messages
    else:
        prompt = body["prompt"]
        body["prompt"] = redactor(prompt) if isinstance(prompt, str) else [redactor(p) for p in prompt]
    return body
