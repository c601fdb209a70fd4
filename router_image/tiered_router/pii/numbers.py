"""Long numbers, whatever their separators: cards, SSNs and phone numbers written in ways the patterns do not expect,
confirmed by checksums, by context words, or (strict mode) kept because they are ambiguous.

A *digit run* is a stretch of digits with at most three separator characters (space, tab, '-', '.', '/', '_', '(',
')') between two digits: "4111.1111 1111-1111", "4 1 1 1 ...", "123 45 6789", "(415) 555 2671". For each run:
- a window of whole digit groups with 13-19 digits that passes Luhn is a card (any separators);
- nine digits grouped 3-2-4 that follow the SSA rules are an SSN; nine digits without that shape are an SSN when a
  context word ("ssn", "social security", ...) is near;
- 13-19 digits failing Luhn near a card word, or 10-15 digits near a phone word, are kept by context (Presidio's
  context enhancement: a nearby word raises a weak candidate to a finding);
- in strict mode every run of nine or more digits is a finding ("ambiguous long digit run"): the entity is guessed
  from context or length, and the request stays local whatever the checksum says.
Runs inside a pure hex token of 16+ characters (hashes, UUIDs) are skipped, and a number with a single '.' is a
decimal, not an identifier.
"""

from __future__ import annotations

import re

from ..config import PiiEntity
from .base import Finding
from .checks import IBAN_LENGTHS, iban_valid, luhn_valid, ssn_valid

# Both searches run over a copy of the text with every digit mapped to '0' (one translate, offsets unchanged), so
# each pattern starts with a literal and `re` skips ahead at C speed instead of trying every position.
ZERO_DIGITS = str.maketrans("123456789", "000000000")
_ZERO_DIGIT_BYTES = bytes.maketrans(b"123456789", b"000000000")


def zero_digits(text: str) -> str:
    """`text.translate(ZERO_DIGITS)`; for ASCII text as bytes (a table lookup per byte, ~4x faster than `str`'s)."""
    if text.isascii():
        return text.encode("ascii").translate(_ZERO_DIGIT_BYTES).decode("ascii")
    return text.translate(ZERO_DIGITS)


# 9+ digits: nothing shorter is kept, by any rule. Tried only at a digit not right after another: a match from inside a
# run of digits would be part of one from the run's first digit, so `finditer` finds the same matches.
_LONG_RUN = re.compile(r"0(?<!00)(?:[ \t\-./_()]{0,3}0){8,}")
# Where an IBAN's check digits can sit (what `_iban_at` accepts, as a regex, so prose with digits after letters costs
# no Python call): two digits after a two-letter country code, directly or after one of " -.", the code not preceded
# by an ASCII letter or digit. `_iban_at` checks all of it again (and the non-ASCII case).
_IBAN_CHECK = re.compile(r"00(?:(?<=(?<![a-z0])[a-z]{2}00)|(?<=(?<![a-z0])[a-z]{2}[ \-.]00))")
_SEPARATORS = " \t-./_()"
_DROP_SEPARATORS = str.maketrans("", "", _SEPARATORS)
_GROUP_SPLIT = re.compile(r"[ \t\-./_()]+")
_HEX = frozenset("0123456789abcdefABCDEF")

CONTEXT: dict[PiiEntity, re.Pattern[str]] = {
    PiiEntity.US_SSN: re.compile(
        r"\b(?:ssns?|ss#|ss ?no|ss ?num\w*|social[ -]?sec\w*|soc[ .-]?sec\w*|ssa|taxpayer|itin|tin|tax ?id\w*"
        r"|national ?id\w*)\b"
    ),
    PiiEntity.CREDIT_CARD: re.compile(
        r"\b(?:cards?|credit|debit|visa|master ?card|mc|amex|american express|discover|diners|jcb|maestro|unionpay"
        r"|cc|ccn|pan|cvv|cvc|expir\w*|exp|payment)\b"
    ),
    PiiEntity.PHONE: re.compile(
        r"\b(?:phones?|tel|telephone|mobile|cell\w*|call|fax|sms|text|whatsapp|signal|contact|dial|ph|ring|number)\b"
    ),
    PiiEntity.IBAN: re.compile(r"\b(?:iban|bank\w*|account|acct|a/c|bic|swift|sepa|wire|transfer|routing)\b"),
}


