"""A seeded generator of PII-bearing router requests: many entity formats, the unicode disguises the router's PII
scanner says it folds (NFKC, non-ASCII digits, dash and space variants, zero-width characters, fullwidth @), and
many places in a request (user turn, system prompt, earlier turns, content-part lists, completions prompts, several
entities split over several messages).

Every value is valid by its entity's own rule (Luhn, ISO 13616 mod-97, SSA area/group/serial), so a miss is the
scanner's, not the generator's. `canonical` reduces text to lowercase ASCII alphanumerics after the same unicode
folding, so a leak is recognised in whatever spelling it reached the upstream.
"""

from __future__ import annotations

import random
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Country -> IBAN length (ISO 13616 registry, a spread of regions).
IBAN_LENGTHS = {"DE": 22, "GB": 22, "FR": 27, "NL": 18, "ES": 24, "IT": 27, "CH": 21, "BE": 16, "NO": 15,
                "PL": 28, "SE": 24, "IE": 22, "AT": 20, "PT": 25, "MT": 31, "SA": 24, "BR": 29}  # fmt: skip
LETTER_BANK_CODES = {"GB", "NL", "IE", "MT"}

DIGIT_SCRIPTS = {
    "fullwidth": 0xFF10,
    "arabic-indic": 0x0660,
    "devanagari": 0x0966,
    "bengali": 0x09E6,
    "mathematical-bold": 0x1D7CE,
}
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
SPACES = [" ", "\u00a0", "\u2009", "\u202f", "\u3000"]
DASHES = ["-", "\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2212"]


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
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


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def make_iban(country: str, rng: random.Random) -> str:
    n = IBAN_LENGTHS[country] - 4
    bban = ""
    if country in LETTER_BANK_CODES:
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4))
    bban += "".join(rng.choice(string.digits) for _ in range(n - len(bban)))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    return f"{country}{check:02d}{bban}"


def iban_ok(iban: str) -> bool:
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def _group(s: str, sizes: list[int], sep: str) -> str:
    out, pos = [], 0
    for size in sizes:
        out.append(s[pos : pos + size])
        pos += size
    if pos < len(s):
        out.append(s[pos:])
    return sep.join(p for p in out if p)


def _digits_to(script: str, text: str) -> str:
    base = DIGIT_SCRIPTS[script]
    return "".join(chr(base + int(c)) if c.isdigit() and c.isascii() else c for c in text)


# --- entity generators: each returns (value as written, disguise name) ---------------------------------------------


def card(rng: random.Random) -> tuple[str, str]:
    prefix, length, sizes = rng.choice([
        ("4", 16, [4, 4, 4, 4]), ("51", 16, [4, 4, 4, 4]), ("2221", 16, [4, 4, 4, 4]), ("37", 15, [4, 6, 5]),
        ("6011", 16, [4, 4, 4, 4]), ("36", 14, [4, 6, 4]), ("3528", 16, [4, 4, 4, 4]), ("4", 13, [4, 4, 5]),
        ("4", 19, [4, 4, 4, 4, 3]),
    ])  # fmt: skip
    number = luhn_complete(prefix, length, rng)
    assert luhn_ok(number)
    return _numeric_disguise(number, sizes, rng)


def _numeric_disguise(number: str, sizes: list[int], rng: random.Random) -> tuple[str, str]:
    how = rng.choice(["plain", "space", "dash", "unicode-space", "unicode-dash", "zero-width", "digits", "mixed"])
    if how == "plain":
        return number, how
    if how == "space":
        return _group(number, sizes, " "), how
    if how == "dash":
        return _group(number, sizes, "-"), how
    if how == "unicode-space":
        return _group(number, sizes, rng.choice(SPACES[1:])), how
    if how == "unicode-dash":
        return _group(number, sizes, rng.choice(DASHES[1:])), how
    if how == "zero-width":
        return "".join(c + (rng.choice(ZERO_WIDTH) if rng.random() < 0.4 else "") for c in number), how
    script = rng.choice(list(DIGIT_SCRIPTS))
    if how == "digits":
        return _digits_to(script, _group(number, sizes, rng.choice([" ", "-", ""]))), f"digits-{script}"
    return _digits_to(script, _group(number, sizes, rng.choice(SPACES[1:] + DASHES[1:]))), f"mixed-{script}"


def iban(rng: random.Random) -> tuple[str, str]:
    value = make_iban(rng.choice(list(IBAN_LENGTHS)), rng)
    assert iban_ok(value)
    how = rng.choice(["compact", "grouped", "lower", "nbsp", "dashes", "fullwidth-digits", "zero-width"])
    if how == "compact":
        return value, how
    grouped = _group(value, [4] * 8, " ")
    if how == "grouped":
        return grouped, how
    if how == "lower":
        return grouped.lower(), how
    if how == "nbsp":
        return _group(value, [4] * 8, "\u00a0"), how
    if how == "dashes":
        return _group(value, [4] * 8, "-"), how
    if how == "fullwidth-digits":
        return _digits_to("fullwidth", grouped), how
    return value[:6] + "\u200b" + value[6:], how


