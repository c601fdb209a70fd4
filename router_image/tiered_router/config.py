"""The router's configuration schema: the one source of truth for what the router reads.

The operator compiles a RoutingPolicy plus its InferenceTiers and the namespace's residency labels into
one `RouterConfig`, renders it into the router ConfigMap (``render_config``), and the router loads it from
the mounted file (``load_config``). Keys are camelCase on the wire (like the CRDs) and snake_case in Python;
both are accepted on input. The module imports pydantic only (PyYAML lazily, for YAML text), so the
operator can import it cheaply.

Names here are a contract with the operator: add fields with defaults, never rename or repurpose one without
bumping ``SCHEMA_VERSION``.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

SCHEMA_VERSION = 1
DEFAULT_POLL_SECONDS = 1.0
"""How often the router checks its mounted config file. The kubelet refreshes a ConfigMap volume on its pod sync
(every 60-90 s by default), so a new config reaches the router within that plus one poll; reading one small file
a second costs nothing measurable (docs/operator.md, "Config changes")."""
"""Bumped on any incompatible change; a router refuses a config with a different version."""

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class ConfigError(ValueError):
    """A config text that cannot be used; the message names the offending field and what was expected."""


class _Model(BaseModel):
    """Common settings: camelCase aliases, unknown keys rejected (a typo must not silently change routing)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )


class TierKind(StrEnum):
    """Where a tier runs: ``local`` (inside the cluster, data stays) or ``cloud`` (data leaves the site)."""

    LOCAL = "local"
    CLOUD = "cloud"


class ResidencyClass(StrEnum):
    """The namespace's ``tiered.dev/residency`` label value.

    local-only: no cloud tier may serve; restricted: cloud only for requests without PII; unrestricted: the
    policy decides (PII handling still follows ``pii.action``).
    """

    LOCAL_ONLY = "local-only"
    RESTRICTED = "restricted"
    UNRESTRICTED = "unrestricted"


class PiiEntity(StrEnum):
    """Entity kinds the PII scanner knows."""

    EMAIL = "email"
    PHONE = "phone"
    CREDIT_CARD = "creditCard"
    IBAN = "iban"
    US_SSN = "usSsn"
    IP_ADDRESS = "ipAddress"
    API_KEY = "apiKey"


ALL_PII_ENTITIES: tuple[PiiEntity, ...] = tuple(PiiEntity)


class PiiAction(StrEnum):
    """What to do with a request in which PII was found.

    keepLocal: only tiers that may receive PII (``piiForbidden: false``) are eligible; redact: replace each
    finding by a placeholder and send the redacted text; reject: answer 400 without dispatching. In a
    ``restricted`` namespace a request with PII stays local even when redacted: redaction is best effort,
    residency is not.
    """

    KEEP_LOCAL = "keepLocal"
    REDACT = "redact"
    REJECT = "reject"


class FallbackTrigger(StrEnum):
    """Upstream failures after which the next tier in the allowed chain is tried."""

    SERVER_ERROR = "5xx"
    TIMEOUT = "timeout"
    CONNECT = "connect"


class WhenExhausted(StrEnum):
    """Once the monthly budget is spent: serve only from local tiers, or reject cloud-bound requests."""

    LOCAL_ONLY = "localOnly"
    REJECT = "reject"


class EncoderKind(StrEnum):
    """Sentence encoder used by the classifier.

    builtin: static token embeddings distilled from all-MiniLM-L6-v2 (weights installed as a Python package;
    offline, no torch, no download at run time; a weighted mean of token rows, microseconds per request).
    minilm: the full all-MiniLM-L6-v2 transformer run in numpy from the same weights (~10-50 ms per request).
    lexical: word and character n-gram TF-IDF only (no model at all). onnx / sentence-transformers: a model
    directory mounted at ``path``.
    """

    BUILTIN = "builtin"
    MINILM = "minilm"
    LEXICAL = "lexical"
    ONNX = "onnx"
    SENTENCE_TRANSFORMERS = "sentence-transformers"


class Pricing(_Model):
    """USD per one million tokens (cloud: the provider's price; local: an amortised figure)."""

    input_per_1m: float = Field(default=0.0, ge=0, alias="inputPer1M", description="USD per 1M prompt tokens.")
    output_per_1m: float = Field(default=0.0, ge=0, alias="outputPer1M", description="USD per 1M completion tokens.")


