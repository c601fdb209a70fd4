"""Residency's settings and indexes, and the webhook's TLS served by kopf's own server on loopback."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import kopf

from tiered_operator.handlers.state import Indexes, Tombstones
from tiered_operator.residency.tls import ensure_certificates
from tiered_operator.settings import OperatorSettings, WebhookConfig


def test_webhook_is_off_unless_a_port_is_configured() -> None:
    assert OperatorSettings.from_env({}).webhook is None
    config = OperatorSettings.from_env({"TIERED_WEBHOOK_PORT": "9443", "TIERED_WEBHOOK_HOST": "op.example"}).webhook
    assert config == WebhookConfig(port=9443, addr="127.0.0.1", host="op.example")


def test_scope_patterns_are_read_once_for_kopf_and_for_the_webhook() -> None:
    settings = OperatorSettings.from_env({"TIERED_WATCH_NAMESPACES": "rz-*, team-a"})
    assert settings.namespaces == ("rz-*", "team-a")
    assert settings.in_scope("rz-123") and settings.in_scope("team-a")
    assert not settings.in_scope("team-b") and not settings.in_scope(None)
    assert OperatorSettings.from_env({}).in_scope("anything")


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
    from tiered_operator.handlers.indexes import tiered_namespaces
    from tiered_operator.reconcile.router_config import NamespacePolicy

    body = {"metadata": {"labels": {"tiered.dev/residency": "local-only", "team": "a"},
                         "annotations": {"tiered.dev/allowed-regions": "eu-west-1", "other": "x"}}}
    entry = tiered_namespaces(name="team-a", body=body)  # type: ignore[arg-type]
    assert entry == {"team-a": {"labels": {"tiered.dev/residency": "local-only"},
                                "annotations": {"tiered.dev/allowed-regions": "eu-west-1"}}}
    idx = Indexes(tiers={}, policies={}, children={}, gone=Tombstones(), namespaces={"team-a": [entry["team-a"]]})
    found = idx.namespace_metadata("team-a")
    assert found is not None
    policy = NamespacePolicy.from_labels(*found).policy
    assert policy.residency.value == "local-only"
    assert policy.allowed_regions == {"eu-west-1"}
    assert idx.namespace_metadata("team-b") is None