def ssn(rng: random.Random) -> tuple[str, str]:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    a, g, s = f"{area:03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"
    how = rng.choice(["dash", "space", "nb-hyphen", "en-dash", "fullwidth", "arabic-indic"])
    sep = {"dash": "-", "space": " ", "nb-hyphen": "\u2011", "en-dash": "\u2013"}.get(how, "-")
    value = f"{a}{sep}{g}{sep}{s}"
    if how in ("fullwidth", "arabic-indic"):
        value = _digits_to(how, value)
    return value, how


def email(rng: random.Random) -> tuple[str, str]:
    local = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 10)))
    local += rng.choice(["", ".smith", "+billing", "_01", "-x"])
    domain = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9)))
    tld = rng.choice(["com", "org", "co.uk", "de", "io", "example", "fr"])
    sub = rng.choice(["", "mail.", "eu.corp."])
    value = f"{local}@{sub}{domain}.{tld}"
    how = rng.choice(["plain", "upper", "fullwidth-at", "small-at", "fullwidth-letters", "zero-width"])
    if how == "upper":
        return value.upper(), how
    if how == "fullwidth-at":
        return value.replace("@", "\uff20"), how
    if how == "small-at":
        return value.replace("@", "\ufe6b"), how
    if how == "fullwidth-letters":
        return "".join(chr(ord(c) + 0xFEE0) if c.isalpha() else c for c in value), how
    if how == "zero-width":
        return value[:2] + rng.choice(ZERO_WIDTH[:5]) + value[2:], how
    return value, how


def phone(rng: random.Random) -> tuple[str, str]:
    a, b, c = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    value = rng.choice([
        f"+1 ({a}) {b}-{c:04d}", f"({a}) {b}-{c:04d}", f"{a}.{b}.{c:04d}", f"{a}-{b}-{c:04d}", f"+1{a}{b}{c:04d}",
        f"+44 20 {b}{c % 10} {c:04d}", f"+49 30 {b}{c:04d}", f"+33 1 {b % 100:02d} {c // 100:02d} {c % 100:02d} 42",
        f"0049 30 {b}{c:04d}", f"+81-3-{b}{c % 10}-{c:04d}", f"+91 98{b % 100:02d}{c % 10} {c:04d}{b % 10}",
    ])  # fmt: skip
    how = rng.choice(["plain", "nbsp", "unicode-dash", "fullwidth", "zero-width"])
    if how == "nbsp":
        return value.replace(" ", "\u00a0"), how
    if how == "unicode-dash":
        return value.replace("-", "\u2013"), how
    if how == "fullwidth":
        return _digits_to("fullwidth", value), how
    if how == "zero-width":
        return value[:4] + "\u200b" + value[4:], how
    return value, how


def ip(rng: random.Random) -> tuple[str, str]:
    v4 = ".".join(str(rng.randint(1, 254)) for _ in range(4))
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    how = rng.choice(["v4", "v6-full", "v6-compressed", "v6-zone", "v4-mapped", "v4-fullwidth"])
    value = {
        "v4": v4,
        "v6-full": ":".join(groups),
        "v6-compressed": f"{groups[0]}:{groups[1]}::{groups[7]}",
        "v6-zone": f"fe80::{groups[2]}%eth0",
        "v4-mapped": f"::ffff:{v4}",
        "v4-fullwidth": _digits_to("fullwidth", v4),
    }[how]
    return value, how


def api_key(rng: random.Random) -> tuple[str, str]:
    alnum = string.ascii_letters + string.digits

    def tok(n: int) -> str:
        return "".join(rng.choice(alnum) for _ in range(n))

    kinds: dict[str, Callable[[], str]] = {
        "openai": lambda: "sk-" + tok(40),
        "openai-proj": lambda: "sk-proj-" + tok(48),
        "anthropic": lambda: "sk-ant-" + tok(40),
        "github": lambda: "ghp_" + tok(36),
        "github-pat": lambda: "github_pat_" + tok(40),
        "slack": lambda: "xoxb-" + tok(24),
        "aws": lambda: "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
        "google": lambda: "AIza" + tok(35),
        "gitlab": lambda: "glpat-" + tok(20),
        "jwt": lambda: "eyJ" + tok(20) + "." + tok(30) + "." + tok(25),
        "bearer": lambda: "Bearer " + tok(32),
        "assignment": lambda: (
            rng.choice(["api_key", "API-KEY", "secret_key", "password", "access_token"])
            + rng.choice(["=", ": ", " = "])
            + tok(16)
        ),
    }
    how = rng.choice(list(kinds))
    return kinds[how](), how


GENERATORS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "creditCard": card,
    "iban": iban,
    "usSsn": ssn,
    "email": email,
    "phone": phone,
    "ipAddress": ip,
    "apiKey": api_key,
}

TEMPLATES = [
    "legal analyse the account {pii} please",
    "{pii}",
    "legal analyse: customer record\n\n  id:{pii}\n",
    "Could you legal analyse why {pii}, was flagged?",
    "legal analyse ({pii}).",
    "«{pii}» — legal analyse",
    "<td>{pii}</td> legal analyse",
    'legal analyse {{"contact": "{pii}"}}',
]