# A calendar date inside a digit run (ISO, European or US order with '-', '.' or '/', or compact YYYYMMDD): log
# timestamps ("2025-06-24 14:36") and version strings ("3.1-20221030-2") are not identifiers.
_DATE = re.compile(
    r"(?<![0-9])(?:(?:19|20)[0-9]{2}(?P<s>[-./])(?:0?[1-9]|1[0-2])(?P=s)(?:0?[1-9]|[12][0-9]|3[01])"
    r"|(?:0?[1-9]|[12][0-9]|3[01])(?P<t>[-./])(?:0?[1-9]|1[0-2])(?P=t)(?:19|20)[0-9]{2}"
    r"|(?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01]))(?![0-9])"
)


def _without_dates(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) split around the calendar dates in it, each piece trimmed of separators."""
    run = text[start:end]
    if "19" not in run and "20" not in run:
        return [(start, end)]
    pieces, pos = [], 0
    for m in _DATE.finditer(run):
        pieces.append((pos, m.start()))
        pos = m.end()
    pieces.append((pos, len(run)))
    out = []
    for a, b in pieces:
        while a < b and run[a] in _SEPARATORS:
            a += 1
        while b > a and run[b - 1] in _SEPARATORS:
            b -= 1
        if b > a:
            out.append((start + a, start + b))
    return out


_IBAN_WORDS = re.compile(r"\b(?:iban|bic|swift|sepa)\b")


def near(context: re.Pattern[str], lower: str, start: int, end: int, before: int = 48, after: int = 32) -> bool:
    """Whether a context word occurs within `before` characters before or `after` characters after [start, end)."""
    return context.search(lower, max(0, start - before), min(len(lower), end + after)) is not None


def _in_hex_token(text: str, start: int, end: int) -> bool:
    """Whether [start, end) sits inside a pure-hex token of 16+ characters (a hash, a UUID part)."""
    if not ((start > 0 and text[start - 1].isalnum()) or (end < len(text) and text[end].isalnum())):
        return False
    lo, hi = start, end
    while lo > 0 and (text[lo - 1] in _HEX or text[lo - 1] == "-"):
        lo -= 1
    while hi < len(text) and (text[hi] in _HEX or text[hi] == "-"):
        hi += 1
    if (lo > 0 and text[lo - 1].isalnum()) or (hi < len(text) and text[hi].isalnum()):
        return False  # a longer token with non-hex letters: not a hash
    return hi - lo >= 16 and any(c.isalpha() for c in text[lo:hi])


def _card_window(groups: list[str]) -> bool:
    """Some run of whole consecutive groups with 13-19 digits passes Luhn (and is not one repeated digit)."""
    for i in range(len(groups)):
        total = ""
        for g in groups[i:]:
            total += g
            if len(total) > 19:
                break
            if len(total) >= 13 and luhn_valid(total) and total.count(total[0]) != len(total):
                return True
    return False


_NUMERIC_GUESS = (PiiEntity.US_SSN, PiiEntity.PHONE, PiiEntity.CREDIT_CARD, PiiEntity.IBAN)


def _guess(n: int, wanted: set[PiiEntity] | frozenset[PiiEntity]) -> PiiEntity:
    by_length = PiiEntity.US_SSN if n == 9 else PiiEntity.PHONE if n <= 12 else PiiEntity.CREDIT_CARD
    if by_length in wanted:
        return by_length
    return next(e for e in _NUMERIC_GUESS if e in wanted)


_IBAN_BODY = re.compile(r"[A-Za-z0-9 \-./_]*")


def _iban_at(text: str, run_start: int, strict: bool) -> tuple[int, int, str] | None:
    """An IBAN whose check digits start the digit run at `run_start`, in any grouping ("LV 67 VOU EHK ...",
    "de89.3704.0044..."): (start, end, rule) or None. The country code may stand apart from the check digits; groups
    are at most five characters (four when they hold no digit), so prose after a code is never swallowed."""
    j = run_start
    if j > 0 and text[j - 1] in " -.":
        j -= 1
    if j < 2 or (j >= 3 and text[j - 3].isalnum()):
        return None
    cc = text[j - 2 : j].upper()
    length = IBAN_LENGTHS.get(cc)
    if length is None or not cc.isascii():
        return None
    # The loop below reads ASCII letters and digits and the separators " -./_" from `run_start` and stops at
    # anything else: with fewer letters and digits than the country's length there, it cannot succeed ("by 47% ...").
    body = _IBAN_BODY.match(text, run_start)
    if body is None or len(body.group().translate(_DROP_SEPARATORS)) < length - 2:
        return None
    chars = [cc]
    count, k, group, group_digits, lowercase = 2, run_start, 0, 0, 0
    groups: list[int] = []
    size = len(text)
    while k < size and count < length:
        c = text[k]
        if c.isascii() and c.isalnum():
            chars.append(c.upper())
            lowercase += c.islower()
            count += 1
            group += 1
            group_digits += c.isdigit()
            if groups and (group > 5 or (group > 4 and not group_digits)):
                return None  # grouped, but this group is longer than any IBAN group: prose after a code
        elif c in " -./_" and group:
            gap = k
            while gap < size and gap - k < 3 and text[gap] in " -./_":
                gap += 1
            if gap >= size or not text[gap].isalnum():
                break
            if groups == [] and group > 5:
                return None  # a long first group, then more groups: not how IBANs are written
            groups.append(group)
            group = group_digits = 0
            k = gap
            continue
        else:
            break
        k += 1
    if count < length or (k < size and text[k].isalnum()):
        return None
    iban = "".join(chars)
    digits = sum(c.isdigit() for c in iban[4:])
    if not iban[2:4].isdigit():
        return None
    # capitals, a quarter digits, or groups of one size: lowercase words after a code ("is 12 years old") are prose
    regular = len(set(groups[1:])) <= 1 and all(3 <= g <= 5 for g in groups[1:])
    if (not lowercase or digits * 4 >= len(iban) - 4 or regular) and iban_valid(iban):
        return j - 2, k, "checksum"
    # strict: the registry length in an IBAN's layout (compact or evenly grouped) or with plenty of digits, whatever
    # the checksum says
    if strict and (digits >= 6 or (regular and len(groups) >= 3) or (not groups and not lowercase)):
        return j - 2, k, "strict"
    return None


def scan_digit_runs(
    text: str, lower: str, zeros: str, wanted: set[PiiEntity] | frozenset[PiiEntity], strict: bool
) -> list[Finding]:
    """Findings among the digit runs of `text` (`lower` is its lowercase, for context words; `zeros` is `lower` with
    every digit mapped to '0', see `ZERO_DIGITS`)."""
    if not any(e in wanted for e in _NUMERIC_GUESS):
        return []
    out: list[Finding] = []
    if PiiEntity.IBAN in wanted:
        for m in _IBAN_CHECK.finditer(zeros):
            iban = _iban_at(text, m.start(), strict)
            if iban is not None:
                out.append(Finding(PiiEntity.IBAN, iban[0], iban[1], iban[2]))
    for m in _LONG_RUN.finditer(zeros):
        for start, end in _without_dates(text, *m.span()):
            run = text[start:end]
            digits = run.translate(_DROP_SEPARATORS)
            if len(digits) < 9 or (run.count(".") == 1 and len(digits) == len(run) - 1):
                continue  # short once the dates are out, or a decimal number
            if _in_hex_token(text, start, end):
                continue
            found = _classify(run, digits, lower, start, end, wanted, strict)
            if found is not None:
                out.append(Finding(found[0], start, end, found[1]))
    return out


def _classify(
    run: str, digits: str, lower: str, start: int, end: int, wanted: set[PiiEntity] | frozenset[PiiEntity], strict: bool
) -> tuple[PiiEntity, str] | None:
    n = len(digits)
    if PiiEntity.CREDIT_CARD in wanted and n >= 13:
        groups = [g for g in _GROUP_SPLIT.split(run) if g]
        if _card_window(groups):
            return PiiEntity.CREDIT_CARD, "checksum"
    if strict:  # every run here has 9+ digits; which entity it is only labels the finding
        return _guess(n, wanted), "strict"
    if PiiEntity.CREDIT_CARD in wanted and 13 <= n <= 19 and near(CONTEXT[PiiEntity.CREDIT_CARD], lower, start, end):
        return PiiEntity.CREDIT_CARD, "context"
    if PiiEntity.US_SSN in wanted and n == 9 and ssn_valid(digits):
        groups = [len(g) for g in _GROUP_SPLIT.split(run) if g]
        if groups == [3, 2, 4]:
            return PiiEntity.US_SSN, "shape"
        if near(CONTEXT[PiiEntity.US_SSN], lower, start, end):
            return PiiEntity.US_SSN, "context"
    if PiiEntity.PHONE in wanted and 10 <= n <= 15 and near(CONTEXT[PiiEntity.PHONE], lower, start, end):
        return PiiEntity.PHONE, "context"
    if PiiEntity.IBAN in wanted and n >= 12 and near(_IBAN_WORDS, lower, start, end, 24, 8):
        return PiiEntity.IBAN, "context"
    return None