class TierTimeouts(_Model):
    """Per-tier limits on one upstream attempt, in milliseconds."""

    connect_ms: int = Field(default=2000, ge=1, description="TCP/TLS connect timeout.")
    first_byte_ms: int = Field(default=30000, ge=1, description="Time until the upstream's response headers arrive.")
    total_ms: int = Field(default=300000, ge=1, description="Whole attempt, including a streamed body.")


class TierCapabilities(_Model):
    """What a tier can serve. A request needing something a tier lacks goes to a tier that has it (within
    residency), or gets a 400 saying why. The defaults claim everything: a hand-written tier without this block
    behaves as before; the operator renders each tier's real capabilities."""

    tools: bool = Field(default=True, description="Tool/function calling (`tools`, `functions`).")
    logprobs: bool = Field(default=True, description="Token log probabilities (`logprobs`).")
    context_length: int | None = Field(
        default=None, ge=1, description="Context window in tokens (prompt + completion); None means unknown."
    )


class SloMetric(StrEnum):
    """Which latency a tier's objective is about (InferenceTier spec.slo.metric)."""

    E2E = "e2e"
    TTFT = "ttft"


class TierSlo(_Model):
    """A tier's latency objective: spillover sends requests elsewhere before its predicted latency exceeds it."""

    latency_p95_ms: int = Field(ge=1, description="95th-percentile latency objective in milliseconds.")
    metric: SloMetric = SloMetric.E2E


class TierConfig(_Model):
    """One upstream the router may send requests to (compiled from an InferenceTier)."""

    name: str = Field(min_length=1, max_length=253, description="InferenceTier name; unique.")
    kind: TierKind
    base_url: str = Field(
        alias="baseURL",
        description="OpenAI-compatible base URL including the version path, e.g. http://slm:8080/v1.",
    )
    model: str = Field(min_length=1, description="Model name sent upstream in the request body.")
    api_key_file: str | None = Field(
        default=None,
        description="Path of a mounted file holding the bearer token (cloud tiers). Never logged.",
    )
    timeouts: TierTimeouts = TierTimeouts()
    pricing: Pricing = Pricing()
    region: str | None = Field(default=None, description="Cloud region, matched against residency.allowedRegions.")
    pii_forbidden: bool = Field(
        default=False,
        description="True when requests with PII must never reach this tier. Defaults to true for cloud.",
    )
    capabilities: TierCapabilities = TierCapabilities()
    slo: TierSlo | None = Field(default=None, description="Latency objective (spillover); none when absent.")

    @model_validator(mode="before")
    @classmethod
    def _default_pii_forbidden(cls, data: Any) -> Any:
        """Cloud tiers default to PII-forbidden: the safe default when the operator leaves the flag out."""
        if isinstance(data, dict) and "piiForbidden" not in data and "pii_forbidden" not in data:
            kind = data.get("kind")
            data = {**data, "piiForbidden": str(kind) == TierKind.CLOUD.value}
        return data

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"baseURL must start with http:// or https://, got {value!r}")
        return value.rstrip("/")


class RouteConfig(_Model):
    """A route: requests similar to its examples go to its tier."""

    name: str = Field(min_length=1, max_length=253)
    tier: str = Field(description="Name of a tier in `tiers`.")
    examples: list[str] = Field(default_factory=list, description="Example utterances that define the route.")
    threshold: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="Minimum similarity; None uses classifier.defaultThreshold.",
    )
    keywords: list[str] = Field(
        default_factory=list, description="Case-insensitive whole-word keywords that select the route."
    )
    max_input_tokens: int | None = Field(
        default=None,
        ge=1,
        description="The route does not apply to prompts estimated above this many tokens.",
    )

    @model_validator(mode="after")
    def _has_signal(self) -> Self:
        if not self.examples and not self.keywords:
            raise ValueError(f"route {self.name!r} needs at least one example or keyword")
        return self


class EncoderSpec(_Model):
    """Which sentence encoder the classifier uses."""

    kind: EncoderKind = EncoderKind.BUILTIN
    path: str | None = Field(default=None, description="Model directory (onnx / sentence-transformers).")
    max_seq_length: int = Field(default=128, ge=8, le=8192, description="Tokens fed to a neural encoder.")

    @model_validator(mode="after")
    def _path_for_models(self) -> Self:
        if self.kind in (EncoderKind.ONNX, EncoderKind.SENTENCE_TRANSFORMERS) and not self.path:
            raise ValueError(f"encoder kind {self.kind.value!r} needs a path to the model directory")
        return self