# --- requests ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PiiRequest:
    """One request: endpoint path, JSON body, the planted values and how each was disguised and placed."""

    marker: str
    path: str
    body: dict[str, Any]
    values: tuple[str, ...]
    entities: tuple[str, ...]
    disguises: tuple[str, ...]
    placement: str
    tags: dict[str, str] = field(default_factory=dict)


def marker(i: int) -> str:
    """A letters-only ticket id (letters only, so it can never look like PII and survives redaction)."""
    letters = ""
    n = i
    for _ in range(6):
        n, r = divmod(n, 26)
        letters += string.ascii_lowercase[r]
    return "ticket q" + letters


PLACEMENTS = ("user", "system", "earlier-turn", "content-parts", "split-messages", "completions", "prompt-list")


def build_request(i: int, rng: random.Random) -> PiiRequest:
    entity = list(GENERATORS)[i % len(GENERATORS)]
    value, how = GENERATORS[entity](rng)
    text = rng.choice(TEMPLATES).format(pii=value)
    mk = marker(i)
    placement = PLACEMENTS[(i // len(GENERATORS)) % len(PLACEMENTS)]
    values, entities, disguises = [value], [entity], [how]
    path = "/v1/chat/completions"
    stream = rng.random() < 0.2
    body: dict[str, Any]
    if placement == "user":
        messages: list[dict[str, Any]] = [{"role": "user", "content": f"{mk}: {text}"}]
    elif placement == "system":
        messages = [{"role": "system", "content": f"You are a helpful assistant. Customer: {text}"},
                    {"role": "user", "content": f"{mk}: legal analyse the case"}]  # fmt: skip
    elif placement == "earlier-turn":
        messages = [{"role": "user", "content": text},
                    {"role": "assistant", "content": "Noted."},
                    {"role": "user", "content": f"{mk}: now legal analyse it"}]  # fmt: skip
    elif placement == "content-parts":
        messages = [{"role": "user", "content": [{"type": "text", "text": f"{mk}: legal analyse"},
                                                 {"type": "text", "text": text}]}]  # fmt: skip
    elif placement == "split-messages":
        second = list(GENERATORS)[(i + 3) % len(GENERATORS)]
        value2, how2 = GENERATORS[second](rng)
        values.append(value2)
        entities.append(second)
        disguises.append(how2)
        messages = [{"role": "system", "content": f"Account holder: {value}"},
                    {"role": "assistant", "content": f"I also have {value2} on file."},
                    {"role": "user", "content": f"{mk}: legal analyse both"}]  # fmt: skip
    else:
        path = "/v1/completions"
        prompt: Any = f"{mk}: {text}" if placement == "completions" else [f"{mk}: legal analyse", text]
        body = {"model": "auto", "prompt": prompt, "stream": stream, "max_tokens": 8}
        return PiiRequest(mk, path, body, tuple(values), tuple(entities), tuple(disguises), placement)
    body = {"model": "auto", "messages": messages, "stream": stream, "max_tokens": 8}
    return PiiRequest(mk, path, body, tuple(values), tuple(entities), tuple(disguises), placement)


def pii_requests(n: int, seed: int = 20261128) -> list[PiiRequest]:
    rng = random.Random(seed)
    return [build_request(i, rng) for i in range(n)]


def control_request(i: int) -> dict[str, Any]:
    """A PII-free request the policy sends to the cloud tier (proves the cloud path is live)."""
    return {"model": "auto", "messages": [{"role": "user", "content": f"control {marker(i)}: legal analyse the "
                                                                      "contract clauses"}]}  # fmt: skip


# --- leak recognition --------------------------------------------------------------------------------------------


def _fold(ch: str) -> str:
    cat = unicodedata.category(ch)
    if cat == "Cf":
        return ""
    if cat == "Nd":
        return str(unicodedata.decimal(ch))
    return ch


def canonical(text: str) -> str:
    """Lowercase ASCII letters and digits only, after NFKC and digit folding: the spelling-free core of a value."""
    folded = "".join(_fold(c) for c in unicodedata.normalize("NFKC", text))
    return "".join(c for c in folded.lower() if c.isascii() and c.isalnum())


def value_core(value: str) -> str:
    """What must never reach the cloud of a planted value (key prefixes like 'Bearer'/'api_key=' dropped)."""
    core = canonical(value)
    for prefix in ("bearer", "apikey", "secretkey", "password", "accesstoken"):
        if core.startswith(prefix):
            return core[len(prefix) :]
    return core


def leaked_values(text: str, values: tuple[str, ...]) -> list[str]:
    """The planted values whose canonical core (or the core minus a 2-character prefix such as a country code
    the redactor might have split off) appears in `text`."""
    body = canonical(text)
    out = []
    for v in values:
        core = value_core(v)
        if core in body or (len(core) >= 9 and core[2:] in body):
            out.append(v)
    return out
