"""Every metric the SLM server exports, named in one place.

Names carry the ``tiered_slm_`` prefix; dashboards and the autoscaler's queries depend on them, so change them
only together with manifests/monitoring. Each server owns its registry (tests run several in one process).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from tiered_slm.speculative import CountingProposer

PREFIX = "tiered_slm"
TTFT_BUCKETS = (0.005, 0.01, 0.015, 0.025, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 2.0, 5.0, 10.0)
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
RATE_BUCKETS = (1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 250, 500, 1000, 2500, 5000)


class _SpeculativeCollector:
    """Reads the proposer's counters at scrape time (they live on the worker thread)."""

    def __init__(self, proposer: CountingProposer, mode: str) -> None:
        self.proposer = proposer
        self.mode = mode

    def collect(self) -> list[GaugeMetricFamily]:
        stats = self.proposer.snapshot()
        proposed = GaugeMetricFamily(f"{PREFIX}_speculative_proposed_tokens",
                                     "Draft tokens proposed and decided (accepted or rejected)", labels=["mode"])
        proposed.add_metric([self.mode], stats.proposed)
        accepted = GaugeMetricFamily(f"{PREFIX}_speculative_accepted_tokens",
                                     "Draft tokens the served model accepted", labels=["mode"])
        accepted.add_metric([self.mode], stats.accepted)
        rate = GaugeMetricFamily(f"{PREFIX}_speculative_acceptance_rate",
                                 "Accepted / proposed draft tokens since start", labels=["mode"])
        rate.add_metric([self.mode], stats.rate)
        return [proposed, accepted, rate]


class SlmMetrics:
    """The server's metric objects, bound to one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(f"{PREFIX}_requests", "Requests by endpoint and HTTP status",
                                ["endpoint", "status"], registry=r)
        self.rejections = Counter(f"{PREFIX}_rejected_requests",
                                  "Requests refused before generation, by reason", ["reason"], registry=r)
        self.ttft = Histogram(f"{PREFIX}_time_to_first_token_seconds",
                              "Arrival to first generated token (queue wait and prefill included)",
                              buckets=TTFT_BUCKETS, registry=r)
        self.duration = Histogram(f"{PREFIX}_request_duration_seconds", "Arrival to last token",
                                  buckets=DURATION_BUCKETS, registry=r)
        self.queue_wait = Histogram(f"{PREFIX}_queue_wait_seconds", "Time admitted requests waited for the model",
                                    buckets=TTFT_BUCKETS, registry=r)
        self.decode_rate = Histogram(f"{PREFIX}_decode_tokens_per_second",
                                     "Per-request decode speed (tokens after the first / time after the first)",
                                     buckets=RATE_BUCKETS, registry=r)
        self.prompt_tokens = Counter(f"{PREFIX}_prompt_tokens", "Prompt tokens processed", registry=r)
        self.completion_tokens = Counter(f"{PREFIX}_completion_tokens", "Tokens generated", registry=r)
        self.structured = Counter(f"{PREFIX}_structured_outputs", "Answers under a JSON response_format by result "
                                  "(valid: returned; incomplete: cut off by the token limit; invalid: failed "
                                  "validation; neither is returned)", ["result"], registry=r)
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Requests admitted and waiting for the model",
                                 registry=r)
        self.in_flight = Gauge(f"{PREFIX}_in_flight_requests", "Requests generating now", registry=r)
        self.ready = Gauge(f"{PREFIX}_ready", "1 when the model is loaded and warmed up and not draining",
                           registry=r)
        self.model_info = Gauge(f"{PREFIX}_model_info", "The loaded model (value is always 1)",
                                ["model", "quantization", "speculative"], registry=r)
        self.model_size = Gauge(f"{PREFIX}_model_size_bytes", "Size of the loaded GGUF file", registry=r)
        self.model_load = Gauge(f"{PREFIX}_model_load_seconds", "Time to load the model into llama.cpp",
                                registry=r)

    def watch_speculation(self, proposer: CountingProposer, mode: str) -> None:
        self.registry.register(_SpeculativeCollector(proposer, mode))
