"""PII detection and redaction: pure functions over the text a request forwards upstream.

Why patterns, checksums and rules rather than a model: the scan runs on every request before any routing decision,
so it must cost well under a millisecond, and its false negatives decide whether restricted data leaves the cluster.
The detectors, all over the same normalised text (base.py):

- entity patterns with checksums (patterns.py, checks.py: Luhn, ISO 13616 mod-97 via python-stdnum, SSA rules,
  `ipaddress`);
- digit runs with any separators, context words and strict mode's ambiguous long numbers (numbers.py);
- credentials: gitleaks' vendor rules as data, known prefixes in any shape, secret words, high-entropy tokens
  (tokens.py);
- spelled and encoded forms: "at"/"dot" e-mails, defanged IPs, percent/HTML/backslash escapes, base64, hex and
  number words, each decoded and scanned again (views.py);
- across strings (`scan_segments`): a request is scanned as one text with a boundary between its strings, and at
  each boundary the value-like fragments on both sides are joined and scanned, so a value split across two messages
  (an assistant turn between), two content parts or two tool-call arguments is found.

Strict mode (the default in restricted namespaces, `ResidencyConfig.pii_strict`) adds the rules that trade false
positives for recall: every run of 9+ digits, every random-looking long token, every "x at y.com".
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Sequence

from ..config import PiiEntity
from .base import Finding, Segment, fold_confusables, normalize
from .checks import iban_valid, luhn_valid, ssn_valid
from .numbers import scan_digit_runs, zero_digits
from .patterns import PRIORITY, ip_valid, phone_valid, scan_patterns
from .tokens import candidates, scan_tokens
from .views import decoded_views, scan_defanged_ips, scan_obfuscated_emails

__all__ = [
    "PRIORITY",
    "Finding",
    "Segment",
    "iban_valid",
    "ip_valid",
    "luhn_valid",
    "normalize",
    "phone_valid",
    "redact",
    "scan",
    "scan_segments",
    "ssn_valid",
]

BOUNDARY = "\x00"
"""Joins the strings of a request for scanning; `normalize` removes it from every string first, so no pattern crosses
it and a value split across strings is found only by the seam step, on purpose."""

MAX_DEPTH = 2
STRICT_SUPERSEDED = frozenset(
    {PiiEntity.IBAN, PiiEntity.CREDIT_CARD, PiiEntity.US_SSN, PiiEntity.PHONE, PiiEntity.API_KEY}
)


def _lowercase(text: str) -> str:
    """`text.lower()`, one character for one (a few characters, such as U+0130, lowercase to two)."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _detect(norm: str, wanted: frozenset[PiiEntity], strict: bool, depth: int, first: bool = False) -> list[Finding]:
    """Every detector over one normalised text; overlapping findings are kept (merged by the callers). With `first`,
    the detectors stop after the first one that finds something (cheapest and most productive first)."""
    text = fold_confusables(norm)
    lower = _lowercase(text)
    # In strict mode every run of 9+ digits is a finding and every credential shape the API-key pattern knows is a
    # token rule too (tokens.py), so those patterns could only repeat what the other detectors report.
    found = scan_patterns(text, wanted - STRICT_SUPERSEDED if strict else wanted)
    if first and found:
        return found
    zeros = zero_digits(lower)
    found += scan_digit_runs(text, lower, zeros, wanted, strict)
    if first and found:
        return found
    tokens = candidates(text, lower)
    found += scan_tokens(text, lower, tokens, wanted, strict)
    if PiiEntity.EMAIL in wanted:
        found += scan_obfuscated_emails(lower, strict)
    if PiiEntity.IP_ADDRESS in wanted:
        found += scan_defanged_ips(lower, zeros)
    if first and found:
        return found
    if depth < MAX_DEPTH:
        for start, end, decoded in decoded_views(text, lower, tokens):
            # normalised piece by piece: `normalize` drops the BOUNDARY character, and decoding a whole request
            # must not glue its strings together
            norm_decoded = BOUNDARY.join(normalize(p) for p in decoded.split(BOUNDARY))
            inner = _detect(norm_decoded, wanted, strict, depth + 1, first)
            found.extend(Finding(f.entity, start, end, f"decoded:{f.rule}") for f in inner)
            if first and found:
                return found
    return found


def _merge(findings: list[Finding]) -> list[Finding]:
    """Findings in text order; overlapping findings of the same entity merged (the first one's rule kept). Different
    entities on the same span are all kept, so every kind found is reported."""
    out: list[Finding] = []
    last: dict[tuple[PiiEntity, bool], int] = {}
    for f in sorted(findings, key=lambda f: (f.start, -f.end)):
        k = last.get((f.entity, f.redactable))
        if k is not None and f.start < out[k].end:
            if f.end > out[k].end:
                prev = out[k]
                out[k] = Finding(prev.entity, prev.start, f.end, prev.rule, prev.redactable)
            continue
        last[(f.entity, f.redactable)] = len(out)
        out.append(f)
    return out


