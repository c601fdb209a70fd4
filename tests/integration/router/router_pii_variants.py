"""Generated PII variants: every entity in several formats, spacings and unicode disguises (deterministic seed)."""

from __future__ import annotations

import random
import string
from collections.abc import Callable

DIGITS_FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + i) for i in range(10)))
DIGITS_ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + i) for i in range(10)))


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


def _iban(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in rearranged)) % 97
    return f"{country}{check:02d}{bban}"


def _group(s: str, size: int, sep: str) -> str:
    return sep.join(s[i : i + size] for i in range(0, len(s), size))


def _cards(rng: random.Random) -> list[str]:
    out = []
    for prefix, length in [("4", 16), ("51", 16), ("37", 15), ("6011", 16), ("4", 13)]:
        number = _luhn_complete(prefix, length, rng)
        for sep in ["", " ", "-", "\u00a0", "\u200b", "\u2013"]:
            out.append(_group(number, 4, sep))
        out.append(_group(number, 4, " ").translate(DIGITS_FULLWIDTH))
        out.append(number.translate(DIGITS_ARABIC_INDIC))
    return out


def _ibans(rng: random.Random) -> list[str]:
    out = []
    for country, length in [("DE", 18), ("GB", 18), ("FR", 23), ("NL", 14), ("ES", 20)]:
        if country in ("GB", "NL"):
            bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4))
            bban += "".join(rng.choice(string.digits) for _ in range(length - 4))
        else:
            bban = "".join(rng.choice(string.digits) for _ in range(length))
        iban = _iban(country, bban)
        out += [iban, _group(iban, 4, " "), iban.lower(), _group(iban, 4, "\u00a0")]
    return out


def _ssns(rng: random.Random) -> list[str]:
    out = []
    for _ in range(4):
        area = rng.choice([n for n in range(1, 900) if n != 666])
        a, g, s = f"{area:03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"
        out += [f"{a}-{g}-{s}", f"{a} {g} {s}", f"{a}\u2011{g}\u2011{s}", f"{a}-{g}-{s}".translate(DIGITS_FULLWIDTH)]
    return out


def _emails(rng: random.Random) -> list[str]:
    out = []
    for _ in range(6):
        local = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 10)))
        domain = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8)))
        tld = rng.choice(["com", "org", "co.uk", "de", "io"])
        out += [
            f"{local}@{domain}.{tld}",
            f"{local}.{local[:2]}+tag@{domain}.{tld}".upper(),
            f"{local}\uff20{domain}.{tld}",
        ]
    return out


def _phones(rng: random.Random) -> list[str]:
    out = []
    for _ in range(4):
        a, b, c = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
        out += [f"+1 ({a}) {b}-{c:04d}", f"{a}.{b}.{c:04d}", f"+1{a}{b}{c:04d}", f"+44 20 {b}{c % 10} {c:04d}",
                f"({a})\u00a0{b}-{c:04d}"]  # fmt: skip
    return out


def _ips(rng: random.Random) -> list[str]:
    out = []
    for _ in range(4):
        v4 = ".".join(str(rng.randint(1, 254)) for _ in range(4))
        groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
        out += [v4, ":".join(groups), f"{groups[0]}:{groups[1]}::{groups[7]}", f"fe80::{groups[2]}%eth0"]
    return out


def _keys(rng: random.Random) -> list[str]:
    alnum = string.ascii_letters + string.digits

    def token(n: int) -> str:
        return "".join(rng.choice(alnum) for _ in range(n))

    return [
        "sk-" + token(40),
        "sk-proj-" + token(48),
        "ghp_" + token(36),
        "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
        "xoxb-" + token(24),
        "Bearer " + token(32),
        "api_key=" + token(24),
        "eyJ" + token(20) + "." + token(30) + "." + token(25),
    ]


GENERATORS: dict[str, Callable[[random.Random], list[str]]] = {
    "creditCard": _cards,
    "iban": _ibans,
    "usSsn": _ssns,
    "email": _emails,
    "phone": _phones,
    "ipAddress": _ips,
    "apiKey": _keys,
}

TEMPLATES = [
    "legal analyse the account {pii} please",
    "{pii}",
    "legal analyse: customer record\n\n  id:{pii}\n",
    "Could you legal analyse why {pii}, was flagged?",
    "legal analyse ({pii})",
]


def pii_variants(seed: int = 7) -> list[tuple[str, str]]:
    """(entity, prompt) pairs; at least 1,000, each containing exactly one planted entity value."""
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    for entity, gen in GENERATORS.items():
        values = gen(rng) + gen(rng)
        for value in values:
            for template in TEMPLATES:
                out.append((entity, template.format(pii=value)))
    return out
