"""Where the PII scanner's promises end: `python bench/reliability/pii_unclaimed_probe.py`.

The stress test holds the scanner to what router_image/tiered_router/pii.py says it handles (and it does: 0 misses
over 10,000 requests). This probe measures disguises it does *not* claim, so a platform team knows what `restricted`
does not cover: a value split over two messages, spelled-out digits, "at"/"dot" e-mails, homoglyphs, a bare 9-digit
SSN, slash-separated IBANs, base64. It runs the router's own request parsing and scan (no sockets) and writes the
detection rate per disguise to JSON; nothing here is a pass/fail.
"""

from __future__ import annotations

import base64
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

from pii_corpus import luhn_complete, make_iban  # noqa: E402

from tiered_router.config import PiiEntity  # noqa: E402
from tiered_router.pii import scan  # noqa: E402
from tiered_router.request import parse_body  # noqa: E402

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CYRILLIC = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "c": "\u0441", "p": "\u0440"}


def _email(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghij") for _ in range(6)) + "@example.com"


def _card(rng: random.Random) -> str:
    return luhn_complete("4", 16, rng)


PROBES: dict[str, Callable[[random.Random], list[dict[str, str]]]] = {
    "card split over two messages": lambda r: (lambda c: [{"role": "user", "content": f"first half {c[:8]}"},
                                                           {"role": "user", "content": f"second half {c[8:]}"}])(
        _card(r)),
    "card digits as words": lambda r: [{"role": "user", "content": " ".join(WORDS[int(d)] for d in _card(r))}],
    "card with dots": lambda r: [{"role": "user", "content": ".".join(_card(r)[i:i + 4] for i in range(0, 16, 4))}],
    "card with slashes": lambda r: [{"role": "user", "content": "/".join(_card(r)[i:i + 4] for i in range(0, 16, 4))}],
    "email 'at'/'dot'": lambda r: [{"role": "user", "content": _email(r).replace("@", " at ").replace(".", " dot ")}],
    "email '[at]'": lambda r: [{"role": "user", "content": _email(r).replace("@", "[at]")}],
    "email with cyrillic homoglyphs": lambda r: [{"role": "user", "content": "".join(
        CYRILLIC.get(ch, ch) for ch in _email(r))}],
    "ssn without separators": lambda r: [{"role": "user", "content": f"ssn {r.randint(100, 665)}{r.randint(10, 99)}"
                                                                    f"{r.randint(1000, 9999)}"}],
    "iban with slashes": lambda r: [{"role": "user", "content": "/".join(
        make_iban("DE", r)[i:i + 4] for i in range(0, 22, 4))}],
    "email base64": lambda r: [{"role": "user", "content": base64.b64encode(_email(r).encode()).decode()}],
    "phone as words": lambda r: [{"role": "user", "content": "call " + " ".join(
        WORDS[int(d)] for d in f"{r.randint(2000000000, 9999999999)}")}],
}  # fmt: skip


def main() -> int:
    rng = random.Random(11)
    per = 200
    results = {}
    for name, make in PROBES.items():
        found = 0
        for _ in range(per):
            body = json.dumps({"model": "auto", "messages": make(rng)}).encode()
            if scan(parse_body(body, "chat").text, list(PiiEntity)):
                found += 1
        results[name] = {"samples": per, "detected": found, "rate": round(found / per, 3)}
    doc = {
        "benchmark": "pii_unclaimed_probe",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python bench/reliability/pii_unclaimed_probe.py",
        "probes": results,
    }
    Path(__file__).with_name("pii_unclaimed_probe.json").write_text(json.dumps(doc, indent=2) + "\n")
    for name, r in results.items():
        print(f"{r['rate']:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