def scan(text: str, entities: Iterable[PiiEntity], strict: bool = False, first: bool = False) -> list[Finding]:
    """Findings in the normalised `text` for the requested entity kinds, non-overlapping, in text order.

    `first`: stop at the first detector that finds something (see `scan_segments`)."""
    wanted = frozenset(entities)
    if not wanted:
        return []
    return _merge(_detect(normalize(text), wanted, strict, 0, first))


# --- across strings -------------------------------------------------------------------------------------------

_FRAGMENT = re.compile(r"[^\s\"'`<>{}\[\],;|]+")
_VALUEISH = re.compile(r"[0-9@]|[a-z][A-Z]|[A-Z]{2}[a-z0-9]|[._+\-/=~%:#][A-Za-z0-9]")
_CODELIKE = re.compile(r"[A-Z0-9]{1,8}|[A-Za-z]|[.:\-]?[0-9A-Za-z][0-9A-Za-z.\-]*")
_HEX_WORD = re.compile(r"[0-9A-Fa-f]+")
SEAM_WINDOW = 64
SEAM_FRAGMENTS = 10


def _value_run(text: str, tail: bool) -> tuple[str, bool, int, int]:
    """The value-like fragments at one end of `text` (within SEAM_WINDOW characters), whether they are all of it,
    and the range [lo, hi) of `text` they cover.

    From that end, prose words are skipped until a value-like fragment (a digit, '@', mixed case, inner punctuation);
    then fragments are taken while they are value-like or code-like (capitals and digits, a single character), up to
    the next prose word. The fragment touching the end always counts, even if it looks like a word: "jan" of an
    address split "jan|e@x.org"."""
    base = max(0, len(text) - SEAM_WINDOW) if tail else 0
    frags = list(_FRAGMENT.finditer(text, base, base + SEAM_WINDOW))
    if not frags:
        return "", False, 0, 0
    if tail:
        frags.reverse()
    taken: list[re.Match[str]] = []
    for k, m in enumerate(frags):
        frag = m.group()
        valueish = _VALUEISH.search(frag) is not None
        if taken:
            if valueish or (_CODELIKE.fullmatch(frag) and not frag.islower()) or len(frag) == 1:
                taken.append(m)
                if len(taken) >= SEAM_FRAGMENTS:
                    break
                continue
            break
        if valueish or k == 0:
            taken.append(m)
    if not taken:
        return "", False, 0, 0
    whole = len(taken) == len(frags) and len(text) <= SEAM_WINDOW
    if tail:
        taken.reverse()
    # "is:", "half:" lose their colon; "c83c:" or ":fa:" (pieces of an IPv6 address) keep theirs
    parts = [m.group() for m in taken]
    run = " ".join(f[:-1] if f[-1] in ":!?" and f[:-1].isalpha() and not _HEX_WORD.fullmatch(f[:-1]) else f
                   for f in parts)  # fmt: skip
    return run, whole, taken[0].start(), taken[-1].end()


def _seam_texts(pieces: list[tuple[str, bool]], context: str) -> list[tuple[str, list[tuple[int, int]]]]:
    """Ways consecutive value runs may be one value: each seam joined directly or with a space (a card split
    "4111 1111" | "1111 1111", an address split "jane.doe@exa" | "mple.org"), after the words that came before the
    first run (`context`: "password:", "my ssn is"), so context rules see them. Each text comes with its joins:
    (end of the left run, start of the right run), so only a finding that crosses one counts."""
    runs = [r for r, _ in pieces if r]
    if len(runs) < 2 or not (any(_VALUEISH.search(r) for r in runs) or len("".join(runs)) >= 12):
        return []
    head = f"{context} {runs[0]}"
    texts: list[tuple[str, list[tuple[int, int]]]] = [(head, [])]
    for run in runs[1:]:
        texts = [(t + sep + run, [*joins, (len(t), len(t) + len(sep))]) for t, joins in texts for sep in ("", " ")]
    return texts


def _sequences(norms: list[str], segments: Sequence[Segment]) -> list[list[int]]:
    """Strings that read as one stream: all written strings in order, and those of each channel in order."""
    values = [i for i, s in enumerate(segments) if not s.key and norms[i].strip()]
    by_channel: dict[str, list[int]] = {}
    for i in values:
        by_channel.setdefault(segments[i].channel, []).append(i)
    return [values, *(seq for seq in by_channel.values() if len(seq) > 1 and len(seq) < len(values))]


