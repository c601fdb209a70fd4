"""Request validation and the context-window check (the 400s a client sees)."""

import json

import pytest

from tiered_slm.openai_api import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    DeltaEncoder,
    ResponseIds,
    chat_chunk,
    completion_budget,
    completion_chunk,
    parse_request,
    sampling_params,
    sse,
)


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_overlong_prompt_is_refused_with_both_numbers() -> None:
    with pytest.raises(ApiError) as caught:
        completion_budget(prompt_tokens=600, requested=None, n_ctx=512)
    assert caught.value.status == 400
    assert "600" in caught.value.message and "512" in caught.value.message
    assert caught.value.code == "context_length_exceeded"


def test_prompt_plus_max_tokens_beyond_context_is_refused_with_the_room_left() -> None:
    with pytest.raises(ApiError) as caught:
        completion_budget(prompt_tokens=400, requested=200, n_ctx=512)
    assert "lower max_tokens to 112" in caught.value.message


def test_without_max_tokens_the_rest_of_the_context_is_the_budget() -> None:
    assert completion_budget(prompt_tokens=100, requested=None, n_ctx=512) == 412
    assert completion_budget(prompt_tokens=100, requested=7, n_ctx=512) == 7


def test_completion_defaults_follow_openai() -> None:
    request = parse_request(CompletionRequest, body(prompt="hi"))
    assert request.max_tokens == 16 and request.temperature == 1.0 and request.stream is False


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"prompt": "x", "n": 2}, "n"), ({"prompt": "x", "echo": True}, "echo"),
     ({"prompt": "x", "temperature": 3}, "temperature"), ({"prompt": "x", "stop": ["a"] * 5}, "stop"),
     ({"prompt": "x", "max_tokens": -1}, "max_tokens"), ({}, "prompt")],
)
def test_unsupported_or_invalid_parameters_are_named(fields: dict[str, object], param: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_request(CompletionRequest, body(**fields))
    assert caught.value.status == 400 and caught.value.param == param


TOOL = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("fields", [{"tools": [TOOL]}, {"tools": [TOOL], "tool_choice": "auto"},
                                    {"functions": [TOOL["function"]]}])
def test_tools_are_refused_because_this_server_cannot_call_them(fields: dict[str, object]) -> None:
    with pytest.raises(ApiError) as caught:
        parse_request(ChatRequest, body(messages=[{"role": "user", "content": "hi"}], **fields))
    assert caught.value.status == 400 and "cannot emit tool calls" in caught.value.message
    assert caught.value.param in ("tools", "functions")


def test_tools_with_tool_choice_none_and_an_empty_tool_list_are_plain_chat() -> None:
    for fields in ({"tools": [TOOL], "tool_choice": "none"}, {"tools": []}):
        request = parse_request(ChatRequest, body(messages=[{"role": "user", "content": "hi"}], **fields))
        assert not request.structured()


def test_a_json_response_format_cannot_ignore_the_end_of_sequence() -> None:
    with pytest.raises(ApiError, match="ignore_eos cannot be combined"):
        parse_request(CompletionRequest, body(prompt="x", ignore_eos=True, response_format={"type": "json_object"}))
    request = parse_request(CompletionRequest, body(prompt="x", ignore_eos=True, response_format={"type": "text"}))
    assert not request.structured()


def test_malformed_json_is_a_400() -> None:
    with pytest.raises(ApiError) as caught:
        parse_request(CompletionRequest, b"{not json")
    assert caught.value.status == 400


def test_chat_max_completion_tokens_wins_and_developer_becomes_system() -> None:
    request = parse_request(ChatRequest, body(
        messages=[{"role": "developer", "content": "be brief"},
                  {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "you"}]}],
        max_tokens=5, max_completion_tokens=9))
    assert request.requested_max_tokens() == 9
    assert request.template_messages() == [{"role": "system", "content": "be brief"},
                                           {"role": "user", "content": "hi you"}]


def test_chat_image_parts_are_refused() -> None:
    request = parse_request(ChatRequest, body(messages=[{"role": "user", "content": [{"type": "image_url"}]}]))
    with pytest.raises(ApiError, match="image_url"):
        request.template_messages()


def test_template_stops_are_added_to_the_request_stops_once() -> None:
    request = parse_request(ChatRequest, body(messages=[{"role": "user", "content": "x"}], stop="END"))
    params = sampling_params(request, 10, extra_stops=("<|im_end|>", "END"))
    assert params.stop == ("END", "<|im_end|>")


def test_sse_framing() -> None:
    assert sse("[DONE]") == b"data: [DONE]\n\n"
    assert sse({"a": "é"}) == 'data: {"a":"é"}\n\n'.encode()


@pytest.mark.parametrize("chat", [False, True])
@pytest.mark.parametrize("text", ["", "hello", "quote \" backslash \\ newline \n", "é 漢字 \u2028 \U0001f600",
                                  "\x00\x1f control", "\ufffd"])
def test_delta_encoder_writes_the_same_bytes_as_the_generic_chunk(chat: bool, text: str) -> None:
    ids = ResponseIds("chatcmpl" if chat else "cmpl")
    model = 'odd "model" name/é'
    expected = sse(chat_chunk(ids, model, {"content": text}, None) if chat else
                   completion_chunk(ids, model, text, None))
    assert DeltaEncoder(ids, model, chat=chat).encode(text) == expected
