"""Disguised spellings and encodings: e-mail addresses and IPs written with "at"/"dot", and values hidden inside
percent-encoding, HTML entities, backslash escapes, base64 or hex, or spelled out as number words.

Each decoder is gated by a cheap test (a '%' followed by two hex digits, an '&#', a long base64-alphabet token...), so
prose pays for none of them. A decoded text is scanned again by every detector (pii/__init__.py), up to two levels
deep (base64 inside percent-encoding, say); what is found there is reported on the span of the encoded source, which
is what redaction has to remove.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import urllib.parse
from collections.abc import Iterator

from ..config import PiiEntity
from .base import Finding
from .tokens import Token

# --- "at" / "dot" spellings -----------------------------------------------------------------------------------

_LOCAL_CHARS = r"[a-z0-9!#$%&'*+/=?^_`{|}~\-]"
_DOT_WORD = r"(?:\s*[(\[{<]\s*(?:dot|\.)\s*[)\]}>]\s*|\s+dot\s+|\s\.\s|\.)"
_AT_WORD = r"(?:\s*[(\[{<]\s*(?:at|@)\s*[)\]}>]\s*|\s+at\s+|\s*@\s*|_at_|-at-)"
_LABEL = r"[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?"
_OBFUSCATED_EMAIL = re.compile(
    rf"({_LOCAL_CHARS}+(?:{_DOT_WORD}{_LOCAL_CHARS}+)*)"
    rf"({_AT_WORD})"
    rf"({_LABEL}(?:{_DOT_WORD}{_LABEL})*)({_DOT_WORD})([a-z]{{2,24}})(?![a-z0-9])"
)
# Where an at-spelling can be: "at" as a word of its own (" at ", "(at)", "[ at ]", "_at_") or an '@' with a blank
# beside it (a plain "x@y" is the entity patterns' business). Two patterns, each starting with a literal, so `re`
# skips ahead at C speed (one alternation would try every position); the e-mail pattern is then tried from the start
# of the word before.
_AT_WORD_MARK = re.compile(r"at(?<![a-z0-9]at)(?![a-z0-9])\s*[)\]}>]?")
_AT_SPACED_MARK = re.compile(r"@(?:(?<=\s@)|(?=\s))\s*")
_DOMAIN_AHEAD = re.compile(r"\s*[a-z0-9][a-z0-9\-]*(?:\.[a-z]|\s*[(\[{<]\s*(?:dot|\.)|\s+dot\s|\s\.\s)")
_LOCAL_SET = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~-.")


def _word_start(lower: str, at: int) -> int:
    """Start of the local part that ends at `at` (blanks before the at-spelling skipped; at most 64 characters)."""
    while at > 0 and lower[at - 1] in " \t([{<":
        at -= 1
    i = at
    while i > 0 and at - i < 64 and lower[i - 1] in _LOCAL_SET:
        i -= 1
    return i


def scan_obfuscated_emails(lower: str, strict: bool) -> list[Finding]:
    """E-mail addresses with the '@' or the dots spelled out or spaced ("first.last at corp dot example dot org",
    "jdoe(at)example.com", "jane @ example . org"). Only a plain " at " with real dots in the domain
    ("look at example.com") is ambiguous: it counts in strict mode, or when the local part has a '.', '_', '-', '+'
    or a digit, as names in addresses do."""
    starts: set[int] = set()
    spellings = list(_AT_WORD_MARK.finditer(lower))
    if "@" in lower:
        spellings += _AT_SPACED_MARK.finditer(lower)
    for m in spellings:
        # a domain label right after the at-spelling, then a dot-spelling: "at corp dot", "(at)x.com", "@ x ."
        if _DOMAIN_AHEAD.match(lower, m.end()) is not None:
            starts.add(_word_start(lower, m.start()))
    out: list[Finding] = []
    done = -1
    for s in sorted(starts):
        if s < done:
            continue
        email = _OBFUSCATED_EMAIL.match(lower, s)
        if email is None:
            continue
        local, at, domain, dot, _tld = email.groups()
        spelled_at = at.strip() not in ("@",) or at != at.strip()
        spelled_dot = "dot" in domain or "dot" in dot or " " in domain or " " in dot or "(" in dot or "[" in dot
        if not spelled_at and not spelled_dot and "dot" not in local:
            continue  # a plain address: the entity patterns' business
        if at.strip() == "at" and not spelled_dot and not strict:
            plain_local = re.fullmatch(r"[a-z]+", local) is not None
            if plain_local:
                continue  # "look at example.com"
        out.append(Finding(PiiEntity.EMAIL, email.start(), email.end(), "spelled"))
        done = email.end()
    return out


_DEFANGED_IP = re.compile(
    r"(?<![0-9])(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    r"(?:\s*[(\[{]\s*(?:\.|dot)\s*[)\]}]\s*|\s+dot\s+|\s\.\s?|\.\s)){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?![0-9])"
)


# (the lookahead is what every branch starts with: most digits are followed by another digit and fail there at once)
_DEFANG_GATE = re.compile(r"0(?=[\s\[({.])(?:\s*[\[({]\s*(?:\.|dot)\s*[\])}]|\s+dot\s|\s\.|\.\s)\s*0")


def scan_defanged_ips(lower: str, zeros: str) -> list[Finding]:
    """IPv4 addresses written with "[.]", "(dot)", " dot " or spaced dots ("10[.]1[.]2[.]3")."""
    if _DEFANG_GATE.search(zeros) is None:
        return []
    return [Finding(PiiEntity.IP_ADDRESS, m.start(), m.end(), "spelled") for m in _DEFANGED_IP.finditer(lower)]


# --- decoded views ------------------------------------------------------------------------------------------------

_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_HTML_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_ESCAPE = re.compile(r"\\(?:u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|x[0-9A-Fa-f]{2}|[0-7]{3})")
_B64_CHARS = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}")
_HEX_ONLY = re.compile(r"(?:[0-9A-Fa-f]{2}){8,}")
MAX_DECODED_CHARS = 65536


def _printable(raw: bytes) -> str | None:
    """`raw` as text when it is mostly printable UTF-8 (a decoded secret or sentence, not an image)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError:
            return None
        if sum(1 for c in text if c.isascii()) < 0.8 * len(text):
            return None  # any even number of bytes is "UTF-16"; text encoded that way is mostly ASCII
    if not text:
        return None
    shown = sum(1 for c in text if c.isprintable() or c in "\n\t\r")
    return text if shown >= 0.9 * len(text) else None