class ClassifierMethod(StrEnum):
    """How route scores are computed from the encoder's vectors.

    linear: a logistic regression trained at load on the examples (scores are probabilities). knn: mean
    similarity of the k nearest examples per route. auto: linear for the builtin encoder when the policy has at
    least 20 examples that lead to the default tier (classify.resolve_method), knn otherwise.
    """

    AUTO = "auto"
    LINEAR = "linear"
    KNN = "knn"


class ClassifierConfig(_Model):
    """Semantic classification settings."""

    encoder: EncoderSpec = EncoderSpec()
    method: ClassifierMethod = ClassifierMethod.AUTO
    default_threshold: float | Literal["auto"] = Field(
        default="auto",
        description="Score a route needs when it sets no threshold of its own; auto: derived at load from the "
        "policy's own examples for targetOutOfScopeRate (calibrate.py).",
    )
    target_out_of_scope_rate: float = Field(
        default=0.85,
        gt=0.0,
        lt=1.0,
        description="auto thresholds: the share of the policy's out-of-scope examples (held out) that must go to "
        "the default tier.",
    )
    default_examples: list[str] = Field(
        default_factory=list,
        description="Utterances that belong to no route (out of scope): close matches go to defaultTier.",
    )

    @field_validator("default_threshold")
    @classmethod
    def _threshold_range(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not -1.0 <= value <= 1.0:
            raise ValueError(f"defaultThreshold must be 'auto' or a number in [-1, 1], got {value}")
        return value


class PiiConfig(_Model):
    """PII scanning: which entities to look for and what to do on a finding."""

    entities: list[PiiEntity] = Field(default_factory=lambda: list(ALL_PII_ENTITIES))
    action: PiiAction = PiiAction.KEEP_LOCAL
    strict: bool | None = Field(
        default=None,
        description="Strict mode: ambiguous long digit runs, random-looking long tokens and loosely spelled "
        "e-mail addresses count as PII too (more false positives, fewer misses). None: on unless the namespace is "
        "unrestricted.",
    )


class ResidencyConfig(_Model):
    """The namespace's residency policy (from its labels) and the policy's PII handling."""

    namespace_class: ResidencyClass = Field(
        default=ResidencyClass.RESTRICTED, description="Value of the namespace label tiered.dev/residency."
    )
    allowed_regions: list[str] | None = Field(
        default=None,
        description="tiered.dev/allowed-regions; None means any. A cloud tier outside it is never used.",
    )
    pii: PiiConfig = PiiConfig()

    @property
    def pii_strict(self) -> bool:
        """Whether the PII scan runs in strict mode: `pii.strict` when set, else everywhere but unrestricted."""
        if self.pii.strict is not None:
            return self.pii.strict
        return self.namespace_class is not ResidencyClass.UNRESTRICTED


class FallbackConfig(_Model):
    """Retrying along the tier chain when an upstream fails before any byte reached the client."""

    timeout_ms: int | None = Field(
        default=None,
        ge=1,
        description="Per-attempt time to first byte; overrides the tier's firstByteMs when set.",
    )
    retries: int = Field(default=1, ge=0, le=10, description="Further tiers tried after the first one fails.")
    on: list[FallbackTrigger] = Field(default_factory=lambda: list(FallbackTrigger))


class CircuitBreakerConfig(_Model):
    """Per-upstream breaker: after `failureThreshold` consecutive failures skip the tier for `openSeconds`."""

    failure_threshold: int = Field(default=5, ge=1)
    open_seconds: float = Field(default=30.0, gt=0)


class BudgetConfig(_Model):
    """Budget state, computed by the operator from month-to-date spend."""

    monthly_usd: float | None = Field(default=None, ge=0, alias="monthlyUSD", description="Monthly budget in USD.")
    exhausted: bool = False
    when_exhausted: WhenExhausted = WhenExhausted.LOCAL_ONLY


class SpilloverConfig(_Model):
    """Spillover on load: a local tier that is saturated (its queue answers 429), starting (not accepting
    connections, or 503 while it loads) or whose predicted latency would exceed its SLO sends the requests residency
    lets leave to the next tier they may reach. Requests that may not leave wait for the local tier up to
    `maxLocalWaitMs`, then get its 429 (with Retry-After) or 503."""

    enabled: bool = False
    max_local_wait_ms: int = Field(
        default=0, ge=0, le=600000, description="How long a request that must stay local waits for a local slot."
    )


class OverrideConfig(_Model):
    """Whether a client may pin a tier (header or `model` field). Never relaxes residency."""

    enabled: bool = False
    header: str = Field(default="x-tiered-tier", description="Request header naming the tier.")
    allowed_tiers: list[str] | None = Field(default=None, description="Tiers a client may pin; None means all tiers.")


class RouterConfig(_Model):
    """Everything one router needs to decide and dispatch for one RoutingPolicy."""

    schema_version: Literal[1] = Field(default=1, description="Config schema version (SCHEMA_VERSION).")
    policy: str = Field(default="default", description="RoutingPolicy name (metrics label, `/v1/models`).")
    namespace: str = Field(default="default", description="Namespace of the policy.")
    tiers: list[TierConfig] = Field(min_length=1)
    tier_order: list[str] | None = Field(
        default=None, description="Fallback chain order; None means the order of `tiers`."
    )
    default_tier: str
    routes: list[RouteConfig] = Field(default_factory=list)
    classifier: ClassifierConfig = ClassifierConfig()
    residency: ResidencyConfig = ResidencyConfig()
    fallback: FallbackConfig = FallbackConfig()
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    budget: BudgetConfig = BudgetConfig()
    override: OverrideConfig = OverrideConfig()
    spillover: SpilloverConfig = SpilloverConfig()
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024, description="Larger bodies get 413.")
    auto_models: list[str] = Field(
        default_factory=lambda: ["auto"],
        description="`model` values that mean 'let the router decide' (besides the policy name).",
    )

    @model_validator(mode="after")
    def _references(self) -> Self:
        names = [t.name for t in self.tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tier names must be unique; duplicated: {dupes}")
        known = set(names)
        if self.default_tier not in known:
            raise ValueError(f"defaultTier {self.default_tier!r} is not one of tiers {names}")
        route_names = [r.name for r in self.routes]
        rdupes = sorted({n for n in route_names if route_names.count(n) > 1})
        if rdupes:
            raise ValueError(f"route names must be unique; duplicated: {rdupes}")
        for route in self.routes:
            if route.tier not in known:
                raise ValueError(f"route {route.name!r} names tier {route.tier!r}, not one of {names}")
        if self.tier_order is not None:
            unknown = [n for n in self.tier_order if n not in known]
            if unknown or len(set(self.tier_order)) != len(self.tier_order):
                raise ValueError(f"tierOrder must list distinct tiers from {names}; got {self.tier_order}")
        for pinned in self.override.allowed_tiers or []:
            if pinned not in known:
                raise ValueError(f"override.allowedTiers names unknown tier {pinned!r}")
        if self.residency.namespace_class is ResidencyClass.LOCAL_ONLY and not any(
            t.kind is TierKind.LOCAL for t in self.tiers
        ):
            raise ValueError("residency namespaceClass local-only needs at least one local tier")
        return self

    def tier(self, name: str) -> TierConfig | None:
        """The tier called `name`, or None."""
        for t in self.tiers:
            if t.name == name:
                return t
        return None

    def chain(self) -> list[TierConfig]:
        """All tiers in fallback order (`tierOrder`, then any tiers it omits, in declaration order)."""
        order = list(self.tier_order or [])
        order += [t.name for t in self.tiers if t.name not in order]
        by_name = {t.name: t for t in self.tiers}
        return [by_name[n] for n in order]


def parse_config(data: Any) -> RouterConfig:
    """Validate an already-parsed mapping; raises ConfigError naming the field at fault."""
    if not isinstance(data, dict):
        raise ConfigError(f"router config must be a mapping, got {type(data).__name__}")
    version = data.get("schemaVersion", data.get("schema_version", SCHEMA_VERSION))
    if version != SCHEMA_VERSION:
        raise ConfigError(f"schemaVersion {version!r} is not supported; this router reads {SCHEMA_VERSION}")
    try:
        return RouterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def load_config(text: str) -> RouterConfig:
    """Parse YAML or JSON text (as mounted from the ConfigMap) into a validated RouterConfig."""
    try:
        data = json.loads(text)
    except ValueError:
        import yaml  # lazy: JSON is what the operator renders; YAML is for hand-written files

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config is neither valid JSON nor YAML: {exc}") from None
    return parse_config(data)


def render_config(config: RouterConfig) -> str:
    """The canonical JSON the operator writes into the ConfigMap (sorted keys, so hashes are stable)."""
    return json.dumps(config.model_dump(mode="json", by_alias=True), sort_keys=True, indent=2) + "\n"


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid router config: " + "; ".join(parts)
