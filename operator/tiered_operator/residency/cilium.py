"""CiliumNetworkPolicy FQDN rules: where the cluster serves cilium.io/v2, egress to a cloud provider is allowed by
host name (`toFQDNs`) rather than by CIDRs that cloud providers change without notice.

Built only for cloud tiers residency permits; the handler applies them only when API discovery finds the
CiliumNetworkPolicy kind (`cilium_served`), and says so in status when it is absent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.residency.network import (
    LABEL_CLOUD_TIER,
    EgressSubject,
    NetworkOptions,
    permitted_cloud_tiers,
    policy_name,
)
from tiered_operator.residency.policy import NamespacePolicy

CILIUM_GROUP = "cilium.io"
CILIUM_VERSION = "v2"
CILIUM_KIND = "CiliumNetworkPolicy"
CILIUM_PLURAL = "ciliumnetworkpolicies"


def cilium_served(api_resources: Iterable[Mapping[str, Any]]) -> bool:
    """True when discovery of cilium.io/v2 lists the CiliumNetworkPolicy kind (the list of `resources`)."""
    return any(r.get("kind") == CILIUM_KIND and "/" not in str(r.get("name", "")) for r in api_resources)


def provider_hosts(tier: InferenceTier) -> list[str]:
    """Host names a cloud tier talks to: the base URL's host and any declared `egress.fqdns`."""
    cloud = tier.spec.cloud
    if cloud is None:
        return []
    hosts = [urlsplit(cloud.effective_base_url).hostname or ""]
    if cloud.egress is not None:
        hosts += list(cloud.egress.fqdns or [])
    return sorted({h.lower() for h in hosts if h})


def _fqdn_selector(host: str) -> dict[str, str]:
    return {"matchPattern": host} if "*" in host else {"matchName": host}


def build_cilium_policies(
    subject: EgressSubject,
    ns: NamespacePolicy,
    cloud_tiers: Sequence[InferenceTier],
    options: NetworkOptions,
) -> list[dict[str, Any]]:
    """One CiliumNetworkPolicy per permitted cloud tier: DNS through Cilium's proxy, then its hosts and ports.

    The DNS rule is required: Cilium learns the addresses behind `toFQDNs` by observing the pod's DNS answers.
    """
    dns_port = str(options.dns_port)
    out = []
    for cloud in permitted_cloud_tiers(cloud_tiers, ns):
        hosts = provider_hosts(cloud)
        if not hosts:
            continue
        cloud_name = cloud.metadata.name or ""
        ports = cloud.spec.cloud.egress.ports if cloud.spec.cloud and cloud.spec.cloud.egress else [443]
        out.append(
            {
                "apiVersion": f"{CILIUM_GROUP}/{CILIUM_VERSION}",
                "kind": CILIUM_KIND,
                "metadata": subject.metadata(
                    policy_name(subject.prefix, f"fqdn-{cloud_name}"), {LABEL_CLOUD_TIER: cloud_name}
                ),
                "spec": {
                    "endpointSelector": {"matchLabels": dict(subject.selector)},
                    "egress": [
                        {
                            "toEndpoints": [
                                {
                                    "matchLabels": {
                                        "k8s:io.kubernetes.pod.namespace": "kube-system",
                                        "k8s:k8s-app": "kube-dns",
                                    }
                                }
                            ],
                            "toPorts": [
                                {
                                    "ports": [{"port": dns_port, "protocol": "ANY"}],
                                    "rules": {"dns": [{"matchPattern": "*"}]},
                                }
                            ],
                        },
                        {
                            "toFQDNs": [_fqdn_selector(h) for h in hosts],
                            "toPorts": [{"ports": [{"port": str(p), "protocol": "TCP"} for p in ports]}],
                        },
                    ],
                },
            }
        )
    return out
