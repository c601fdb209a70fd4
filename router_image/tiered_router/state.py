"""The router's live state (config, classifier, breakers, API keys) and its atomic reload from the mounted file.

A reload builds a complete new `RouterState` off the event loop and then swaps one reference, so a request sees
either the old config or the new one, never a mix. An invalid file leaves the last good state in force and is
reported in the log and the `tiered_router_config_reloads{result="invalid"}` metric.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .breaker import CircuitBreaker
from .classify import RouteClassifier, classifier_inputs_digest
from .config import DEFAULT_POLL_SECONDS, ConfigError, RouterConfig, TierConfig, load_config
from .encoders import load_encoder
from .metrics import RouterMetrics
from .upstream_http import Endpoint

log = logging.getLogger("tiered_router")


@dataclass(frozen=True, slots=True)
class Upstream:
    """Per-tier data the dispatcher needs on every request, computed once per config (not per request)."""

    tier: TierConfig
    breaker: CircuitBreaker
    chat: Endpoint  # base URL + /chat/completions, request head rendered (Host, Content-Type, Authorization)
    completions: Endpoint  # base URL + /completions
    connect_s: float  # connectMs
    first_byte_s: float  # fallback.timeoutMs, else the tier's firstByteMs
    total_s: float  # totalMs: the whole attempt, body or stream included


@dataclass
class RouterState:
    """Everything derived from one config; replaced whole on reload."""

    config: RouterConfig
    classifier: RouteClassifier
    classifier_key: str
    config_hash: str
    api_keys: dict[str, str]
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    max_price: tuple[float, float] = (0.0, 0.0)
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    decision_cost_s: float = 0.0
    """Running average of the decision pipeline's duration, so a cheap classifier runs inline on the loop and
    only an expensive one pays for a worker-thread hop (server.py)."""


def _upstream(config: RouterConfig, tier: TierConfig, breaker: CircuitBreaker, key: str | None) -> Upstream:
    headers = {"Content-Type": "application/json"}
    if key and key.isascii() and key.isprintable():
        headers["Authorization"] = f"Bearer {key}"
    elif key:
        log.warning("tier %s: the API key file holds characters a header cannot carry; key not sent", tier.name)
    t = tier.timeouts
    return Upstream(
        tier=tier,
        breaker=breaker,
        chat=Endpoint.from_url(tier.base_url + "/chat/completions", headers),
        completions=Endpoint.from_url(tier.base_url + "/completions", headers),
        connect_s=t.connect_ms / 1000,
        first_byte_s=(config.fallback.timeout_ms or t.first_byte_ms) / 1000,
        total_s=t.total_ms / 1000,
    )


def read_api_keys(config: RouterConfig) -> dict[str, str]:
    """Bearer tokens by tier name, read from the mounted files. Never logged; a missing file is reported by path."""
    keys: dict[str, str] = {}
    for tier in config.tiers:
        if tier.api_key_file:
            try:
                keys[tier.name] = Path(tier.api_key_file).read_text().strip()
            except OSError as exc:
                log.warning("tier %s: cannot read API key file %s: %s", tier.name, tier.api_key_file, exc.strerror)
    return keys


def _breaker_key(tier: TierConfig) -> str:
    return f"{tier.name}|{tier.base_url}"


def build_state(config: RouterConfig, text: str, previous: RouterState | None = None) -> RouterState:
    """A new state for `config`. What did not change carries over: breakers of unchanged upstreams (a reload must
    not reset them) and the classifier when its inputs are the same, because building one encodes every example and
    trains (and, with auto thresholds, calibrates) the head: seconds of CPU that a budget flip or a price edit must
    not cost."""
    inputs_key = classifier_inputs_digest(config)
    if previous is not None and previous.classifier_key == inputs_key:
        classifier = previous.classifier
    else:
        classifier = RouteClassifier(config, load_encoder(config.classifier.encoder))
    breakers: dict[str, CircuitBreaker] = {}
    cb = config.circuit_breaker
    for tier in config.tiers:
        key = _breaker_key(tier)
        old = previous.breakers.get(key) if previous else None
        if old is not None and (old.failure_threshold, old.open_seconds) == (cb.failure_threshold, cb.open_seconds):
            breakers[key] = old
        else:
            breakers[key] = CircuitBreaker(cb.failure_threshold, cb.open_seconds)
    max_price = max(((t.pricing.input_per_1m, t.pricing.output_per_1m) for t in config.tiers), key=sum)
    api_keys = read_api_keys(config)
    upstreams = {t.name: _upstream(config, t, breakers[_breaker_key(t)], api_keys.get(t.name)) for t in config.tiers}
    return RouterState(
        config=config,
        classifier=classifier,
        classifier_key=inputs_key,
        config_hash=hashlib.sha256(text.encode()).hexdigest()[:16],
        api_keys=api_keys,
        breakers=breakers,
        max_price=max_price,
        upstreams=upstreams,
    )


class ConfigHolder:
    """Owns the current state and reloads it when the file's content (or an API key file) changes."""

    def __init__(self, path: Path, metrics: RouterMetrics, poll_seconds: float = DEFAULT_POLL_SECONDS) -> None:
        self.path = path
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self.state: RouterState | None = None
        self._fingerprint: bytes | None = None
        self.last_error: str | None = None

    def _fingerprint_now(self) -> tuple[bytes, str]:
        text = self.path.read_text()
        h = hashlib.sha256(text.encode())
        if self.state is not None:
            for tier in self.state.config.tiers:
                if tier.api_key_file:
                    try:
                        h.update(Path(tier.api_key_file).read_bytes())
                    except OSError:
                        h.update(b"<missing>")
        return h.digest(), text

    def load_once(self) -> bool:
        """Read and apply the file if it changed; True when a new state was installed."""
        try:
            fingerprint, text = self._fingerprint_now()
        except OSError as exc:
            self._invalid(f"cannot read {self.path}: {exc.strerror}")
            return False
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        try:
            config = load_config(text)
            state = build_state(config, text, self.state)
        except ConfigError as exc:
            self._invalid(str(exc))
            return False
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            self._invalid(f"cannot build router from {self.path}: {exc}")
            return False
        old = self.state
        self.state = state
        self.last_error = None
        self.metrics.reloads.labels("success").inc()
        self.metrics.config_valid.set(1)
        if old is not None:
            self.metrics.config_info.remove(old.config.policy, old.config_hash)
        self.metrics.config_info.labels(config.policy, state.config_hash).set(1)
        self.metrics.route_threshold.clear()
        clf = state.classifier
        for route, threshold, source in zip(clf.routes, clf.thresholds, clf.threshold_sources, strict=True):
            self.metrics.route_threshold.labels(config.policy, route.name, source).set(threshold)
        if clf.calibration is not None:
            log.info("auto threshold %.4f (%s)", clf.calibration.threshold, clf.calibration.summary())
        self.metrics.declare_tiers([t.name for t in config.tiers])
        log.info("config %s loaded: policy %s, %d tiers, %d routes", state.config_hash, config.policy,
                 len(config.tiers), len(config.routes))  # fmt: skip
        return True

    def _invalid(self, why: str) -> None:
        self.last_error = why
        self.metrics.reloads.labels("invalid").inc()
        self.metrics.config_valid.set(0)
        log.error("config %s rejected, keeping the last good config: %s", self.path, why)

    async def watch(self) -> None:
        """Poll for changes (a ConfigMap update swaps a symlink; polling content sees it without inotify)."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            await asyncio.to_thread(self.load_once)
