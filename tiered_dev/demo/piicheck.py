"""The demo's own PII generator and detector, written independently of the router's scanner.

The demo generates PII-bearing prompts (emails, phone numbers, card numbers with a valid Luhn digit, IBANs with
valid mod-97 check digits) and the cloud stand-in scans everything it receives with the detector below. Using a
separate implementation is the point: if the router's scanner missed an entity and let it through, the router's
own metrics would not notice, but this detector (and the exact-value check on the stand-in's received log) would.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
PHONE = re.compile(
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,3}"  # international: +44 20 7946 0958
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"  # (555) 010-4477
    r"|\b\d{3}[.-]\d{3}[.-]\d{4}\b"  # 555-010-4477
)
CARD_CANDIDATE = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
IBAN_CANDIDATE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")

IBAN_LENGTHS = {"DE": 22, "GB": 22, "FR": 27, "NL": 18, "ES": 24, "IT": 27}


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number carries."""
    if not digits.isdigit() or len(digits) < 12:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def luhn_check_digit(body: str) -> str:
    """The digit that makes `body + digit` pass Luhn."""
    for digit in string.digits:
        if luhn_valid(body + digit):
            return digit
    raise ValueError(f"no Luhn digit for {body!r}")  # unreachable for a digit string


def _iban_numeric(text: str) -> int:
    return int("".join(str(int(ch, 36)) for ch in text))


def iban_valid(iban: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers, the result mod 97 is 1."""
    compact = iban.replace(" ", "").upper()
    if len(compact) < 15 or not compact[:2].isalpha() or not compact[2:4].isdigit() or not compact.isalnum():
        return False
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    return _iban_numeric(compact[4:] + compact[:4]) % 97 == 1


def make_iban(country: str, bban: str) -> str:
    """An IBAN with correct check digits for `bban`."""
    check = 98 - _iban_numeric(bban + country + "00") % 97
    return f"{country}{check:02d}{bban}"


def make_card(rng: random.Random) -> str:
    """A 16-digit Visa-style test number (prefix 4) with a valid Luhn digit, grouped in fours."""
    body = "4" + "".join(rng.choice(string.digits) for _ in range(14))
    number = body + luhn_check_digit(body)
    return " ".join(number[i : i + 4] for i in range(0, 16, 4))


def make_email(rng: random.Random) -> str:
    first = rng.choice(["alice", "bob", "chen", "dara", "emil", "fatima", "goran", "hana", "ines", "jonas"])
    last = rng.choice(["meyer", "okafor", "rossi", "novak", "garcia", "tanaka", "smith", "dubois", "kowalski"])
    domain = rng.choice(["example.com", "example.org", "mail.example.net"])
    return f"{first}.{last}{rng.randint(1, 99)}@{domain}"


def make_phone(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"+44 20 7946 {rng.randint(0, 999):04d}"  # Ofcom's range reserved for drama/examples
    return f"+1 (555) 01{rng.randint(0, 99):02d}-{rng.randint(1000, 9999)}"


def make_german_iban(rng: random.Random) -> str:
    raw = make_iban("DE", "".join(rng.choice(string.digits) for _ in range(18)))
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4))


@dataclass(frozen=True)
class Finding:
    entity: str
    text: str


def find_pii(text: str) -> list[Finding]:
    """Emails, phone numbers, Luhn-valid card numbers and checksum-valid IBANs in `text` (an IBAN's digits are
    not also reported as a card or a phone number)."""
    findings = [Finding("email", m.group(0)) for m in EMAIL.finditer(text)]
    taken: list[tuple[int, int]] = []

    def free(m: re.Match[str]) -> bool:
        return all(m.end() <= a or m.start() >= b for a, b in taken)

    for m in IBAN_CANDIDATE.finditer(text):
        if iban_valid(m.group(0)):
            findings.append(Finding("iban", m.group(0)))
            taken.append(m.span())
    for m in CARD_CANDIDATE.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if free(m) and 13 <= len(digits) <= 19 and luhn_valid(digits):
            findings.append(Finding("creditCard", m.group(0)))
            taken.append(m.span())
    findings += [Finding("phone", m.group(0)) for m in PHONE.finditer(text) if free(m)]
    return findings
