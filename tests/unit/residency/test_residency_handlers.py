"""The handler module's pure parts, and the webhook's TLS served by kopf's own server on loopback."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import kopf
from residency_objects import cloud_tier, local_tier

from tiered_operator.handlers.residency import WebhookConfig, callers_and_clouds, ensure_certificates, in_scope


def test_callers_and_clouds_follow_the_policies_that_pair_tiers() -> None:
    tiers = {"slm": local_tier("slm"), "edge": local_tier("edge"), "gpt": cloud_tier("gpt"),
             "other": cloud_tier("other")}
    policies = [{"spec": {"tiers": ["slm", "gpt"]}}, {"spec": {"tiers": ["edge"]}}]
    clouds, callers = callers_and_clouds(tiers, policies)
    assert {k: [t.metadata.name for t in v] for k, v in clouds.items()} == {"slm": ["gpt"], "edge": []}
    assert callers == {"gpt": ["slm"], "other": []}


def test_webhook_is_off_unless_a_port_is_configured() -> None:
    assert WebhookConfig.from_env({}) is None
    config = WebhookConfig.from_env({"TIERED_WEBHOOK_PORT": "9443", "TIERED_WEBHOOK_HOST": "op.example"})
    assert config == WebhookConfig(port=9443, addr="127.0.0.1", host="op.example")


def test_scope_patterns(monkeypatch: Any) -> None:
    monkeypatch.setenv("TIERED_WATCH_NAMESPACES", "rz-*,team-a")
    assert in_scope("rz-123") and in_scope("team-a")
    assert not in_scope("team-b") and not in_scope(None)
    monkeypatch.delenv("TIERED_WATCH_NAMESPACES")
    assert in_scope("anything")


def test_mounted_certificates_are_used_as_they_are(tmp_path: Path) -> None:
    first = ensure_certificates(WebhookConfig(port=0, cert_dir=str(tmp_path)))
    before = [p.read_bytes() for p in first]
    again = ensure_certificates(WebhookConfig(port=0, cert_dir=str(tmp_path)))
    assert [p.read_bytes() for p in again] == before
    assert oct(first[1].stat().st_mode & 0o777) == "0o600"


async def test_kopf_webhook_server_speaks_tls_verified_by_our_ca(tmp_path: Path) -> None:
    """A client that trusts only our CA (as the API server does via caBundle) completes an admission review."""
    cert, key, ca = ensure_certificates(WebhookConfig(port=0, cert_dir=str(tmp_path)))
    server = kopf.WebhookServer(addr="127.0.0.1", certfile=cert, pkeyfile=key, cafile=ca)

    async def review(request: Any, **_: Any) -> dict[str, Any]:
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": request["request"]["uid"], "allowed": False,
                             "status": {"message": "denied by test", "code": 403}}}

    stream = server(review)
    client_config = await stream.__anext__()
    try:
        assert client_config["url"].startswith("https://127.0.0.1:")
        assert client_config["caBundle"]
        context = ssl.create_default_context(cafile=str(ca))
        body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u1"}}
        async with aiohttp.ClientSession() as session, session.post(
            client_config["url"] + "/x", json=body, ssl=context, timeout=aiohttp.ClientTimeout(total=10)
        ) as rsp:
            answer = json.loads(await rsp.text())
        assert answer["response"] == {"uid": "u1", "allowed": False, "status": {"message": "denied by test",
                                                                                 "code": 403}}
    finally:
        await asyncio.wait_for(stream.aclose(), timeout=5)


def test_namespace_policy_from_the_index_or_none_when_not_indexed_yet() -> None:
    from tiered_operator.handlers.residency import policy_from_index, residency_namespaces

    body = {"metadata": {"labels": {"tiered.dev/residency": "local-only", "team": "a"},
                         "annotations": {"tiered.dev/allowed-regions": "eu-west-1", "other": "x"}}}
    entry = residency_namespaces(name="team-a", body=body)
    assert entry == {"team-a": {"labels": {"tiered.dev/residency": "local-only"},
                                "annotations": {"tiered.dev/allowed-regions": "eu-west-1"}}}
    index = {"team-a": [entry["team-a"]]}
    policy = policy_from_index(index, "team-a")
    assert policy is not None
    assert policy.residency.value == "local-only"
    assert policy.allowed_regions == {"eu-west-1"}
    assert policy_from_index(index, "team-b") is None
