"""The entity patterns: regexes for each entity's canonical formats, confirmed by the entity's own rule (Luhn for
cards, ISO 13616 mod-97 for IBANs, SSA rules for SSNs, `ipaddress` for IPs), so ordinary numbers do not all turn into
"PII". This is the first of the scanner's detectors (see `pii/__init__.py` for the others) and the cheapest: it runs
over the whole normalised text of every request.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from ..config import PiiEntity
from .base import Finding
from .checks import iban_valid, luhn_valid, ssn_valid

# --- validators ------------------------------------------------------------------------------------------------


_NON_DIGIT = re.compile(r"\D")
_IBAN_CUT = re.compile(r"[ \-]")


def _iban_prefix(candidate: str) -> int:
    """Length of the longest valid IBAN at the start of `candidate` (the pattern may run into the next word)."""
    cuts = [m.start() for m in _IBAN_CUT.finditer(candidate)] + [len(candidate)]
    for cut in reversed(cuts):
        if iban_valid(candidate[:cut]):
            return cut
    return 0


_DOTTED_QUAD = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")


def ip_valid(candidate: str) -> bool:
    """A syntactically valid IPv4 or IPv6 address (zone index allowed): what `ipaddress.ip_address` accepts.

    Two shortcuts give `ipaddress`'s answer without its exception (a few µs each, and prose with times such as
    12:30:45 or C++'s `std::` produces many candidates): a dotted quad is valid when no octet exceeds 255 or has a
    leading zero; a string with ':' but no '::' is IPv6 only with exactly 8 groups (7 colons)."""
    addr = candidate.split("%", 1)[0]
    if _DOTTED_QUAD.fullmatch(addr):
        return all(int(o) <= 255 and (len(o) == 1 or o[0] != "0") for o in addr.split("."))
    if ":" in addr and "::" not in addr and addr.count(":") != 7:
        return False
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return False
    return True


_PHONE_STRUCTURE = re.compile(r"[\s().-]")


_DATE_INSIDE = re.compile(
    r"(?<![0-9])(?:19|20)[0-9]{2}(?:[-./]?)(?:0[1-9]|1[0-2])(?:[-./]?)(?:0[1-9]|[12][0-9]|3[01])(?![0-9])"
)
_DECIMAL = re.compile(r"[0-9]+\.[0-9]+")


def phone_valid(candidate: str) -> bool:
    """10-15 digits (E.164 allows 15); bare digit runs only when they look like a national number. Not a number
    that holds a calendar date ("2025-06-24 14:36" of a log line, "3.1-20221030-2" of a version) or a decimal
    ("3.14159265358979")."""
    if _DECIMAL.fullmatch(candidate) is not None or _DATE_INSIDE.search(candidate) is not None:
        return False
    digits = _NON_DIGIT.sub("", candidate)
    if not 10 <= len(digits) <= 15:
        return False
    has_structure = candidate.lstrip().startswith("+") or bool(_PHONE_STRUCTURE.search(candidate.strip()))
    return has_structure or len(digits) in (10, 11)


# --- patterns --------------------------------------------------------------------------------------------------

_SEP = r"[ \-]?"
_PATTERNS: dict[PiiEntity, tuple[re.Pattern[str], Callable[[str], bool] | None]] = {
    PiiEntity.API_KEY: (
        re.compile(
            r"(?:\bsk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,}"
            r"|\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{30,}"
            r"|\bxox[abposr]-[A-Za-z0-9\-]{10,}"
            r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
            r"|\bAIza[0-9A-Za-z_\-]{35}"
            r"|\bglpat-[A-Za-z0-9_\-]{20,}"
            r"|\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"
            r"|(?i:\bbearer\s+)[A-Za-z0-9._~+/\-]{20,}=*"
            r"|(?i:\b(?:api[_\-]?key|access[_\-]?token|secret[_\-]?key|client[_\-]?secret|password|passwd|token)"
            r"\s*[:=]\s*)[\"']?[^\s\"']{8,})"
        ),
        None,
    ),
    PiiEntity.EMAIL: (
        re.compile(
            r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
        ),
        None,
    ),
    PiiEntity.IBAN: (
        re.compile(r"\b[A-Za-z]{2}[0-9]{2}(?:[ \-]?[A-Za-z0-9]{4}){2,7}(?:[ \-]?[A-Za-z0-9]{1,4})?\b"),
        iban_valid,
    ),
    PiiEntity.CREDIT_CARD: (
        re.compile(r"(?<![0-9])[0-9](?:" + _SEP + r"[0-9]){12,18}(?![0-9])"),
        lambda s: luhn_valid(_NON_DIGIT.sub("", s)),
    ),
    PiiEntity.US_SSN: (
        re.compile(r"(?<![0-9\-])[0-9]{3}([ \-])[0-9]{2}\1[0-9]{4}(?![0-9\-])"),
        ssn_valid,
    ),
    PiiEntity.IP_ADDRESS: (
        re.compile(
            r"(?<![0-9.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9]|\.[0-9])"
            r"|(?<![\w.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:%[A-Za-z0-9]+)?(?!\w|:[\w:])"
        ),
        ip_valid,
    ),
    PiiEntity.PHONE: (
        re.compile(
            r"(?<![0-9+])(?:\+[0-9]{1,3}[ .\-]?)?(?:\([0-9]{1,4}\)[ .\-]?)?[0-9](?:[ .\-]?[0-9]){6,14}(?![0-9])"
        ),
        phone_valid,
    ),
}

# When two findings overlap, the earlier entity in this order wins (an IBAN's digits are not also a phone).
PRIORITY: tuple[PiiEntity, ...] = (
    PiiEntity.API_KEY,
    PiiEntity.EMAIL,
    PiiEntity.IBAN,
    PiiEntity.CREDIT_CARD,
    PiiEntity.US_SSN,
    PiiEntity.IP_ADDRESS,
    PiiEntity.PHONE,
)


# --- where a match can start ---------------------------------------------------------------------------------
#
# `pattern.finditer(text)` tries a match at every position; for these patterns (lookbehinds, optional groups and
# alternations up front) Python's `re` cannot skip ahead, so each pattern cost 0.14-1.4 ms on a 2,000-token prompt.
# Instead each entity lists the positions where a match *could* start (a superset, found by fast literal searches or
# one shared single-pass regex), and the unchanged pattern is tried there with `pattern.match(text, pos)`, which
# sees the same lookbehind context as `finditer`. Walking the candidates in order and resuming after each match is
# exactly what `finditer` does, so the matches are the same; only the positions where no match can start are
# skipped. tests/unit/router/test_router_pii_equivalence.py holds the pre-candidate scanner and compares.

_ANY_DIGIT = re.compile(r"[0-9]")
_NEEDS_DIGIT = frozenset(
    {PiiEntity.IBAN, PiiEntity.CREDIT_CARD, PiiEntity.US_SSN, PiiEntity.IP_ADDRESS, PiiEntity.PHONE}
)

# One pass over the text for the digit entities. A card, SSN or phone match starts at '+', '(' or a digit not
# preceded by a digit, and holds at least 7 digits with at most one separator between two of them (a card 13, an
# SSN 9, a phone 7 after its optional '+cc'/'(area)' part). An IBAN's first digit follows exactly two letters that
# start a word; group 1 marks that digit (the IBAN starts 2 characters earlier). Where a digit start is found, two
# more lookaheads (cheap: they run only there) say whether a card (group 2: 13 digits, [ -] between) or an SSN
# (group 3: the ddd-dd-dddd shape) can start at it, so those two patterns are tried at fewer places.
# The pass runs over a copy of the text with every digit mapped to '0' (1:1, so offsets hold): a pattern that
# begins with one literal character lets `re` skip ahead with a plain character compare, where a leading character
# class [0-9+(] costs a class test per character (the pass took ~55 µs on a 2,000-token prompt, now ~40).
# '+' and '(' starts (followed by a digit, not preceded by one) are rarer and found with `str.find`.
_DIGITS_TO_ZERO = str.maketrans("123456789", "000000000")
_NUMERIC_STARTS = re.compile(
    r"0(?<!00)"
    r"(?:(?<=\b[A-Za-z]{2}0)())?"
    r"(?:(?=(?:[ .\-]?0){6})|(?<=\b[A-Za-z]{2}0))"
    r"(?:(?=(?:[ \-]?0){12})())?"
    r"(?:(?=00[ \-]00[ \-]0000)())?"
)
# IPv4: the first '.' is followed by the other three octets; the match starts where the 1-3 digits before it do.
_IPV4_DOT = re.compile(r"\.(?=[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![0-9]|\.[0-9]))")
# IPv6: at least two ':' in the first `(hex{0,4}:){2}`; the match starts where the hex digits before the first do.
_IPV6_COLON = re.compile(r":(?=[0-9A-Fa-f]{0,4}:)")
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")
# API keys: every alternative begins with one of these (case-sensitive) literals ...
# (shortened where that means fewer searches: "gh" stands for "gh[pousr]_", "xox" for "xox[abposr]-").
_API_LITERALS = ("sk-", "gh", "github_pat_", "xox", "AKIA", "ASIA", "AIza", "glpat-", "eyJ")
# ... or, case-insensitively, with one of these words. `re`'s IGNORECASE also equates 's' with U+017F (long s) and
# 'i' with U+0131 (dotless i) and U+0130 (dotted capital I), which `str.lower` does not; they are mapped first (1:1,
# so offsets hold; U+0130 is the only character whose `lower()` is longer than one character). Each word is paired
# with the characters that can follow it in the pattern ("api" only in api[_-]?key, "token" only in token\s*[:=];
# "bearer" has no such character: it needs whitespace after it): prose is full of these words, and this test is far
# cheaper than trying the pattern there.
_API_WORDS = (
    ("bearer", ""), ("api", "_-k"), ("access", "_-t"), ("secret", "_-k"), ("client", "_-s"), ("passw", "od"),
    ("token", ":="),
)  # fmt: skip
_API_WORDS_THEN_SPACE = frozenset({"bearer", "token"})  # \s* or \s+ may come before the character
_IGNORECASE_EXTRA = str.maketrans({"\u017f": "s", "\u0131": "i", "\u0130": "i"})
_EMAIL_LOCAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~.-")


def _find_all(text: str, needle: str, out: list[int]) -> None:
    i = text.find(needle)
    while i != -1:
        out.append(i)
        i = text.find(needle, i + 1)


def _api_key_starts(text: str) -> list[int]:
    starts: list[int] = []
    for lit in _API_LITERALS:
        _find_all(text, lit, starts)
    folded = text.lower() if text.isascii() else text.translate(_IGNORECASE_EXTRA).lower()
    size = len(folded)
    for word, follow in _API_WORDS:
        space_ok = word in _API_WORDS_THEN_SPACE
        n = len(word)
        i = folded.find(word)
        while i != -1:
            j = i + n
            if space_ok:
                while j < size and folded[j].isspace():
                    j += 1
            c = folded[j : j + 1]  # '' at the end of the text: nothing can match there
            if (c != "" and c in follow) or (not follow and j > i + n):
                starts.append(i)
            i = folded.find(word, i + 1)
    return sorted(starts)


def _ip_starts(text: str) -> list[int]:
    starts: list[int] = []
    for m in _IPV4_DOT.finditer(text):
        s = m.start()
        while s > 0 and text[s - 1] in _DIGITS:
            s -= 1
        starts.append(s)
    for m in _IPV6_COLON.finditer(text):
        s = m.start()
        while s > 0 and text[s - 1] in _HEX:
            s -= 1
        starts.append(s)
    return sorted(starts)


def _numeric_starts(text: str) -> dict[PiiEntity, list[int]]:
    """Where an IBAN, card, SSN or phone match can start (one pass)."""
    phone: list[int] = []
    iban: list[int] = []
    card: list[int] = []
    ssn: list[int] = []
    zeros = text.translate(_DIGITS_TO_ZERO)
    for m in _NUMERIC_STARTS.finditer(zeros):
        start = m.start()
        phone.append(start)
        if m.start(1) != -1:
            iban.append(start - 2)
        if m.start(2) != -1:
            card.append(start)
        if m.start(3) != -1:
            ssn.append(start)
    unsorted = False
    for lead in "+(":
        i = zeros.find(lead)
        while i != -1:
            if zeros[i + 1 : i + 2] == "0" and (i == 0 or zeros[i - 1] != "0"):
                phone.append(i)
                unsorted = True
            i = zeros.find(lead, i + 1)
    if unsorted:
        phone.sort()
    return {PiiEntity.IBAN: iban, PiiEntity.CREDIT_CARD: card, PiiEntity.US_SSN: ssn, PiiEntity.PHONE: phone}


def _matches_at(pattern: re.Pattern[str], text: str, starts: list[int]) -> list[re.Match[str]]:
    """`pattern.finditer(text)`, given every position where a match can start (sorted; extra positions are fine)."""
    out: list[re.Match[str]] = []
    pos = 0
    for s in starts:
        if s < pos:
            continue
        m = pattern.match(text, s)
        if m is not None:
            out.append(m)
            pos = m.end()  # never empty: every pattern consumes at least one character
    return out


def _email_matches(pattern: re.Pattern[str], text: str) -> list[re.Match[str]]:
    """`pattern.finditer(text)` for the email pattern: the local part is a run of `_EMAIL_LOCAL` ending at an '@'
    ('@' is not in it), so the leftmost possible start is that run's start, clipped to where the search resumes;
    the match at any later start of the same run succeeds or fails with it (same '@', same domain)."""
    out: list[re.Match[str]] = []
    pos = 0
    at = text.find("@")
    while at != -1:
        s = at
        while s > pos and text[s - 1] in _EMAIL_LOCAL:
            s -= 1
        if s < at:
            m = pattern.match(text, s)
            if m is not None:
                out.append(m)
                pos = m.end()
        at = text.find("@", at + 1)
    return out


def scan_patterns(norm: str, wanted: set[PiiEntity] | frozenset[PiiEntity]) -> list[Finding]:
    """Findings of the entity patterns in the normalised text `norm`, non-overlapping, in text order."""
    # Cheap gates: most prompts have no '@' and many no digit, so most entities need no work at all.
    has_digit = _ANY_DIGIT.search(norm) is not None
    numeric: dict[PiiEntity, list[int]] | None = None
    taken: list[tuple[int, int]] = []
    found: list[Finding] = []
    for entity in PRIORITY:
        if entity not in wanted:
            continue
        if (entity is PiiEntity.EMAIL and "@" not in norm) or (entity in _NEEDS_DIGIT and not has_digit):
            continue
        pattern, check = _PATTERNS[entity]
        if entity is PiiEntity.EMAIL:
            matches = _email_matches(pattern, norm)
        elif entity is PiiEntity.API_KEY:
            matches = _matches_at(pattern, norm, _api_key_starts(norm))
        elif entity is PiiEntity.IP_ADDRESS:
            matches = _matches_at(pattern, norm, _ip_starts(norm))
        else:
            if numeric is None:
                numeric = _numeric_starts(norm)
            matches = _matches_at(pattern, norm, numeric[entity])
        for m in matches:
            start, end = m.span()
            if entity is PiiEntity.IBAN:
                end = start + _iban_prefix(m.group(0))
                if end == start:
                    continue
            elif check is not None and not check(m.group(0)):
                # an IPv6 address before a sentence's colon ("... with fe80::2e15:a548:") matches one ':' too long
                if not (entity is PiiEntity.IP_ADDRESS and m.group(0).endswith(":") and check(m.group(0)[:-1])):
                    continue
                end -= 1
            if any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            found.append(Finding(entity, start, end))
    found.sort(key=lambda f: f.start)
    return found
