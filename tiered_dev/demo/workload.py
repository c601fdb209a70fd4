"""What the demo sends, and the routes it declares, both drawn from CLINC150 (shared/data/clinc150).

Route examples come ONLY from the `train` split; the requests come from `test` (in-scope) and `oos_test`
(out of scope), plus PII-bearing prompts generated here. Splitting it this way keeps the demo honest: the
classifier is measured on utterances it has never seen.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tiered_dev.demo import piicheck

LOCAL_TIER = "slm-edge"
CLOUD_TIER = "cloud-standin"
LOCAL_DOMAINS: tuple[str, ...] = ("small_talk", "utility", "meta", "kitchen_and_dining", "home")
"""Everyday, low-stakes domains the small local model serves."""
CLOUD_DOMAINS: tuple[str, ...] = ("banking", "credit_cards", "travel", "work", "auto_and_commute")
"""Domains the policy sends to the frontier (cloud) tier when no PII is present."""
EXAMPLES_PER_INTENT = 3


def data_dir() -> Path:
    """Where CLINC150 lives: $TIERED_DATA_DIR, else /work/shared/data, else shared/data in the checkout."""
    candidates = [os.environ.get("TIERED_DATA_DIR", ""), "/work/shared/data"]
    here = Path(__file__).resolve()
    candidates += [str(p / "shared" / "data") for p in here.parents]
    for c in candidates:
        if c and (Path(c) / "clinc150" / "data_full.json").is_file():
            return Path(c)
    raise FileNotFoundError("CLINC150 not found: set TIERED_DATA_DIR to the folder holding clinc150/")


@dataclass(frozen=True)
class Clinc:
    """The CLINC150 splits the demo uses, and the intent → domain map."""

    train: list[tuple[str, str]]
    val: list[tuple[str, str]]
    test: list[tuple[str, str]]
    oos_train: list[tuple[str, str]]
    oos_val: list[tuple[str, str]]
    oos_test: list[tuple[str, str]]
    domains: dict[str, list[str]]

    def domain_of(self) -> dict[str, str]:
        return {intent: domain for domain, intents in self.domains.items() for intent in intents}


def load_clinc(root: Path | None = None) -> Clinc:
    base = (root or data_dir()) / "clinc150"
    full = json.loads((base / "data_full.json").read_text())
    domains = json.loads((base / "domains.json").read_text())

    def pairs(split: str) -> list[tuple[str, str]]:
        return [(str(t), str(i)) for t, i in full[split]]

    return Clinc(
        train=pairs("train"), val=pairs("val"), test=pairs("test"),
        oos_train=pairs("oos_train"), oos_val=pairs("oos_val"), oos_test=pairs("oos_test"), domains=domains,
    )


def route_examples(clinc: Clinc, per_intent: int = EXAMPLES_PER_INTENT) -> dict[str, list[str]]:
    """Per domain, the first `per_intent` TRAIN utterances of each of its intents (deterministic)."""
    by_intent: dict[str, list[str]] = {}
    for text, intent in clinc.train:
        by_intent.setdefault(intent, []).append(text)
    return {
        domain: [u for intent in intents for u in by_intent.get(intent, [])[:per_intent]]
        for domain, intents in clinc.domains.items()
    }


def route_name(domain: str) -> str:
    return domain.replace("_", "-")


OOS_ROUTE = "out-of-scope"
"""A route to the default (cloud) tier made of CLINC150's oos_train utterances: prompts that resemble them are not
forced onto the nearest domain."""


def policy_manifest(clinc: Clinc, name: str, namespace: str, threshold: str = "0.5") -> dict[str, object]:
    """The demo RoutingPolicy: one route per CLINC150 domain (local domains on the SLM, the others on the cloud
    tier), an out-of-scope route from oos_train, default tier cloud."""
    examples = route_examples(clinc)
    routes = [
        {"name": route_name(d), "tier": LOCAL_TIER if d in LOCAL_DOMAINS else CLOUD_TIER, "examples": examples[d]}
        for d in (*LOCAL_DOMAINS, *CLOUD_DOMAINS)
    ]
    routes.append({"name": OOS_ROUTE, "tier": CLOUD_TIER, "examples": [t for t, _ in clinc.oos_train]})
    return {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "tiers": [LOCAL_TIER, CLOUD_TIER],
            "defaultTier": CLOUD_TIER,
            "routes": routes,
            "classifier": {"encoder": {"type": "builtin"}, "threshold": threshold},
            "residency": {"pii": {"entities": ["EMAIL", "PHONE", "CREDIT_CARD", "IBAN"], "action": "keepLocal"}},
            "fallback": {"timeoutMs": 10000, "retries": 1, "triggers": ["5xx", "timeout", "connect"]},
            "budget": {"monthlyUSD": "50", "whenExhausted": "localOnly"},
            "router": {"mode": "sidecar"},
        },
    }


def expected_tier(route: str | None) -> str:
    """The tier a route (or no route: the default) sends to in the demo policy."""
    if route is None or route == OOS_ROUTE:
        return CLOUD_TIER
    return LOCAL_TIER if route.replace("-", "_") in LOCAL_DOMAINS else CLOUD_TIER


# ---------------------------------------------------------------------------------------------------------------
# The workload
# ---------------------------------------------------------------------------------------------------------------

KIND_IN_SCOPE = "in-scope"
KIND_OOS = "out-of-scope"
KIND_PII = "pii"

PII_TEMPLATES: tuple[tuple[str, Callable[[random.Random], str], str], ...] = (
    ("email", piicheck.make_email, "please send the receipt for my last order to {}"),
    ("email", piicheck.make_email, "my new email address is {}, can you update my profile"),
    ("phone", piicheck.make_phone, "call me back at {} about the delivery"),
    ("phone", piicheck.make_phone, "text my reminder to {} tomorrow morning"),
    ("creditCard", piicheck.make_card, "my card {} was charged twice, what should i do"),
    ("creditCard", piicheck.make_card, "is my card number {} still active for online payments"),
    ("iban", piicheck.make_german_iban, "transfer 250 euros from my savings to {}"),
    ("iban", piicheck.make_german_iban, "set up a standing order to IBAN {} for the rent"),
)


@dataclass(frozen=True)
class WorkItem:
    """One request of the workload: its text, what kind it is and what the policy should do with it."""

    kind: str
    text: str
    domain: str | None = None
    expected_tier: str | None = None
    pii_values: tuple[str, ...] = field(default=())
    stream: bool = False


def pii_items(count: int, rng: random.Random) -> list[WorkItem]:
    items = []
    for i in range(count):
        _entity, make, template = PII_TEMPLATES[i % len(PII_TEMPLATES)]
        value = make(rng)
        items.append(WorkItem(KIND_PII, template.format(value), None, LOCAL_TIER, (value,)))
    return items


def build_workload(
    clinc: Clinc, total: int, seed: int = 7, shares: Sequence[float] = (0.5, 0.25, 0.25), stream_every: int = 3
) -> list[WorkItem]:
    """`total` requests: in-scope TEST utterances (all ten domains evenly), OOS_TEST ones and generated PII ones,
    shuffled; every `stream_every`-th request streams. Same seed, same workload."""
    rng = random.Random(seed)
    n_in = round(total * shares[0])
    n_oos = round(total * shares[1])
    n_pii = max(0, total - n_in - n_oos)
    domain_of = clinc.domain_of()
    by_domain: dict[str, list[str]] = {}
    for text, intent in clinc.test:
        by_domain.setdefault(domain_of[intent], []).append(text)
    domains = [*LOCAL_DOMAINS, *CLOUD_DOMAINS]
    picks: dict[str, list[str]] = {d: rng.sample(by_domain[d], len(by_domain[d])) for d in domains}
    items: list[WorkItem] = []
    for i in range(n_in):
        d = domains[i % len(domains)]
        text = picks[d][(i // len(domains)) % len(picks[d])]
        items.append(WorkItem(KIND_IN_SCOPE, text, d, LOCAL_TIER if d in LOCAL_DOMAINS else CLOUD_TIER))
    oos = rng.sample([t for t, _ in clinc.oos_test], min(n_oos, len(clinc.oos_test)))
    items += [WorkItem(KIND_OOS, t, None, CLOUD_TIER) for t in oos]
    items += pii_items(n_pii, rng)
    rng.shuffle(items)
    return [
        WorkItem(w.kind, w.text, w.domain, w.expected_tier, w.pii_values, stream=(i % stream_every == 0))
        for i, w in enumerate(items)
    ]


def workload_counts(items: Sequence[WorkItem]) -> Mapping[str, int]:
    counts: dict[str, int] = {}
    for w in items:
        counts[w.kind] = counts.get(w.kind, 0) + 1
    return counts
