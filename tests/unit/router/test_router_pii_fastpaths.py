"""The scan's cheaper paths find what the plain ones they replaced found, and the first-finding stop decides alike.

Each reworked step is compared with a reference kept here (the code it replaced) or with the module's own step
with the shortcut switched off (a monkeypatched pre-check that never rejects), on the equivalence corpus of
test_router_pii_equivalence.py (reliability-corpus strings, router fuzz variants, long prompts with and without PII,
seeded random strings dense in the characters the detectors care about) plus generated strings aimed at each step:
- the first-finding stop (`first=True`, what decide() runs for keepLocal and reject): something is found exactly
  when the full scan finds something, and only entities the full scan finds;
- candidate tokens (for ASCII text one regex pass over a class map of the text instead of a Python loop over every
  run of token characters; otherwise one dict lookup per run instead of a startswith over every prefix);
- spelled numbers (the pattern tried at each number word instead of `finditer` over the whole text);
- the IBAN check-digit positions (a regex instead of a Python call per digit pair after a letter) and `_iban_at`'s
  early exit when too few characters follow;
- the digit-run and defanged-IP patterns (a lookbehind or lookahead that fails fast where no match can start);
- the secret-word pre-check before `SECRET_WORDS`;
- ASCII normalisation (a bytes translate instead of a regex search).
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest

from tiered_router.config import PiiEntity, parse_config
from tiered_router.decision import Classification, Reason, RoutingRequest, decide
from tiered_router.pii import Segment, normalize, numbers, scan, scan_segments, tokens, views
from tiered_router.pii.tokens import Token, rules

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_router_pii_equivalence import CORPUS, long_prompt

ALL = list(PiiEntity)


def _entities(findings: list) -> set[PiiEntity]:  # type: ignore[type-arg]
    return {f.entity for f in findings}


# --- the first-finding stop -----------------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [True, False])
def test_first_finding_stop_finds_something_exactly_when_the_full_scan_does(strict: bool) -> None:
    stopped_early = 0
    for text in CORPUS[::3]:
        full = scan(text, ALL, strict)
        first = scan(text, ALL, strict, first=True)
        assert bool(first) == bool(full), text
        assert _entities(first) <= _entities(full), text
        stopped_early += len(first) < len(full)
    assert stopped_early > 50  # it does stop: fewer findings than the full scan on texts with several values


def test_first_finding_stop_across_strings_still_joins_split_values() -> None:
    split = (Segment("my card is 4111 1111", "user"), Segment("ok", "assistant"), Segment("1111 1111", "user"))
    assert _entities(scan_segments(split, ALL, True, first=True)) == {PiiEntity.CREDIT_CARD}
    nothing = (Segment("hello there", "user"), Segment("general kenobi", "assistant"))
    assert scan_segments(nothing, ALL, True, first=True) == []


def test_long_prompt_with_planted_values_stops_at_the_first_detector() -> None:
    text = long_prompt(2, pii=True)
    full = scan_segments((Segment(text, "user"),), ALL, True)
    first = scan_segments((Segment(text, "user"),), ALL, True, first=True)
    assert len(_entities(full)) == 7 and 0 < len(_entities(first)) < 7


class _DefaultRoute:
    def classify(self, text: str, input_tokens: int) -> Classification:
        return Classification(None, 0.0, None, 0.0, Reason.NO_ROUTE_MATCHED)


def _decide(action: str, namespace_class: str, text: str) -> tuple[str | None, tuple[str, ...], bool]:
    config = parse_config(
        {
            "policy": "p",
            "tiers": [
                {"name": "local", "kind": "local", "baseURL": "http://127.0.0.1:9/v1", "model": "m"},
                {"name": "cloud", "kind": "cloud", "baseURL": "http://127.0.0.1:9/v1", "model": "m"},
            ],
            "defaultTier": "cloud",
            "residency": {"namespaceClass": namespace_class, "pii": {"action": action}},
        }
    )
    d = decide(config, _DefaultRoute(), RoutingRequest(text=text, model="auto", input_tokens=100))
    return d.tier, d.pii, d.redact


TWO_VALUES = "mail jane.doe@example.com, card 4111 1111 1111 1111"


@pytest.mark.parametrize("namespace_class", ["restricted", "unrestricted"])
def test_keep_local_decides_on_the_first_finding(namespace_class: str) -> None:
    tier, pii, _ = _decide("keepLocal", namespace_class, TWO_VALUES)
    assert tier == "local" and pii and set(pii) <= {"email", "creditCard"}


def test_reject_decides_on_the_first_finding() -> None:
    tier, pii, _ = _decide("reject", "restricted", TWO_VALUES)
    assert tier is None and pii and set(pii) <= {"email", "creditCard"}


def test_redaction_still_sees_every_finding() -> None:
    assert _decide("redact", "unrestricted", TWO_VALUES) == ("cloud", ("creditCard", "email"), True)


# --- candidate tokens -----------------------------------------------------------------------------------------


def reference_candidates(text: str, lower: str) -> list[Token]:
    """`candidates` before the per-head prefix lookup (every prefix tried with one startswith)."""
    r = rules()
    heads = frozenset(p[:2] for p in r.prefixes)
    kinds = text.translate(tokens._KIND)
    out = []
    for m in tokens._CANDIDATE.finditer(text.translate(tokens._SHAPE)):
        s, e = m.span()
        if kinds.find("X", s + 1, e) == -1:
            if lower[s : s + 2] in heads and lower.startswith(r.prefixes, s):
                pass
            elif s == 0 or (lower[s - 1] not in ":=" and (s == 1 or lower[s - 2] not in ":=")):
                continue
        out.append(Token(s, e, text[s:e]))
    return out


def _prefix_texts() -> list[str]:
    rng = random.Random(7)
    prefixes = list(rules().prefixes)
    out = []
    for _ in range(3000):
        p = rng.choice(prefixes)
        body = "".join(rng.choice("abcdefxyz019_-.:") for _ in range(rng.randint(0, 14)))
        lead = rng.choice(["", " ", "key: ", "x= ", "a:", "=", "\u00e9"])
        p = p.upper() if rng.random() < 0.2 else p
        out.append(f"{lead}{p}{body} and {p[:2]}{body}")
    return out


def _token_soup() -> list[str]:
    """Random ASCII dense in what the ASCII path's regex tells apart: plain and other token characters, stops,
    blanks, ':' and '=' before blanks, vendor-prefix tails after any first character."""
    rng = random.Random(13)
    tails = [p[1:] for p in rules().prefixes]
    frags = ["a", "b", "z", ".", "_", ":", "-", "=", "A", "Q", "7", "0", "$", "#", "~", "+", "/", " ", "  ", "\t",
             "\n", '"', "'", "(", ")", ",", ";", "|", "<", "\x00", ": ", "= ", ":\t", "=\"", "abcdefgh",
             "ijklmnopq", "kubernetes", "Quarterly"]  # fmt: skip
    out = []
    for _ in range(6000):
        parts = [rng.choice(frags) for _ in range(rng.randint(1, 30))]
        for _ in range(rng.randint(0, 3)):
            parts.insert(rng.randrange(len(parts) + 1), rng.choice("aAk7_-. ") + rng.choice(tails))
        out.append("".join(parts))
    return out


def test_candidates_match_the_reference() -> None:
    for text in CORPUS + _prefix_texts() + _token_soup():
        norm = normalize(text)
        lower = norm.lower()
        if len(lower) != len(norm):
            continue
        assert tokens.candidates(norm, lower) == reference_candidates(norm, lower), text


# --- spelled numbers ----------------------------------------------------------------------------------------------


def reference_spelled(lower: str) -> list[tuple[int, int, str]]:
    """Number-word views before: the seven-word gate, then `_SPELLED_DIGITS.finditer` over the whole text."""
    words = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "zero")
    if sum(lower.count(w) for w in words) < 7:
        return []
    out = []
    for m in views._SPELLED_DIGITS.finditer(lower):
        digits = "".join(views._DIGIT_WORDS.get(w, w) for w in views._SPELLED_WORD.findall(m.group()))
        if len(digits) >= 7:
            out.append((m.start(), m.end(), digits))
    return out


def test_spelled_numbers_match_the_reference() -> None:
    rng = random.Random(11)
    vocab = ["zero", "oh", "o", "nil", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
             "someone", "phone", "tone", "ohm", "john", "twone", "eightwo", "nineteen", "a", "12", "4567"]  # fmt: skip
    seps = [" ", ", ", "-", ".", "  ", " - ", "", "(", "_", "\n"]
    texts = ["".join(rng.choice(vocab) + rng.choice(seps) for _ in range(rng.randint(1, 25))) for _ in range(20000)]
    hits = 0
    for text in texts:
        # no '%', '&', '\\' and no token of 12+ characters: the spelled numbers are the only views of these texts
        got = [v for v in views.decoded_views(text, text, []) if v[0] != 0 or v[1] != len(text) or v[2] != text]
        assert got == reference_spelled(text), text
        hits += bool(got)
    assert hits > 500


# --- digit runs, IBAN positions, defanged IPs ------------------------------------------------------------------


def _numeric_strings(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    frags = ["0", "00", "000", "0000", "12", "345", " ", ".", "-", "/", "_", "(", ")", "\t", "  ", "a", "de", "gb",
             "x", "by ", "DE89", "[.]", "(dot)", " dot ", "{", "}", "[", "]", ". ", " .", "%", ":"]  # fmt: skip
    return ["".join(rng.choice(frags) for _ in range(rng.randint(1, 30))) for _ in range(n)]


OLD_LONG_RUN = re.compile(r"0(?:[ \t\-./_()]{0,3}0){8,}")
OLD_IBAN_CHECK = re.compile(r"00(?:(?<=[a-z]00)|(?<=[a-z][ \-./_]00)|(?<=[a-z][ \-./_]{2}00)|(?<=[a-z][ \-./_]{3}00))")
OLD_DEFANG_GATE = re.compile(r"0(?:\s*[\[({]\s*(?:\.|dot)\s*[\])}]|\s+dot\s|\s\.|\.\s)\s*0")


def test_digit_run_and_defang_patterns_match_the_reference() -> None:
    for text in _numeric_strings(40000, 3) + CORPUS:
        zeros = text.lower().translate(numbers.ZERO_DIGITS)
        assert [m.span() for m in numbers._LONG_RUN.finditer(zeros)] == [
            m.span() for m in OLD_LONG_RUN.finditer(zeros)
        ], text
        old, new = OLD_DEFANG_GATE.search(zeros), views._DEFANG_GATE.search(zeros)
        assert (old and old.span()) == (new and new.span()), text


def test_iban_positions_and_early_exit_match_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(5)
    ibans = ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "by 47% to", "NL91 ABNA 0417 1643 00",
             "de89.3704.0044.0532.0130.00", "LV 67 VOU EHK 2019 0000 1", "fr14 2004 1010 0505 00013m02606"]  # fmt: skip
    texts = (
        _numeric_strings(20000, 9)
        + CORPUS
        + [
            f"{rng.choice(['', 'x', ' ', '_', 'iban '])}{rng.choice(ibans)}{rng.choice(['', '.', ' ok', 'x'])}"
            for _ in range(3000)
        ]
    )

    texts = [t for t in map(normalize, texts) if len(t.lower()) == len(t)]

    def found(positions: re.Pattern[str]) -> list[list[tuple[int, int, str] | None]]:
        out = []
        for text in texts:
            zeros = text.lower().translate(numbers.ZERO_DIGITS)
            hits = [numbers._iban_at(text, m.start(), strict) for m in positions.finditer(zeros) for strict in (0, 1)]
            out.append([h for h in hits if h is not None])
        return out

    new = found(numbers._IBAN_CHECK)
    monkeypatch.setattr(numbers, "_IBAN_BODY", re.compile(r"[\s\S]*"))  # the early exit never fires
    reference = found(OLD_IBAN_CHECK)
    assert new == reference
    assert sum(map(bool, new)) > 1000


# --- secret words, normalisation ----------------------------------------------------------------------------------


def _secret_texts() -> list[str]:
    """Every spelling SECRET_WORDS knows, before values of several shapes."""
    words = ["password", "passwords", "passwd", "pwd", "passphrase", "pass phrase", "passcode", "secret", "secrets",
             "api key", "api_keys", "apikey", "access-key", "access keys", "secret key", "secret_keys", "private key",
             "credential", "credentials", "client secret", "client_secret", "signing key", "signing-key", "bearer",
             "token", "tokens", "auth", "key"]  # fmt: skip
    values = ["Zx81aQ93kdLm2PqR7", "hunter2!xyz", "correcthorsebattery", "a1b2c3d4e5f6a7b8c9d0", "plainwords"]
    fillers = [": ", " = ", " is ", " for the new ", " -> '", "\t"]
    return [f"the {w}{f}{v} ok" for w in words for f in fillers for v in values]


@pytest.mark.parametrize("strict", [True, False])
def test_secret_word_precheck_changes_no_finding(strict: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = CORPUS[::2] + _secret_texts()
    new = [scan(t, [PiiEntity.API_KEY], strict) for t in texts]
    monkeypatch.setattr(tokens, "_SECRET_PART", re.compile(""))  # always matches: SECRET_WORDS decides alone
    assert new == [scan(t, [PiiEntity.API_KEY], strict) for t in texts]
    assert sum(1 for f in new if any(x.rule == "context" for x in f)) > 100


def test_ascii_normalisation_matches_the_regex() -> None:
    rng = random.Random(2)
    invisible = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
    for _ in range(20000):
        text = "".join(chr(rng.randrange(128)) for _ in range(rng.randint(0, 40)))
        assert normalize(text) == invisible.sub("", text)
    plain = "nothing to fold here\n\tat all"
    assert normalize(plain) is plain
