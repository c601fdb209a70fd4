"""Credentials: vendor token rules (gitleaks' published patterns, kept as data), known prefixes in any length or case,
secret values named by a context word, and (strict mode) high-entropy tokens.

Candidates are the text's long tokens (10+ characters of `[A-Za-z0-9_-+/.~]`, base64 padding included), found in
one pass; everything else is decided per token, so the cost grows with the number of long tokens, not with the
number of rules.

- *Vendor rules* (pii/data/secret_rules.json, generated from gitleaks.toml by `python -m tiered_router.pii.gitleaks`):
  a token that starts with a rule's prefix and matches its pattern is an API key.
- *Known prefix, any shape*: a token that starts, in any letter case, with a distinctive vendor prefix (`AKIA`,
  `ghp_`, `xoxb-`, `sk-`, ...) followed by 10+ characters that look random (mixed letter case and digits, frequent
  class changes) is an API key even when its length or case is not the vendor's canonical format.
- *Context*: a word such as "password", "token", "api key", "secret" followed within a few words by a value of
  8+ characters that is not a plain word.
- *Strict mode*: any token whose longest alphanumeric stretch is long and random-looking (16+ characters mixing
  letters and digits, or 20+ mixing cases and digits) is treated as a secret; pure hex (hashes) only near a secret
  word; tokens over 512 characters are media blobs, not secrets (their decoded text is scanned instead, views.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..config import PiiEntity
from .base import Finding

_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+")
_ALNUM16 = re.compile(r"[A-Za-z0-9]{16}")  # what strict mode's rule needs at least once
_CLASS = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    "a" * 26 + "A" * 26 + "0" * 10,
)
_CLASS_RUNS = re.compile("a+|A+|0+")
_HEX = frozenset("0123456789abcdefABCDEF")
MAX_SECRET_CHARS = 512

# Prefixes the gitleaks data does not carry in a usable form (its OpenAI rule needs the T3BlbkFJ marker, its Slack
# rules start with a character class) but that the router has always known.
_EXTRA_PREFIXES = ("sk-", "sk-proj-", "sk-ant-", "xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-", "xoxo-", "xoxe-",
                   "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "AKIA", "ASIA", "AIza",
                   "sk_live_", "sk_test_", "rk_live_", "rk_test_", "pk_live_", "hf_", "npm_", "pypi-")  # fmt: skip
# Distinctive enough in gitleaks' own rules, but too common at the start of ordinary identifiers to count as
# evidence without the rule's exact pattern.
_WEAK_PREFIXES = frozenset({"s.", "sc_", "ext_", "pat.", "sat.", "api-", "a3-", "sk_", "rk_", "4b1d", "fm1"})


@dataclass(frozen=True)
class _Rules:
    by_prefix: dict[str, list[re.Pattern[str]]]  # lowercase prefix -> compiled vendor patterns
    prefixes: tuple[str, ...]  # lowercase, longest first
    evidence: frozenset[str]  # lowercase prefixes that count as evidence on their own
    by_head: dict[str, tuple[str, ...]]  # the first two characters of a prefix -> the prefixes that start so


@lru_cache(maxsize=1)
def rules() -> _Rules:
    data = json.loads((Path(__file__).parent / "data" / "secret_rules.json").read_text())
    by_prefix: dict[str, list[re.Pattern[str]]] = {}
    for rule in data["rules"]:
        pattern = re.compile(rule["regex"])
        for prefix in rule["prefixes"]:
            by_prefix.setdefault(prefix.lower(), []).append(pattern)
    for prefix in _EXTRA_PREFIXES:
        by_prefix.setdefault(prefix.lower(), [])
    prefixes = tuple(sorted(by_prefix, key=len, reverse=True))
    evidence = frozenset(p for p in prefixes if len(p) >= 3 and p not in _WEAK_PREFIXES)
    by_head: dict[str, list[str]] = {}
    for p in prefixes:
        by_head.setdefault(p[:2], []).append(p)
    return _Rules(by_prefix, prefixes, evidence, {h: tuple(ps) for h, ps in by_head.items()})


def _kinds(core: str) -> tuple[bool, bool, bool]:
    return (core.lower() != core, core.upper() != core, any(c.isdigit() for c in core))


def looks_random(core: str, min_len: int) -> bool:
    """An alphanumeric stretch that reads like a generated secret rather than a word, number or identifier.

    Two measures of the letter-case/digit classes: how often adjacent characters change class (random base62 ~0.6,
    words ~0), and how much of the text sits in same-class runs of 4+ letters (identifiers and words: most of it;
    random text: little). The thresholds per class mix were set on the 361 identifiers of 16+ characters in Python's
    standard library (top-level modules) against random tokens: none of those identifiers but hex hashes counts,
    while 99 % of random base62, 96 % of random lowercase or uppercase with digits and 77 % of random mixed-case
    letters do."""
    if len(core) < min_len:
        return False
    runs = _CLASS_RUNS.findall(core.translate(_CLASS))
    if len(runs) < 2:
        return False
    changes = (len(runs) - 1) / (len(core) - 1)
    classes = {r[0] for r in runs}
    if len(classes) == 3:
        return changes >= 0.25 and sum(len(r) for r in runs if len(r) >= 4 and r[0] != "0") < 0.6 * len(core)
    if "0" in classes:
        return changes >= 0.15 and sum(len(r) for r in runs if len(r) >= 4 and r[0] != "0") < 0.8 * len(core)
    # letters only: camelCase names hold most letters in runs of three or more ("GetExitCodeProcess")
    return changes >= 0.35 and sum(len(r) for r in runs if len(r) >= 3) < 0.6 * len(core)


SECRET_WORDS = re.compile(
    r"\b(?:passwords?|passwd|pwd|pass ?phrase|passcode|secrets?|api[ _-]?keys?|apikey|access[ _-]?keys?"
    r"|secret[ _-]?keys?|private[ _-]?keys?|credentials?|client[ _-]?secret|signing[ _-]?key|bearer|tokens?|auth"
    r"|key)\b"
)
# Words that name a secret outright; the others ("token", "auth", "key") are everyday words in code and prose, so a
# value after them must look generated, not just unusual.
STRONG_SECRET_WORDS = re.compile(
    r"\b(?:passwords?|passwd|pwd|pass ?phrase|passcode|secrets?|api[ _-]?keys?|apikey|access[ _-]?keys?"
    r"|secret[ _-]?keys?|private[ _-]?keys?|credentials?|client[ _-]?secret|signing[ _-]?key|bearer)\b"
)


# Every SECRET_WORDS alternative contains one of these.
_SECRET_PART = re.compile("pass|pwd|secret|key|credential|bearer|token|auth")


def near_secret_word(lower: str, start: int, end: int) -> bool:
    return SECRET_WORDS.search(lower, max(0, start - 40), min(len(lower), end + 8)) is not None


# One translate pass marks every character that can belong to a token (printable ASCII but quotes, brackets and
# list punctuation) as 'x'; runs of 8+ 'x' are the candidates, found with a literal-prefix search.
_STOPS = "\"'`<>()[]{},;|"
_TOKEN_CHARS = "".join(chr(c) for c in range(33, 127) if chr(c) not in _STOPS)
_SHAPE = str.maketrans(_TOKEN_CHARS, "x" * len(_TOKEN_CHARS))
_CANDIDATE = re.compile("xxxxxxxx+")
_SUBTOKEN = re.compile(r"[A-Za-z0-9_+/.~-]{10,}=*|-----BEGIN")


@dataclass(frozen=True, slots=True)
class Token:
    start: int
    end: int
    text: str


def candidates(text: str, lower: str | None = None) -> list[Token]:
    """Runs of 8+ token characters that are not plain words (what every token rule starts from). A plain lowercase
    word or identifier counts only with a vendor prefix ("akiaqkqkgkddxwffd", a lowercased AKIA key) or right after
    ':' or '=' ("password = correcthorsebattery")."""
    if lower is None:
        lower = text.lower()
    if not text.isascii():
        return _candidates_any(text, lower)
    # ASCII (most prompts): one bytes translate and one regex pass that skips plain words in C. The regex keeps the
    # runs with a capital, digit or symbol after their first character and those after ':' or '=' (both exactly as
    # `_candidates_any` decides), and, as a superset, runs whose second character onwards spells the tail of a
    # vendor prefix; those are checked here against the prefixes themselves.
    shape = b" " + text.encode("ascii").translate(_HYBRID)
    by_head = rules().by_head.get
    out = []
    for m in _keep_runs().finditer(shape):
        s, e = m.span()  # the match starts at the blank before the run: shape offset s + 1 is text offset s
        e -= 1
        if m.lastindex is not None:  # only the vendor-prefix alternative matched
            heads = by_head(lower[s : s + 2])
            if heads is None or not lower.startswith(heads, s):
                continue
        out.append(Token(s, e, text[s:e]))
    return out


def _candidates_any(text: str, lower: str) -> list[Token]:
    """`candidates` for any text: a loop over every run of 8+ token characters."""
    out = []
    by_head = rules().by_head.get
    kinds = text.translate(_KIND)
    # The character before a run is never ':' or '=' (both are token characters, so they would be part of the run):
    # only the one before that is tested.
    for s, e in [m.span() for m in _CANDIDATE.finditer(text.translate(_SHAPE))]:
        if kinds.find("X", s + 1, e) == -1:  # "kubernetes.", "Quarterly", "key_name", "std::vector"
            heads = by_head(lower[s : s + 2])
            if (heads is None or not lower.startswith(heads, s)) and (s < 2 or lower[s - 2] not in ":="):
                continue
        out.append(Token(s, e, text[s:e]))
    return out


def _trie(words: list[str]) -> str:
    """A regex matching exactly the (non-empty, distinct) `words`, branching one character at a time (an alternation
    of ~100 literals would be tried branch by branch at every run)."""
    ends = "" in words
    groups: dict[str, list[str]] = {}
    for w in words:
        if w:
            groups.setdefault(w[0], []).append(w[1:])
    branches = [re.escape(c) + _trie(rest) for c, rest in sorted(groups.items())]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if ends else body


@lru_cache(maxsize=1)
def _keep_runs() -> re.Pattern[bytes]:
    """Over `_HYBRID`'s shape of the text with a blank before it: the runs of 8+ token characters `candidates`
    keeps, each from the blank before it. Group 1 is set only when the vendor-prefix alternative matched."""
    # plain characters stand for themselves, so a prefix's tail (after its first character, whose case varies) is
    # matched literally; a tail holding anything else has a capital, digit or symbol, which the first branch keeps
    tails = sorted({p[1:] for p in rules().prefixes if len(p) >= 2 and all(c in _PLAIN_CHARS for c in p[1:])})
    pattern = rf" (?=[^ ]{{8}})(?:[^ ][^ X=]*+[X=]|(?<=[:=] )|[^ ]({_trie(tails)}))[^ ]*+"
    return re.compile(pattern.encode("ascii"))


# lowercase letters and the punctuation of words and identifiers ("._:-") -> 'a'; capitals, digits and other
# symbols -> 'X': a candidate with no 'X' after its first character is a plain word or identifier
_PLAIN_CHARS = "abcdefghijklmnopqrstuvwxyz._:-"
_KIND = str.maketrans(
    _PLAIN_CHARS + "".join(c for c in _TOKEN_CHARS if c not in _PLAIN_CHARS),
    "a" * len(_PLAIN_CHARS) + "X" * (len(_TOKEN_CHARS) - len(_PLAIN_CHARS)),
)
# Bytes: plain characters stand for themselves, '=' too, every other token character is 'X', the rest a blank.
_HYBRID = bytes(
    c if chr(c) in _PLAIN_CHARS or chr(c) == "=" else ord("X") if chr(c) in _TOKEN_CHARS else ord(" ")
    for c in range(256)
)


_SECRETISH = re.compile(r"[0-9!#$%&*+=?@^~]|[a-z][A-Z]|[A-Z]{2}[a-z]")


def _secretish(value: str) -> bool:
    """A value that could be a password: a digit, a symbol, or mixed case beyond a capital first letter."""
    return _SECRETISH.search(value) is not None


def scan_tokens(
    text: str, lower: str, tokens: list[Token], wanted: set[PiiEntity] | frozenset[PiiEntity], strict: bool
) -> list[Finding]:
    """API-key findings among the candidate `tokens` (from `candidates(text)`); `lower` is the lowercase text."""
    if PiiEntity.API_KEY not in wanted:
        return []
    r = rules()
    out: list[Finding] = []
    for cand in tokens:
        word = cand.text
        found = False
        # vendor and prefix rules need a known prefix at the start of a sub-token; strict mode's entropy rule needs
        # a long alphanumeric stretch: most candidates (URLs, prices, code) have neither and are done here
        if _LONG_ALNUM.search(word) is not None or (len(word) >= 12 and _GROUPED.search(word) is not None):
            for m in _SUBTOKEN.finditer(word):
                start, end = cand.start + m.start(), cand.start + m.end()
                rule = _token_rule(text, lower, m.group(), start, end, r, strict)
                if rule is not None:
                    out.append(Finding(PiiEntity.API_KEY, start, end if rule != "vendor-block" else start + 120, rule))
                    found = True
        if found:
            continue
        value = word.rstrip(".,;:!?)")
        if _named_secret(text, lower, cand, value):
            out.append(Finding(PiiEntity.API_KEY, cand.start, cand.end, "context"))
        elif strict and _password_shaped(value):
            out.append(Finding(PiiEntity.API_KEY, cand.start, cand.end, "strict"))
    return out


def _named_secret(text: str, lower: str, cand: Token, value: str) -> bool:
    """A value right after a secret word: "password is hunter2!", "token: Zx81aQ...", "password = correcthorse"."""
    lo = max(0, cand.start - 40)
    if len(value) < 8 or _url_or_path(value):
        return False
    if _SECRET_PART.search(lower, lo, cand.start) is None:
        return False  # no secret word can be there (a literal search costs a fraction of SECRET_WORDS' ~2 µs)
    words = list(SECRET_WORDS.finditer(lower, lo, cand.start))
    word = words[-1] if words else None  # the last secret word before the value
    if word is None or _FILLER.fullmatch(lower, word.end(), cand.start) is None:
        return False  # no secret word, or more than filler between it and the value
    if STRONG_SECRET_WORDS.fullmatch(lower, word.start(), word.end()) is not None:
        if _secretish(value[:-1]) and "(" not in value:
            return True
        # a plain word assigned to a password: "password = correcthorsebattery" (not "password = self.password")
        return value.isalpha() and _ASSIGNED.search(text, max(0, cand.start - 4), cand.start) is not None
    core = "".join(_ALNUM_RUN.findall(value))
    return looks_random(core, 12) or (len(core) >= 16 and sum(_kinds(core)) == 3)


# What may stand between a secret word and its value: blanks, ':', '=', quotes, and a few short words.
_FILLER = re.compile(r"(?:[\s:=>\-\"'`(]|\b(?:is|was|are|be|to|of|for|as|my|the|our|your|new|set|reads?|equals)\b)*")
_LONG_ALNUM = re.compile(r"[A-Za-z0-9]{10,}|-----BEGIN")
_GROUPED = re.compile(r"[A-Za-z0-9][-_.][A-Za-z0-9]")  # "xoxb-1234-5678-abcd": short groups after a prefix
_ASSIGNED = re.compile(r"[:=]\s*[\"']?$")


def _url_or_path(value: str) -> bool:
    return value.startswith(("http://", "https://", "/", "./")) or value.count(".") >= 2 or value.count("/") >= 2


def _token_rule(text: str, lower: str, value: str, start: int, end: int, r: _Rules, strict: bool) -> str | None:
    if value == "-----BEGIN":
        return "vendor-block" if "private key" in lower[start : start + 120] else None
    low = value.lower()
    heads = r.by_head.get(low[:2])
    if heads is not None and low.startswith(heads):
        prefix = next(p for p in heads if low.startswith(p))  # the longest: `heads` keeps the longest-first order
        if any(p.match(text, start) for p in r.by_prefix[prefix]):
            return "vendor"
        core = "".join(_ALNUM_RUN.findall(value[len(prefix) :]))
        kinds = sum(_kinds(core))
        if prefix in r.evidence and (len(core) >= 12 or (len(core) >= 10 and (kinds >= 2 or len(prefix) >= 4))):
            return "prefix"
    if strict and len(value) <= MAX_SECRET_CHARS and _ALNUM16.search(value) is not None:
        for run in _ALNUM_RUN.findall(value):  # each dot- or dash-separated part (a JWT has three)
            if len(run) < 16:
                continue
            if all(c in _HEX for c in run):  # a hash or UUID part: a secret only when named as one
                if len(run) >= 24 and near_secret_word(lower, start, end):
                    return "strict"
            elif looks_random(run, 16):
                return "strict"
    return None


_SPECIALS = re.compile(r"[!#$%&*?@^]")


def _password_shaped(value: str) -> bool:
    """The shape of a typed password ("DQ&?xgTxoZh72P6", "P&ga~nxbunh"): 10+ characters with capitals and small
    letters, a special among "!#$%&*?@^", and a digit or a second special; not a URL, path or e-mail address."""
    if len(value) < 10:
        return False
    specials = len(_SPECIALS.findall(value))
    if not specials or _url_or_path(value) or "=" in value:
        return False
    if "@" in value and "." in value.split("@")[-1]:
        return False  # an e-mail address is the e-mail detector's business
    upper, lower, digit = _kinds(value)
    return upper and lower and (digit or specials >= 2)
