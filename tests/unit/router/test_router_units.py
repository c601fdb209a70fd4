"""Config schema, circuit breaker, body parsing, classification thresholds, explain."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tiered_router.breaker import CircuitBreaker, CircuitState
from tiered_router.classify import RouteClassifier
from tiered_router.config import (
    SCHEMA_VERSION,
    ConfigError,
    EncoderSpec,
    RouterConfig,
    TierKind,
    load_config,
    parse_config,
    render_config,
)
from tiered_router.decision import Reason
from tiered_router.encoders import load_encoder
from tiered_router.explain import explain
from tiered_router.request import BadRequest, classification_text, parse_body, redact_body

TIERS = [
    {"name": "slm", "kind": "local", "baseURL": "http://127.0.0.1:1/v1", "model": "tiny"},
    {"name": "gpt", "kind": "cloud", "baseURL": "https://api.example.com/v1/", "model": "big"},
]


def cfg(**extra: Any) -> dict[str, Any]:
    return {"schemaVersion": 1, "tiers": TIERS, "defaultTier": "gpt", **extra}


# --- config ------------------------------------------------------------------------------------------------


def test_yaml_and_json_load_to_the_same_config_and_render_round_trips() -> None:
    import yaml

    a = load_config(json.dumps(cfg()))
    b = load_config(yaml.safe_dump(cfg()))
    assert a == b
    assert load_config(render_config(a)) == a
    assert a.tiers[1].base_url == "https://api.example.com/v1"  # trailing slash dropped


def test_cloud_tiers_default_to_pii_forbidden() -> None:
    c = parse_config(cfg())
    assert [t.pii_forbidden for t in c.tiers] == [False, True]
    explicit = parse_config(cfg(tiers=[TIERS[0], {**TIERS[1], "piiForbidden": False}]))
    assert explicit.tiers[1].pii_forbidden is False


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (cfg(defaultTier="nope"), "defaultTier 'nope'"),
        (cfg(routes=[{"name": "r", "tier": "x", "examples": ["a"]}]), "names tier 'x'"),
        (cfg(routes=[{"name": "r", "tier": "slm"}]), "at least one example or keyword"),
        (cfg(tiers=[TIERS[0], TIERS[0]], defaultTier="slm"), "unique"),
        (cfg(tierOrder=["slm", "slm"]), "tierOrder"),
        (cfg(tiers=[TIERS[1]], residency={"namespaceClass": "local-only"}), "local-only needs at least one local"),
        (cfg(tiers=[{**TIERS[0], "baseURL": "ftp://x"}], defaultTier="slm"), "baseURL"),
        (cfg(classifier={"encoder": {"kind": "onnx"}}), "needs a path"),
        (cfg(bogus=1), "bogus"),
        ({**cfg(), "schemaVersion": 2}, "schemaVersion 2"),
        (cfg(override={"allowedTiers": ["zzz"]}), "override.allowedTiers"),
    ],
)
def test_invalid_configs_name_the_field(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse_config(data)
    assert fragment in str(info.value)


def test_garbage_text_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        load_config("tiers: [unclosed")
    with pytest.raises(ConfigError):
        load_config("- just\n- a list\n")


def test_python_construction_with_snake_case_names() -> None:
    c = RouterConfig.model_validate(
        {"tiers": [{"name": "a", "kind": TierKind.CLOUD, "base_url": "http://x", "model": "m"}], "default_tier": "a"}
    )
    assert c.schema_version == SCHEMA_VERSION and c.tiers[0].pii_forbidden


def test_chain_follows_tier_order_then_declaration() -> None:
    c = parse_config(cfg(tierOrder=["gpt"]))
    assert [t.name for t in c.chain()] == ["gpt", "slm"]


# --- breaker -----------------------------------------------------------------------------------------------


def test_breaker_opens_after_threshold_then_half_opens_one_probe() -> None:
    now = [0.0]
    b = CircuitBreaker(failure_threshold=2, open_seconds=10, clock=lambda: now[0])
    b.record_failure()
    assert b.state is CircuitState.CLOSED and b.allow()
    b.record_failure()
    assert b.state is CircuitState.OPEN and not b.allow()
    now[0] = 10.0
    assert b.state is CircuitState.HALF_OPEN
    assert b.allow() and not b.allow()  # exactly one probe
    b.record_failure()  # failed probe re-opens for a full period
    assert b.state is CircuitState.OPEN
    now[0] = 20.0
    assert b.allow()
    b.record_success()
    assert b.state is CircuitState.CLOSED and b.failures == 0


def test_success_resets_the_consecutive_count() -> None:
    b = CircuitBreaker(failure_threshold=2, open_seconds=10)
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.state is CircuitState.CLOSED


# --- request parsing ---------------------------------------------------------------------------------------


def test_chat_body_text_covers_all_turns_and_route_text_is_last_user_turn() -> None:
    body = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "you are kind"},
            {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "image_url", "image_url": {}}]},
            {"role": "assistant", "content": None},
            {"role": "user", "content": "second"},
        ],
    }
    p = parse_body(json.dumps(body).encode(), "chat")
    assert p.text == "you are kind\nfirst\nsecond" and classification_text(p) == "second"


@pytest.mark.parametrize(
    ("raw", "kind", "param"),
    [
        (b"\xff\xfe", "chat", None),
        (b'{"messages": []}', "chat", "messages"),
        (b'{"messages": [1]}', "chat", "messages"),
        (b'{"messages": [{"content": "x"}]}', "chat", "messages"),
        (b'{"messages": [{"role": "user", "content": 5}]}', "chat", "messages[0].content"),
        (b'{"stream": "yes", "messages": [{"role": "user", "content": "x"}]}', "chat", "stream"),
        (b'{"prompt": 3}', "completion", "prompt"),
        (b'{"prompt": []}', "completion", "prompt"),
    ],
)
def test_malformed_bodies_name_the_parameter(raw: bytes, kind: str, param: str | None) -> None:
    with pytest.raises(BadRequest) as info:
        parse_body(raw, kind)
    assert info.value.param == param


def test_redact_body_rewrites_every_text_field_and_keeps_the_rest() -> None:
    body: dict[str, Any] = {"model": "auto", "temperature": 0.2, "messages": [
        {"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "b"}]}]}  # fmt: skip
    out = redact_body(parse_body(json.dumps(body).encode(), "chat"), str.upper)
    assert out["messages"][0]["content"] == "A" and out["messages"][1]["content"][0]["text"] == "B"
    assert out["temperature"] == 0.2 and body["messages"][0]["content"] == "a"


# --- classification ----------------------------------------------------------------------------------------

ROUTES = [
    {"name": "weather", "tier": "slm", "examples": ["what is the weather today", "will it rain tomorrow",
                                                     "how hot will it be this afternoon"]},
    {"name": "banking", "tier": "slm", "examples": ["what is my account balance", "transfer money to savings",
                                                     "pay my credit card bill"]},
]  # fmt: skip


def classifier(default_threshold: float, **route_extra: Any) -> RouteClassifier:
    routes = [dict(ROUTES[0], **route_extra), ROUTES[1]]
    c = parse_config(cfg(routes=routes, classifier={"defaultThreshold": default_threshold}))
    return RouteClassifier(c, load_encoder(c.classifier.encoder))


def test_semantic_match_picks_the_closest_route() -> None:
    c = classifier(0.2).classify("is it going to snow this weekend", 10)
    assert (c.route, c.reason) == ("weather", Reason.ROUTE_MATCHED)
    assert classifier(0.2).classify("move 100 dollars into my savings account", 10).route == "banking"


def test_below_threshold_goes_to_default() -> None:
    c = classifier(0.95).classify("is it going to snow this weekend", 10)
    assert c.route is None and c.best_route == "weather" and c.reason is Reason.NO_ROUTE_MATCHED
    assert c.score < 0.95


def test_route_threshold_overrides_the_default() -> None:
    assert classifier(0.2, threshold=0.99).classify("is it going to snow this weekend", 10).route is None


def test_max_input_tokens_skips_the_route_for_long_prompts() -> None:
    clf = classifier(0.2, maxInputTokens=50)
    assert clf.classify("is it going to snow this weekend", 10).route == "weather"
    assert clf.classify("is it going to snow this weekend", 500).route != "weather"


def test_out_of_scope_examples_pull_requests_to_default() -> None:
    oos = ["who wrote war and peace", "tell me a story about a dragon"]
    c = parse_config(cfg(routes=ROUTES, classifier={"defaultThreshold": 0.1, "defaultExamples": oos}))
    clf = RouteClassifier(c, load_encoder(c.classifier.encoder))
    assert clf.classify("who is the author of war and peace", 10).route is None
    assert clf.classify("will it rain tomorrow afternoon", 10).route == "weather"


def test_lexical_encoder_needs_no_model() -> None:
    c = parse_config(cfg(routes=ROUTES, classifier={"encoder": {"kind": "lexical"}, "defaultThreshold": 0.1}))
    clf = RouteClassifier(c, load_encoder(EncoderSpec(kind="lexical")))  # type: ignore[arg-type]
    assert clf.encoder.dim == 0
    assert clf.classify("what is my savings account balance", 10).route == "banking"


def test_explain_reports_scores_and_reason() -> None:
    c = parse_config(cfg(routes=ROUTES, classifier={"defaultThreshold": 0.2}))
    out = explain("will it rain tomorrow in paris", c)
    assert out["tier"] == "slm" and out["route"] == "weather" and out["reason"] == "RouteMatched"
    assert out["scores"][0]["route"] == "weather" and out["chain"] == ["slm", "gpt"]
    json.dumps(out)  # JSON-ready for `tiered explain`


# --- encoders ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "dim"), [("builtin", 256), ("minilm", 384)])
def test_builtin_encoders_place_paraphrases_closer_than_unrelated_sentences(kind: str, dim: int) -> None:
    enc = load_encoder(EncoderSpec(kind=kind))  # type: ignore[arg-type]
    a, b, c = enc.encode(["how do I reset my password", "I forgot my login password", "the cat sat on the mat"])
    assert enc.dim == dim and abs(float(a @ a) - 1.0) < 1e-4
    assert float(a @ b) > 0.5 > float(a @ c)


def test_safetensors_weights_load_and_bf16_is_refused_with_a_clear_message(tmp_path: Any) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    from tiered_router.bert_numpy import read_safetensors

    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_file({"w": arr}, str(tmp_path / "m.safetensors"))
    assert (read_safetensors(tmp_path / "m.safetensors")["w"] == arr).all()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}).encode()
    (tmp_path / "bf16.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\x80\x3f")
    with pytest.raises(ValueError, match="save the encoder's weights as F32 or F16"):
        read_safetensors(tmp_path / "bf16.safetensors")