def _seams(
    norms: list[str], segments: Sequence[Segment], covered: Callable[[int, int, int], bool]
) -> list[tuple[int, int, list[tuple[str, list[tuple[int, int]]]]]]:
    """(first string, last string, seam texts) for each place where a value may continue from one string into the
    next (two strings, or three when the middle one holds nothing but a fragment). A seam is skipped where a run at
    its edge is already part of a finding inside its own string (`covered(string, lo, hi)`): that value is found
    (and redactable) there, and gluing it to the next string's first words would only report it again."""
    out: list[tuple[int, int, list[tuple[str, list[tuple[int, int]]]]]] = []
    seen: set[tuple[int, ...]] = set()
    for seq in _sequences(norms, segments):
        for k in range(len(seq) - 1):
            i, j = seq[k], seq[k + 1]
            tail, _, tlo, thi = _value_run(norms[i], tail=True)
            head, whole, hlo, hhi = _value_run(norms[j], tail=False)
            if not tail or not head or covered(i, tlo, thi) or covered(j, hlo, hhi):
                continue
            chain = [i, j]
            pieces = [(tail, False), (head, whole)]
            if whole and k + 2 < len(seq):
                nxt = seq[k + 2]
                run, nwhole, nlo, nhi = _value_run(norms[nxt], tail=False)
                if run and not covered(nxt, nlo, nhi):
                    chain.append(nxt)
                    pieces.append((run, nwhole))
            for n in range(2, len(chain) + 1):
                key = tuple(chain[:n])
                if key in seen:
                    continue
                seen.add(key)
                context = norms[i][max(0, tlo - 24) : tlo]
                texts = _seam_texts(pieces[:n], context)
                if texts:
                    out.append((chain[0], chain[n - 1], texts))
    return out


def scan_segments(
    segments: Sequence[Segment], entities: Iterable[PiiEntity], strict: bool = False, first: bool = False
) -> list[Finding]:
    """Findings in a whole request: its strings joined by BOUNDARY (offsets index that joined normalised text), plus
    values split across strings, reported as not redactable (no single string holds them).

    `first`: stop at the first detector that finds something, for callers to which one finding decides (a request
    kept local or rejected when it holds PII): the findings are then those of that detector, not every value in the
    request; without any, the scan is complete."""
    wanted = frozenset(entities)
    if not wanted or not segments:
        return []
    norms = [normalize(s.text) for s in segments]
    joined = BOUNDARY.join(norms)
    found = _detect(joined, wanted, strict, 0, first)
    if first and found:
        return _merge(found)
    if len(segments) > 1:
        offsets = [0]
        for n in norms:
            offsets.append(offsets[-1] + len(n) + 1)
        found += _seam_findings(norms, segments, offsets, found, wanted, strict)
    return _merge(found)


def _seam_findings(
    norms: list[str],
    segments: Sequence[Segment],
    offsets: list[int],
    in_strings: list[Finding],
    wanted: frozenset[PiiEntity],
    strict: bool,
) -> list[Finding]:
    """Values that only exist across strings: every seam text of the request is scanned in one pass (joined by
    BOUNDARY), and a finding counts only where it crosses a join (or is a value named by a secret word that
    crosses one), so a value that one string holds whole (found there already) is not reported twice, and not as
    unredactable."""
    spans = [(f.start, f.end) for f in in_strings]

    def covered(string: int, lo: int, hi: int) -> bool:
        lo, hi = offsets[string] + lo, offsets[string] + hi
        return any(s < hi and lo < e for s, e in spans)

    texts: list[str] = []
    jobs: list[tuple[int, int, int, list[tuple[int, int]]]] = []  # (first string, last string, text start, joins)
    pos = 0
    for i, j, variants in _seams(norms, segments, covered):
        for text, joins in variants:
            jobs.append((i, j, pos, [(pos + a, pos + b) for a, b in joins]))
            texts.append(text)
            pos += len(text) + 1
    if not texts:
        return []
    starts = [job[2] for job in jobs]
    out: list[Finding] = []
    done: set[tuple[int, int]] = set()
    for hit in _detect(BOUNDARY.join(texts), wanted, strict, 1):
        i, j, _, joins = jobs[bisect.bisect_right(starts, hit.start) - 1]
        crosses = any(hit.start < left and hit.end > right for left, right in joins)
        # a secret word split across strings ("passw" | "d: BjceBoNFfgh"): the value sits whole in a later string,
        # but nothing in that string alone names it
        named = hit.rule == "context" and hit.start >= joins[0][1]
        if (i, j) not in done and (crosses or named):
            done.add((i, j))
            out.append(Finding(hit.entity, offsets[i], offsets[j + 1] - 1, "seam", redactable=False))
    return out


def redact(text: str, findings: list[Finding]) -> str:
    """The normalised text with each finding replaced by ``[REDACTED:<entity>]``."""
    norm = normalize(text)
    spans: list[tuple[int, int, PiiEntity]] = []  # overlapping findings united
    for f in sorted(findings, key=lambda f: f.start):
        if spans and f.start < spans[-1][1]:
            start, end, entity = spans[-1]
            spans[-1] = (start, max(end, f.end), entity)
        else:
            spans.append((f.start, f.end, f.entity))
    parts: list[str] = []
    pos = 0
    for start, end, entity in spans:
        parts.append(norm[pos:start])
        parts.append(f"[REDACTED:{entity.value}]")
        pos = end
    parts.append(norm[pos:])
    return "".join(parts)
