"""RoutingPolicy (tiered.dev/v1alpha1): how one router chooses a tier per request.

This module is the only place the RoutingPolicy schema is written; crds/routingpolicies.yaml is generated from it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field

from tiered_operator.api.common import (
    ApiModel,
    CelRule,
    Condition,
    DNSLabel,
    ObjectMeta,
    ResourceRequirements,
    USDAmount,
    matching,
    require_unique,
)

PIIEntity = Literal["EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "SSN", "IP_ADDRESS", "API_KEY"]
PII_ENTITIES: tuple[str, ...] = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "SSN", "IP_ADDRESS", "API_KEY")
PIIAction = Literal["keepLocal", "redact", "reject"]
FallbackTrigger = Literal["5xx", "timeout", "connect"]
WhenExhausted = Literal["localOnly", "reject"]
RouterMode = Literal["sidecar", "gateway"]
EncoderType = Literal["builtin", "minilm", "lexical", "onnx", "sentence-transformers"]
BUNDLED_ENCODERS: tuple[str, ...] = ("builtin", "minilm", "lexical")  # in the router image: no path

ROUTING_POLICY_CONDITION_TYPES: tuple[str, ...] = ("Ready", "TiersResolved", "ResidencyCompliant", "BudgetOK")

THRESHOLD_PATTERN = "^(0([.][0-9]{1,3})?|1([.]0{1,3})?)$"
Threshold = Annotated[
    str,
    matching(
        THRESHOLD_PATTERN,
        'threshold must be a decimal string between "0" and "1" with at most 3 decimals, e.g. "0.65"',
        max_length=5,
    ),
]
"""Similarity thresholds are decimal strings (API conventions avoid floats in spec)."""

ClassifierThreshold = Annotated[
    str,
    matching(
        "^(auto|0([.][0-9]{1,3})?|1([.]0{1,3})?)$",
        'threshold must be "auto" or a decimal string between "0" and "1" with at most 3 decimals, e.g. "0.65"',
        max_length=5,
    ),
]
"""The policy-wide threshold: a decimal string, or auto (derived from the policy's own examples)."""

RATE_PATTERN = "^0[.](0[1-9][0-9]?|00[1-9]|[1-9][0-9]{0,2})$"
Rate = Annotated[
    str,
    matching(RATE_PATTERN, 'must be a decimal string strictly between "0" and "1", e.g. "0.85"', max_length=5),
]

ENCODER_PATH_PATTERN = "^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/[^ ]*|/[^ ]*)$"
EncoderPath = Annotated[
    str,
    matching(
        ENCODER_PATH_PATTERN,
        "encoder path must be pvc://<claim>/<dir> or an absolute path inside the router image",
        max_length=1024,
    ),
]
Keyword = Annotated[str, Field(min_length=1, max_length=256)]
Utterance = Annotated[str, Field(min_length=1, max_length=2000)]


class Route(ApiModel):
    """A named intent: requests similar to its examples (or containing a keyword) go to its tier."""

    name: DNSLabel = Field(description="Route name, unique in the policy; reported in the x-tiered-route header.")
    tier: DNSLabel = Field(description="InferenceTier (listed in spec.tiers) that serves this route.")
    examples: list[Utterance] = Field(
        default_factory=list,
        max_length=500,
        description="Example utterances; a request is matched to the route with the most similar example.",
    )
    keywords: list[Keyword] = Field(
        default_factory=list,
        max_length=200,
        description="Case-insensitive keywords that select this route without the classifier.",
    )
    threshold: Threshold | None = Field(
        default=None,
        description='Minimum similarity (decimal string "0".."1") to take this route; defaults to '
        "classifier.threshold. Below it the request goes to defaultTier.",
    )
    max_input_tokens: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Requests with more input tokens than this never take this route (e.g. long prompts skip a "
        "small-context SLM).",
    )

    cel_rules = (
        CelRule(
            rule="(has(self.examples) && size(self.examples) > 0) || (has(self.keywords) && size(self.keywords) > 0)",
            message="a route needs at least one example or keyword",
            check=lambda r: bool(r.examples) or bool(r.keywords),
            field_path=".examples",
            reason="FieldValueRequired",
        ),
    )


class Encoder(ApiModel):
    """The sentence encoder that embeds requests and route examples."""

    type: EncoderType = Field(
        default="builtin",
        description="builtin: the router's offline default (static token vectors distilled from MiniLM-L6 plus "
        "a linear head; microseconds per request); minilm: the full MiniLM-L6 transformer, more accurate, "
        "10-50 ms per request; lexical: word and character n-grams only, no model; onnx or "
        "sentence-transformers: a model loaded from path.",
    )
    path: EncoderPath | None = Field(
        default=None,
        description="Model directory: pvc://<claim>/<dir> (mounted read-only) or an absolute path in the router "
        "image. Required for onnx and sentence-transformers; not allowed for the bundled builtin, minilm and lexical.",
    )

    cel_rules = (
        CelRule(
            rule=f"self.type in {list(BUNDLED_ENCODERS)!r} ? !has(self.path) : has(self.path)",
            message="encoder path is required for onnx and sentence-transformers, and not allowed for builtin, "
            "minilm or lexical",
            check=lambda e: (e.path is None) == (e.type in BUNDLED_ENCODERS),
            field_path=".path",
        ),
    )


class Classifier(ApiModel):
    """How requests are matched to routes."""

    encoder: Encoder = Field(default_factory=Encoder, description="The embedding model.")
    threshold: ClassifierThreshold = Field(
        default="auto",
        description='Threshold for routes without their own: a decimal string such as "0.5", or "auto" (the '
        "default): the router derives it from the policy's own examples, scoring each example without it, so "
        "that targetOutOfScopeRate of the out-of-scope examples (routes on defaultTier) go to defaultTier. The "
        "derived value is reported in status.classifier and by tiered explain.",
    )
    target_out_of_scope_rate: Rate = Field(
        default="0.85",
        description='For threshold "auto": the share of the policy\'s out-of-scope examples (held out) that must '
        'go to defaultTier, as a decimal string, e.g. "0.85". Higher sends more unfamiliar requests to '
        "defaultTier and fewer in-scope ones to their route.",
    )


class PII(ApiModel):
    """Which personal data the router looks for and what it does when it finds some."""

    entities: Annotated[list[PIIEntity], AfterValidator(require_unique)] = Field(
        default=["EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "SSN", "IP_ADDRESS", "API_KEY"],
        max_length=16,
        description="Entity types to detect: EMAIL, PHONE, CREDIT_CARD, IBAN, SSN, IP_ADDRESS, API_KEY.",
        json_schema_extra={"uniqueItems": True},
    )
    action: PIIAction = Field(
        default="keepLocal",
        description="keepLocal: serve the request on a local tier only; redact: mask the entities, then route "
        "normally; reject: answer 400.",
    )
    strict: bool | None = Field(
        default=None,
        description="Strict mode: ambiguous long digit runs, random-looking tokens and loosely spelled e-mail "
        "addresses count as PII too (fewer misses, more requests kept local). Unset: on, unless the namespace is "
        "labelled tiered.dev/residency=unrestricted.",
    )


class Residency(ApiModel):
    """Data-residency rules applied before classification (the namespace residency label applies too)."""

    pii: PII = Field(default_factory=PII, description="PII detection and the action taken on a hit.")


class Fallback(ApiModel):
    """Retry along the tier order when a tier fails; never onto a tier the request may not reach."""

    timeout_ms: int = Field(
        default=30000, ge=100, le=600000, description="Per-attempt timeout in milliseconds before falling back."
    )
    retries: int = Field(default=1, ge=0, le=5, description="How many further tiers to try after the first.")
    triggers: Annotated[list[FallbackTrigger], AfterValidator(require_unique)] = Field(
        default=["5xx", "timeout", "connect"],
        max_length=3,
        description="Failures that trigger a fallback: 5xx (upstream server error), timeout, connect (connection "
        "refused/reset). Named triggers, not on, because YAML 1.1 reads a bare on: key as true.",
        json_schema_extra={"uniqueItems": True},
    )


class Budget(ApiModel):
    """A monthly cloud spend cap for this policy."""

    monthly_usd: USDAmount = Field(
        alias="monthlyUSD", description='Monthly cloud spend cap in USD as a decimal string, e.g. "500".'
    )
    when_exhausted: WhenExhausted = Field(
        default="localOnly",
        description="localOnly: serve everything on local tiers once the cap is reached; reject: answer 429.",
    )

    @property
    def monthly(self) -> Decimal:
        """The cap as a Decimal."""
        return Decimal(self.monthly_usd)


class Spillover(ApiModel):
    """What the router does when a local tier is busy: saturated (its queue answers 429), starting (no pod accepts
    connections yet, or the model is still loading) or predicted to miss its SLO (InferenceTier spec.slo)."""

    enabled: bool = Field(
        default=True,
        description="Send the requests residency lets leave to the next tier they may reach instead of waiting "
        "(never a request residency keeps local: those wait). false: every request waits for its tier.",
    )
    max_local_wait_ms: int = Field(
        default=5000,
        ge=0,
        le=600000,
        description="How long a request that must stay local is retried while the local tier answers 429 or is "
        "starting, before it gets the tier's 429 (with Retry-After) or 503. Applies when enabled.",
    )


class Router(ApiModel):
    """How the router runs."""

    mode: RouterMode = Field(
        default="sidecar",
        description="sidecar: a router container in each local tier pod of the policy; gateway: a router "
        "Deployment of its own (`<policy>-gateway`: Deployment, Service, PodDisruptionBudget) that sends requests to "
        "the local tiers' Services.",
    )
    replicas: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Gateway mode: router pods (a PodDisruptionBudget keeps all but one through a node drain). "
        "Sidecar mode: unused (one router per local tier pod).",
    )
    resources: ResourceRequirements | None = Field(default=None, description="Router container resources.")


class RoutingPolicySpec(ApiModel):
    """Desired routing behaviour: which tiers, which routes, and the residency, fallback and budget rules."""

    tiers: Annotated[list[DNSLabel], AfterValidator(require_unique)] = Field(
        min_length=1,
        max_length=16,
        description="InferenceTiers in this namespace the policy may use, in fallback order (no duplicates).",
        json_schema_extra={"uniqueItems": True},
    )
    default_tier: DNSLabel = Field(description="Tier for requests no route matches; must be listed in tiers.")
    routes: list[Route] = Field(
        default_factory=list,
        max_length=64,
        description="Named routes; each route's tier must be listed in tiers.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    classifier: Classifier | None = Field(default=None, description="Request classifier; builtin encoder if absent.")
    residency: Residency | None = Field(default=None, description="PII handling; defaults apply if absent.")
    fallback: Fallback | None = Field(default=None, description="Fallback behaviour; defaults apply if absent.")
    budget: Budget | None = Field(default=None, description="Monthly cloud spend cap; unlimited if absent.")
    router: Router | None = Field(default=None, description="Router deployment mode; sidecar if absent.")
    spillover: Spillover | None = Field(
        default=None, description="Spillover from busy local tiers; on (5 s local wait) if absent."
    )

    cel_rules = (
        CelRule(
            rule="self.defaultTier in self.tiers",
            message="defaultTier must be one of the names listed in tiers",
            check=lambda s: s.default_tier in s.tiers,
            field_path=".defaultTier",
        ),
        CelRule(
            rule="!has(self.routes) || self.routes.all(r, r.tier in self.tiers)",
            message="every route's tier must be one of the names listed in tiers",
            check=lambda s: all(r.tier in s.tiers for r in s.routes),
            field_path=".routes",
        ),
        CelRule(
            rule="!has(self.routes) || self.routes.all(r, self.routes.exists_one(o, o.name == r.name))",
            message="route names must be unique",
            check=lambda s: len({r.name for r in s.routes}) == len(s.routes),
            field_path=".routes",
        ),
    )


class RouteThresholdStatus(ApiModel):
    """The threshold a route's routers apply, as they report it (a derived one for threshold "auto")."""

    route: str = Field(max_length=253, description="Route name.")
    threshold: str = Field(max_length=16, description='The threshold as a decimal string, e.g. "0.361".')
    source: Literal["route", "policy", "auto"] = Field(
        description="route: the route's own threshold; policy: classifier.threshold; auto: derived by the router "
        "from the policy's examples for classifier.targetOutOfScopeRate."
    )


class RoutingPolicyStatus(ApiModel):
    """Observed state of a RoutingPolicy; decimals are strings (no floats in the API)."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation this status describes."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        max_length=32,
        description="Ready, TiersResolved, ResidencyCompliant and BudgetOK, per Kubernetes API conventions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    config_hash: str | None = Field(
        default=None, max_length=128, description="Hash of the router config rendered from this policy."
    )
    endpoint: str | None = Field(
        default=None,
        max_length=512,
        description="Gateway mode: the gateway router's OpenAI base URL inside the cluster (point the openai SDK "
        "here). Sidecar mode: absent (each local tier's Service serves the policy).",
    )
    local_share: str | None = Field(
        default=None,
        max_length=16,
        description='Fraction of requests served locally this month, as a decimal string, e.g. "0.73".',
    )
    month_to_date_usd: str | None = Field(
        default=None, alias="monthToDateUSD", max_length=32, description="Cloud spend this month in USD."
    )
    avoided_usd: str | None = Field(
        default=None,
        alias="avoidedUSD",
        max_length=32,
        description="What this month's traffic would have cost on the default cloud tier, minus what it cost.",
    )

    route_thresholds: list[RouteThresholdStatus] | None = Field(
        default=None,
        max_length=1000,
        description="Per route, the threshold the policy's routers loaded (from their metrics; the budget loop "
        "writes it with localShare).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["route"]},
    )

    def condition(self, type_: str) -> Condition | None:
        """The condition of this type, if present."""
        return next((c for c in self.conditions or [] if c.type == type_), None)


class RoutingPolicy(ApiModel):
    """How one router decides, per request, which InferenceTier serves it."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["tiered.dev/v1alpha1"] = Field(
        default="tiered.dev/v1alpha1", description="tiered.dev/v1alpha1"
    )
    kind: Literal["RoutingPolicy"] = Field(default="RoutingPolicy", description="RoutingPolicy")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: RoutingPolicySpec = Field(description="Desired state.")
    status: RoutingPolicyStatus | None = Field(default=None, description="Observed state (written by the operator).")

    @classmethod
    def from_k8s(cls, body: Any) -> RoutingPolicy:
        """Parse an object as returned by the API server or kopf (a Mapping)."""
        return cls.model_validate(dict(body))
