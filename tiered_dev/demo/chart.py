"""The demo's PNG: latency per tier over time and cloud spend versus an all-cloud baseline, from Prometheus
range queries over the workload window (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

Series = Sequence[tuple[float, float]]


@dataclass(frozen=True)
class ChartData:
    start: float
    p95_ms: Mapping[str, Series]
    """tier → (unix time, p95 ms over a short rate window)."""
    slo_ms: Mapping[str, int]
    rps: Mapping[str, Series]
    """tier → (unix time, requests/s)."""
    spend: Series
    """(unix time, cumulative USD spent since the workload started)."""
    all_cloud: Series
    """(unix time, cumulative USD the same traffic would have cost on the cloud tier)."""
    kinds: Mapping[str, str]
    """tier → local | cloud (colours: local green, cloud blue)."""
    title: str


def render(data: ChartData, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 10), sharex=True, constrained_layout=True)
    ax_lat, ax_rps, ax_usd = axes
    palettes = {"local": ["tab:green", "tab:olive"], "cloud": ["tab:blue", "tab:purple"]}
    colors: dict[str, str] = {}
    for tier in sorted(set(data.p95_ms) | set(data.rps) | set(data.slo_ms)):
        options = palettes.get(data.kinds.get(tier, ""), ["tab:gray"])
        used = sum(1 for t in colors if data.kinds.get(t) == data.kinds.get(tier))
        colors[tier] = options[used % len(options)]

    def xs(series: Series) -> list[float]:
        return [t - data.start for t, _ in series]

    for tier, series in sorted(data.p95_ms.items()):
        ax_lat.plot(xs(series), [v for _, v in series], label=f"{tier} p95", color=colors[tier])
    for tier, slo in sorted(data.slo_ms.items()):
        ax_lat.axhline(slo, linestyle="--", linewidth=1, color=colors[tier], label=f"{tier} SLO {slo} ms")
    ax_lat.set_ylabel("p95 latency (ms)")
    ax_lat.set_title("Router latency per tier (p95 over 10 s, from tiered_router_request_latency_seconds)")
    ax_lat.legend(loc="upper right", fontsize=8)
    ax_lat.grid(alpha=0.3)

    for tier, series in sorted(data.rps.items()):
        ax_rps.plot(xs(series), [v for _, v in series], label=tier, color=colors[tier])
    ax_rps.set_ylabel("requests / s")
    ax_rps.set_title("Requests served per tier (rate over 5 s)")
    ax_rps.legend(loc="upper right", fontsize=8)
    ax_rps.grid(alpha=0.3)

    ax_usd.plot(xs(data.all_cloud), [v for _, v in data.all_cloud], label="all-cloud baseline", color="tab:red")
    ax_usd.plot(xs(data.spend), [v for _, v in data.spend], label="actual spend (hybrid)", color="black")
    baseline = dict(data.all_cloud)
    common = [(t - data.start, v, baseline[t]) for t, v in data.spend if t in baseline]
    if common:
        ax_usd.fill_between([t for t, _, _ in common], [v for _, v, _ in common], [b for _, _, b in common],
                            color="tab:green", alpha=0.15, label="avoided")
    ax_usd.set_ylabel("USD (cumulative)")
    ax_usd.set_xlabel("seconds since the workload started")
    ax_usd.set_title("Spend vs sending everything to the cloud tier (tiered_router_cost_usd + avoided_cost_usd)")
    ax_usd.legend(loc="upper left", fontsize=8)
    ax_usd.grid(alpha=0.3)
    fig.suptitle(data.title)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out