def _b64(token: str) -> str | None:
    core = token.rstrip("=")
    if len(core) < 12 or len(core) % 4 == 1:
        return None
    padded = core + "=" * (-len(core) % 4)
    try:
        if "-" in core or "_" in core:
            raw = base64.urlsafe_b64decode(padded)
        else:
            raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _printable(raw)


def _unescape(match: re.Match[str]) -> str:
    s = match.group()
    try:
        if s[1] in "uUx":
            return chr(int(s[2:], 16))
        return chr(int(s[1:], 8))
    except (ValueError, OverflowError):
        return s


_DIGIT_WORDS = {"zero": "0", "oh": "0", "o": "0", "nil": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}  # fmt: skip
_SPELLED_DIGITS = re.compile(
    r"\b(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)(?:[\s,.\-]+(?:zero|oh|o|nil|one|two|three|four|"
    r"five|six|seven|eight|nine|[0-9]+))+\b"
)
_NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "zero")


def _occurrences(lower: str, word: str, out: list[int]) -> None:
    i = lower.find(word)
    while i != -1:
        out.append(i)
        i = lower.find(word, i + len(word))


def _spelled_starts(lower: str) -> list[int]:
    """Where a spelled number can start: every occurrence of a word `_SPELLED_DIGITS` starts with, sorted; [] when
    the text holds fewer than seven number words (the gate: a 7+ digit value needs them; one C loop per word).
    `_SPELLED_DIGITS.finditer` would try its alternation at every position (~180 µs on 8,000 characters of prose,
    which often passes the gate: "someone", "money", "phone", "network"); tried only here, in order, resuming after
    each match, it finds the same matches (no first word overlaps itself, and a match can start nowhere else)."""
    starts: list[int] = []
    for word in _NUMBER_WORDS:
        _occurrences(lower, word, starts)
    if len(starts) < 7:
        return []
    _occurrences(lower, "oh", starts)
    starts.sort()
    return starts


_SPELLED_WORD = re.compile(r"zero|oh|nil|one|two|three|four|five|six|seven|eight|nine|o|[0-9]+")


def decoded_views(text: str, lower: str, tokens: list[Token]) -> Iterator[tuple[int, int, str]]:
    """(start, end, decoded text) for every encoded stretch of `text`: [start, end) is the encoded source."""
    budget = MAX_DECODED_CHARS
    if _PERCENT.search(text):
        decoded = urllib.parse.unquote(text)
        if decoded != text:
            budget -= len(decoded)
            yield 0, len(text), decoded
    if "&" in text and _HTML_ENTITY.search(text):
        yield 0, len(text), html.unescape(text)
    if "\\" in text and _ESCAPE.search(text):
        yield 0, len(text), _ESCAPE.sub(_unescape, text)
    for tok in tokens:
        if budget <= 0:
            break
        value = tok.text.rstrip(".,:;!?")
        if len(value) < 12:
            continue
        plain: str | None = None
        if _HEX_ONLY.fullmatch(value):
            plain = None if value.isdigit() else _printable(bytes.fromhex(value))
        elif _B64_CHARS.fullmatch(value):
            # base64 of text is never all lowercase; a plain word ("correcthorsebattery") only decodes to noise
            plain = None if value.islower() else _b64(value)
        else:  # an encoded part inside a URL, an assignment, a data: URL ("?note=706b...", "base64,SGVsbG8...")
            for m in _B64_CHARS.finditer(value):
                part = m.group()
                if _HEX_ONLY.fullmatch(part):
                    plain = None if part.isdigit() else _printable(bytes.fromhex(part))
                elif not part.islower():
                    plain = _b64(part)
                if plain is not None:
                    break
        if plain is not None:
            budget -= len(plain)
            yield tok.start, tok.end, plain
    # number words: "four one one one ..."
    done = 0
    for start in _spelled_starts(lower):
        if start < done:
            continue
        spelled = _SPELLED_DIGITS.match(lower, start)
        if spelled is None:
            continue
        done = spelled.end()
        digits = "".join(_DIGIT_WORDS.get(w, w) for w in _SPELLED_WORD.findall(spelled.group()))
        if len(digits) >= 7:
            yield spelled.start(), spelled.end(), digits
