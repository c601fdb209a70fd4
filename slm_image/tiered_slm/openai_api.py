"""The OpenAI wire format: request validation and response/chunk construction, free of I/O.

Only what a single-sequence CPU server can honour is accepted; the rest is refused with a 400 that names the
parameter (``n > 1``, ``echo``, ``logprobs``), because silently ignoring it would return something the client
did not ask for. Extensions used by the router and the benchmarks: ``top_k``, ``min_p``, ``repeat_penalty``
and ``ignore_eos`` (as in vLLM and llama.cpp's own server).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tiered_slm.engine import Finished, SamplingParams

_Body = TypeVar("_Body", bound="_Common")


class ApiError(Exception):
    """An error answered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 error_type: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param,
                          "code": self.code}}


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0)
    min_p: float = Field(0.05, ge=0.0, le=1.0)
    repeat_penalty: float = Field(1.0, gt=0.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    ignore_eos: bool = False
    response_format: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _grammar_needs_an_end(self) -> Self:
        if self.ignore_eos and self.structured():
            raise ValueError("ignore_eos cannot be combined with a JSON response_format: the answer ends where the "
                             "JSON ends")
        return self

    def structured(self) -> bool:
        """True when the answer must be JSON (``response_format`` json_object or json_schema)."""
        return self.response_format is not None and self.response_format.get("type") != "text"

    @field_validator("n")
    @classmethod
    def _single_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported (one sequence per request on a CPU tier)")
        return value

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int]
    max_tokens: int | None = Field(16, ge=0)
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: int | None) -> int | None:
        if value:
            raise ValueError("logprobs are not supported")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("suffix (insertion) is not supported")
        return value


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """Plain text of the message; non-text parts (images, audio) are refused."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        pieces = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise ApiError(400, f"content part of type {part.type!r} is not supported; send text",
                               param="messages")
            pieces.append(part.text)
        return "".join(pieces)


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool = False
    tool_choice: Any = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, value: list[Any] | None, info: Any) -> list[Any] | None:
        # A tool list the model will never call would silently turn a tool call into plain text.
        if value and info.data.get("tool_choice") != "none":
            raise ValueError(f"{info.field_name} are not supported: this model server cannot emit tool calls (send "
                             "the request to a tier that supports tools, or set tool_choice to \"none\")")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool) -> bool:
        if value:
            raise ValueError("logprobs are not supported")
        return value

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def template_messages(self) -> list[dict[str, Any]]:
        # "developer" is the newer name for "system"; chat templates only know the latter.
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in self.messages]


def parse_request(model: type[_Body], raw: bytes) -> _Body:
    """Validate a JSON body into ``model``; any problem becomes a 400 naming the offending parameter."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        raise ApiError(400, f"invalid request: {param or 'body'}: {message}", param=param) from None


def completion_budget(prompt_tokens: int, requested: int | None, n_ctx: int) -> int:
    """How many tokens may be generated; 400 with the numbers when the request cannot fit the context.

    Without an explicit ``max_tokens`` the rest of the context is the limit (OpenAI's chat behaviour).
    """
    if prompt_tokens >= n_ctx:
        raise ApiError(
            400,
            f"prompt is {prompt_tokens} tokens but this model's context window is {n_ctx} tokens "
            f"(at most {n_ctx - 1} prompt tokens leave room for one generated token)",
            param="messages", code="context_length_exceeded",
        )
    room = n_ctx - prompt_tokens
    if requested is None:
        return room
    if requested > room:
        raise ApiError(
            400,
            f"prompt ({prompt_tokens} tokens) plus max_tokens ({requested}) is {prompt_tokens + requested} "
            f"tokens, more than this model's context window of {n_ctx} tokens; lower max_tokens to {room} "
            "or shorten the prompt",
            param="max_tokens", code="context_length_exceeded",
        )
    return requested


def sampling_params(request: _Common, max_tokens: int, extra_stops: tuple[str, ...] = ()) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        min_p=request.min_p,
        repeat_penalty=request.repeat_penalty,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        seed=request.seed,
        stop=request.stops() + tuple(stop for stop in extra_stops if stop not in request.stops()),
        ignore_eos=request.ignore_eos,
    )


def usage(done: Finished) -> dict[str, int]:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


def public_finish_reason(done: Finished) -> str:
    """OpenAI knows only stop/length; a cancelled request never reaches a client that could read it."""
    return "stop" if done.finish_reason == "stop" else "length"


class ResponseIds:
    """Id and creation time shared by every chunk of one response."""

    def __init__(self, kind: Literal["cmpl", "chatcmpl"]) -> None:
        self.id = f"{kind}-{uuid.uuid4().hex}"
        self.created = int(time.time())


def completion_body(ids: ResponseIds, model: str, text: str, done: Finished) -> dict[str, Any]:
    return {"id": ids.id, "object": "text_completion", "created": ids.created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None,
                         "finish_reason": public_finish_reason(done)}],
            "usage": usage(done)}


def completion_chunk(ids: ResponseIds, model: str, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"id": ids.id, "object": "text_completion", "created": ids.created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]}


def chat_body(ids: ResponseIds, model: str, text: str, done: Finished) -> dict[str, Any]:
    return {"id": ids.id, "object": "chat.completion", "created": ids.created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": public_finish_reason(done)}],
            "usage": usage(done)}


def chat_chunk(ids: ResponseIds, model: str, delta: dict[str, str], finish_reason: str | None) -> dict[str, Any]:
    return {"id": ids.id, "object": "chat.completion.chunk", "created": ids.created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}


def usage_chunk(ids: ResponseIds, model: str, kind: str, done: Finished) -> dict[str, Any]:
    """The extra last chunk sent when ``stream_options.include_usage`` is set (empty choices)."""
    return {"id": ids.id, "object": kind, "created": ids.created, "model": model, "choices": [],
            "usage": usage(done)}


def sse(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event; ``[DONE]`` is passed as a string."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"),
                                                              ensure_ascii=False)
    return f"data: {data}\n\n".encode()


_TEXT_SLOT = "\ue000tiered-text-slot\ue000"  # a private-use character pair no id or model name contains


class DeltaEncoder:
    """The SSE bytes of one response's text-delta chunks, as ``sse(completion_chunk(...))`` /
    ``sse(chat_chunk(...))`` would write them, with the part around the text encoded once per response (the
    per-token work of a stream is then one ``json.dumps`` of a short string)."""

    def __init__(self, ids: ResponseIds, model: str, *, chat: bool) -> None:
        chunk = chat_chunk(ids, model, {"content": _TEXT_SLOT}, None) if chat else \
            completion_chunk(ids, model, _TEXT_SLOT, None)
        event = sse(chunk).decode()
        slot = json.dumps(_TEXT_SLOT, ensure_ascii=False)
        if event.count(slot) != 1:
            raise ValueError("response id or model name contains the text placeholder")
        before, after = event.split(slot)
        self._before, self._after = before.encode(), after.encode()

    def encode(self, text: str) -> bytes:
        return self._before + json.dumps(text, ensure_ascii=False).encode() + self._after
