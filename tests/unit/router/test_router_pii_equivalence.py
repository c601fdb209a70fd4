"""The candidate-position entity patterns find exactly what the plain `finditer` scanner they replaced found.

`legacy_scan` below is the scanner as it was before (every pattern run with `finditer` over the whole text), kept
here as the reference; it uses the module's own patterns and validators, so this test keeps checking the search
strategy if a pattern changes later: every candidate list must stay a superset of where the pattern can match.
Compared on: the reliability corpus (pii_corpus.py), the router fuzz variants (router_pii_variants.py), long benign
prompts with and without planted PII, and seeded random strings dense in the characters the patterns and their
candidate searches care about (digits, separators, '+', '(', ':', '.', '@', hex, keyword fragments, the unicode
characters `re`'s IGNORECASE folds specially, fullwidth digits, zero-width characters). Findings (entity, start,
end) must be equal for all entities together and for each entity alone, and so must the redacted text.
"""

from __future__ import annotations

import ipaddress
import random
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tiered_router.config import PiiEntity
from tiered_router.pii import Finding, normalize, redact
from tiered_router.pii import patterns as pii

TESTS = Path(__file__).resolve().parents[2]
for _p in (TESTS / "reliability", TESTS / "integration" / "router"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from pii_corpus import pii_requests  # noqa: E402
from router_pii_variants import pii_variants  # noqa: E402

ALL = list(PiiEntity)


def legacy_ip_valid(candidate: str) -> bool:
    """`ip_valid` before its shortcuts: whatever `ipaddress` accepts."""
    try:
        ipaddress.ip_address(candidate.split("%", 1)[0])
    except ValueError:
        return False
    return True


def legacy_scan(text: str, entities: Iterable[PiiEntity]) -> list[Finding]:
    """The scanner before candidate positions: each entity's pattern with `finditer` over the normalised text."""
    wanted = set(entities)
    norm = normalize(text)
    has_digit = pii._ANY_DIGIT.search(norm) is not None
    has_at = "@" in norm
    taken: list[tuple[int, int]] = []
    found: list[Finding] = []
    for entity in pii.PRIORITY:
        if entity not in wanted:
            continue
        if (entity is PiiEntity.EMAIL and not has_at) or (entity in pii._NEEDS_DIGIT and not has_digit):
            continue
        pattern, check = pii._PATTERNS[entity]
        if entity is PiiEntity.IP_ADDRESS:
            check = legacy_ip_valid
        for m in pattern.finditer(norm):
            start, end = m.span()
            if entity is PiiEntity.IBAN:
                end = start + pii._iban_prefix(m.group(0))
                if end == start:
                    continue
            elif check is not None and not check(m.group(0)):
                # the same trailing-colon retry as scan_patterns (not a search strategy: a validation step)
                if not (entity is PiiEntity.IP_ADDRESS and m.group(0).endswith(":") and check(m.group(0)[:-1])):
                    continue
                end -= 1
            if any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            found.append(Finding(entity, start, end))
    found.sort(key=lambda f: f.start)
    return found


# --- corpora -----------------------------------------------------------------------------------------------------

_WORD_TEXT = (
    "the a of to and in is for on with that this as by from at it be are was an or not we our you your model "
    "latency request budget policy router cluster tier service quarterly revenue report customer shipping invoice "
    "release deploy kubernetes python function return value error retry timeout token tokens api access secret "
    "client password bearer skill github glpat eyes akin asian"
)
_WORDS = _WORD_TEXT.split()
PLANTED = (
    "mail jane.doe+billing@example.co.uk",
    "card 4111 1111 1111 1111",
    "iban DE89 3704 0044 0532 0130 00",
    "ssn 123-45-6789",
    "host 192.168.10.20",
    "v6 2001:db8::8a2e:370:7334",
    "call +1 (415) 555-2671",
    "key sk-proj-abcdefghijklmnopqrstuvwxyz0123",
    "Authorization: Bearer abcdefghijklmnopqrstuvwxyz.0123456789",
    "password = correcthorsebattery",
)


def long_prompt(seed: int, pii: bool, target_chars: int = 8000) -> str:
    """A ~2,000-token prompt (≈4 characters a token): prose, dates, times, prices, order numbers, URLs, versions,
    Python and C++ snippets; with `pii`, the PLANTED values at random places. Shared with bench/router/pii_scan.py."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < target_chars:
        k = rng.random()
        if k < 0.70:
            part = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 18))).capitalize() + "."
        elif k < 0.76:
            part = (
                f"On {rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} at "
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d} the total was ${rng.randint(1, 99999):,}."
                f"{rng.randint(0, 99):02d} (order #{rng.randint(10**5, 10**9)})."
            )
        elif k < 0.82:
            part = (
                f"See https://docs.example.org/v{rng.randint(1, 9)}/guide/page-{rng.randint(1, 500)}.html"
                f"?ref=abc_{rng.randint(1, 99)} for details."
            )
        elif k < 0.90:
            part = (
                "```python\ndef handler(req: Request) -> dict[str, int]:\n"
                f"    total = sum(x * 3 for x in range({rng.randint(1, 1000)}))\n"
                f"    return {{'status': 200, 'count': total, 'ratio': 0.{rng.randint(1, 999)}}}\n```"
            )
        elif k < 0.95:
            part = (
                f"Version {rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)} improved p99 by "
                f"{rng.randint(1, 90)}% to {rng.random() * 10:.2f} ms; SKU-{rng.randint(1000, 9999)}-X."
            )
        else:
            part = 'std::vector<int> v{1, 2, 3}; auto t = 12:30:45; map["key_name"] = 42;'
        parts.append(part)
        size += len(part) + 1
    if pii:
        for value in PLANTED:
            parts.insert(rng.randrange(len(parts) + 1), value + ".")
    return " ".join(parts)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


_FRAGMENTS = (
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "12", "345", "4111", "192.168.", "::", ":", ".", "..", "-",
    " ", "  ", "+", "(", ")", "+1 ", "(415) ", "@", "a@b.co", "x.y", "_", "=", ": ", "\n", "\t", "a", "b", "c", "d",
    "e", "f", "A", "F", "de", "DE89", "GB82", "NL91", "sk-", "sk-proj-", "ghp_", "github_pat_", "xoxb-", "AKIA",
    "ASIA", "AIza", "glpat-", "eyJ", "Bearer ", "bearer\t", "api_key", "API-KEY", "access_token", "secret-key",
    "client_secret", "Password", "passwd", "token", "TOKEN", "\u017fecret_key", "ap\u0131key", "AP\u0130_KEY",
    "t\u200boken", "\uff14\uff11", "\u0664", "\u2013", "\u00a0", "%eth0", "abcdefghij", "ABCDEFGHIJKLMNOP", "Zz",
    "é", "«", "—",
)  # fmt: skip


def random_strings(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(1, 60))) for _ in range(n)]


def corpus() -> list[str]:
    texts: list[str] = []
    for req in pii_requests(1500):
        texts.extend(_strings(req.body))
    texts.extend(text for _, text in pii_variants())
    texts.extend(long_prompt(seed, pii=seed % 2 == 1) for seed in range(24))
    # the same long prompts with unicode disguises, so the non-ASCII normalisation path is covered as well
    texts.extend(long_prompt(seed, pii=True).replace(" ", "\u00a0", 50).replace("1", "\uff11", 30) for seed in range(4))
    texts.extend(random_strings(6000, seed=20261128))
    return texts


CORPUS = corpus()


def scan(text: str, entities: Iterable[PiiEntity]) -> list[Finding]:
    """The entity-pattern detector alone (the layer this module checks), on the normalised text."""
    return pii.scan_patterns(normalize(text), frozenset(entities))


def _key(findings: list[Finding]) -> list[tuple[str, int, int]]:
    return [(f.entity.value, f.start, f.end) for f in findings]


def test_corpus_is_large_and_has_pii_and_clean_texts() -> None:
    with_pii = sum(1 for t in CORPUS if legacy_scan(t, ALL))
    assert len(CORPUS) > 10_000
    assert with_pii > 3_000 and len(CORPUS) - with_pii > 3_000


@pytest.mark.parametrize("shard", range(4))
def test_same_findings_and_redaction_for_all_entities(shard: int) -> None:
    for text in CORPUS[shard::4]:
        new, old = scan(text, ALL), legacy_scan(text, ALL)
        assert _key(new) == _key(old), text
        assert redact(text, new) == redact(text, old)


@pytest.mark.parametrize("entity", ALL, ids=[e.value for e in ALL])
def test_same_findings_per_entity(entity: PiiEntity) -> None:
    for text in CORPUS:
        assert _key(scan(text, [entity])) == _key(legacy_scan(text, [entity])), text


_IP_LIKE = (
    "0", "1", "9", "01", "00", "255", "256", "300", "099", ".", ":", "::", "a", "f", "F", "ff", "abcd", "12345",
    "%eth0", "%", "g", "1.2.3.4", "::ffff:", "x",
)  # fmt: skip


def test_ip_valid_shortcuts_agree_with_ipaddress() -> None:
    rng = random.Random(5)
    samples = ["".join(rng.choice(_IP_LIKE) for _ in range(rng.randint(1, 12))) for _ in range(40_000)]
    samples += [f"{a}.{b}.{c}.{d}" for a in ("0", "01", "255", "256", "7") for b in ("0", "10", "00") for c in
                ("1", "001") for d in ("9", "255", "260")]  # fmt: skip
    samples += ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", ":1:2:3:4:5:6:7", "1::", "::", "fe80::1%eth0"]
    for s in samples:
        assert pii.ip_valid(s) == legacy_ip_valid(s), s


def test_ignorecase_folds_are_candidates() -> None:
    """`re` IGNORECASE equates U+017F with 's' and U+0131/U+0130 with 'i'; the keyword candidates must follow."""
    for text in ("\u017fecret_key: abcdefghijkl", "ap\u0131_key=abcdefghijkl", "AP\u0130KEY = abcdefghijkl"):
        assert _key(scan(text, ALL)) == _key(legacy_scan(text, ALL)) != []
