"""Admission decisions: a violating object is rejected with a message naming the label; valid ones pass."""

from __future__ import annotations

from typing import Any

import pytest

from tiered_operator.residency import namespace_policy, review_policy, review_tier
from tiered_operator.residency.tls import build_webhook_certificates

NS = "team-a"


def tier(name: str, backend: str = "cloud", region: str | None = "eu-west-1") -> dict[str, Any]:
    spec: dict[str, Any] = {"backend": backend}
    if backend == "cloud":
        spec["cloud"] = {"provider": "openai", "model": "m", "apiKeySecretRef": {"name": "k"}}
        if region:
            spec["cloud"]["region"] = region
    else:
        spec["local"] = {"model": {"source": "pvc://m/x.gguf"}}
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec}


def policy(*tiers: str) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": NS}, "spec": {"tiers": list(tiers), "defaultTier": tiers[0]}}


def test_cloud_tier_rejected_in_local_only_namespace_naming_the_label() -> None:
    decision = review_tier(tier("gpt"), None, NS, namespace_policy({"tiered.dev/residency": "local-only"}))
    assert not decision.allowed
    assert "tiered.dev/residency=local-only" in decision.message
    assert decision.message.startswith("InferenceTier gpt rejected")


def test_cloud_tier_outside_allowed_regions_rejected_naming_the_label() -> None:
    decision = review_tier(tier("gpt", region="us-east-1"), None, NS,
                           namespace_policy({"tiered.dev/allowed-regions": "eu-west-1"}))
    assert not decision.allowed
    assert "tiered.dev/allowed-regions" in decision.message
    assert "us-east-1" in decision.message


@pytest.mark.parametrize("labels", [{}, {"tiered.dev/residency": "restricted"},
                                    {"tiered.dev/residency": "unrestricted"},
                                    {"tiered.dev/allowed-regions": "eu-west-1"}])
def test_cloud_tier_admitted_where_permitted(labels: dict[str, str]) -> None:
    assert review_tier(tier("gpt"), None, NS, namespace_policy(labels)).allowed


def test_local_tier_admitted_in_local_only_namespace() -> None:
    assert review_tier(tier("slm", "local"), None, NS, namespace_policy({"tiered.dev/residency": "local-only"})).allowed


def test_metadata_only_update_of_a_forbidden_tier_is_allowed() -> None:
    old = tier("gpt")
    new = {**old, "metadata": {**old["metadata"], "finalizers": ["tiered.dev/finalizer"]}}
    ns = namespace_policy({"tiered.dev/residency": "local-only"})
    assert review_tier(new, old, NS, ns).allowed
    changed = {**new, "spec": {**new["spec"], "cloud": {**new["spec"]["cloud"], "model": "other"}}}
    assert not review_tier(changed, old, NS, ns).allowed


def test_policy_listing_forbidden_cloud_tier_rejected() -> None:
    ns = namespace_policy({"tiered.dev/residency": "local-only"})
    existing = {"slm": tier("slm", "local"), "gpt": tier("gpt")}
    decision = review_policy(policy("slm", "gpt"), None, NS, ns, existing)
    assert not decision.allowed
    assert "RoutingPolicy p rejected" in decision.message
    assert "gpt" in decision.message
    assert "tiered.dev/residency=local-only" in decision.message
    assert review_policy(policy("slm"), None, NS, ns, existing).allowed


def test_policy_naming_tiers_that_do_not_exist_yet_is_admitted() -> None:
    ns = namespace_policy({"tiered.dev/residency": "local-only"})
    assert review_policy(policy("later"), None, NS, ns, {}).allowed


def test_policy_with_cloud_tier_admitted_in_restricted_namespace() -> None:
    assert review_policy(policy("slm", "gpt"), None, NS, namespace_policy({}), {"gpt": tier("gpt")}).allowed


def test_webhook_certificate_is_signed_by_its_ca_for_every_host() -> None:
    from cryptography import x509

    certs = build_webhook_certificates(["127.0.0.1", "tiered-operator.tiered-system.svc"])
    ca = x509.load_pem_x509_certificate(certs.ca_pem)
    leaf = x509.load_pem_x509_certificate(certs.cert_pem)
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["tiered-operator.tiered-system.svc"]
    assert b"PRIVATE KEY" in certs.key_pem
