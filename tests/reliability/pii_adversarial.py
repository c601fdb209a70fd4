"""An adversarial PII corpus for the router, written apart from the scanner and from pii_corpus.py.

Nothing here imports the router: value generators, checksums, encodings and leak recognition are this module's own,
so a scanner bug cannot hide itself by being shared with the test. Seeds differ from pii_corpus.py's.

Each request carries one planted value of one of the seven entities, in one *disguise* (how the value is written:
separators, Unicode digits, invisible characters, look-alike letters, spelled "at"/"dot", encodings such as base64,
percent-encoding, JSON escapes, HTML entities, hex or number words, split across two or three strings of the request,
...), inside one *container* (a sentence, a JSON snippet, a code block, a table row, a log line, a URL, ...), at one
*placement* in the request body (user turn, system prompt, an assistant turn, content parts, an image part's caption,
tool-call arguments, a tool result, a message `name`, `metadata`, `user`, a tool description, a response-format
schema, a completions prompt, `stop`). Values with a checksum are valid (Luhn, ISO 13616 mod-97, SSA rules); about
one in twenty is a realistic value with a broken checksum instead (`valid=False`), which strict mode must still keep
local as an ambiguous long number.

`control_for(i)` is the same request with every planted value replaced by PII-free words: it proves that the request's
shape and wording reach the cloud when nothing sensitive is in it.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import string
import unicodedata
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SEED = 4_417_093

# --- checksums, written for this module ----------------------------------------------------------------------------


def luhn_check_digit(payload: str) -> str:
    """The digit that makes payload+digit pass Luhn (every second digit from the right of the payload doubled)."""
    acc = 0
    for k, ch in enumerate(reversed(payload)):
        v = ord(ch) - 48
        if k % 2 == 0:
            v = v * 2
            v = v // 10 + v % 10
        acc += v
    return str(-acc % 10)


def luhn_passes(number: str) -> bool:
    return luhn_check_digit(number[:-1]) == number[-1]


def _iban_numeric(s: str) -> int:
    return int("".join(c if c.isdigit() else str(ord(c) - 55) for c in s))


def iban_with_check(country: str, bban: str) -> str:
    check = 98 - _iban_numeric(bban + country + "00") % 97
    return f"{country}{check:02d}{bban}"


def iban_passes(iban: str) -> bool:
    return _iban_numeric(iban[4:] + iban[:4]) % 97 == 1


# --- value generators (canonical value, display grouping) ---------------------------------------------------------

CARD_BRANDS: list[tuple[Callable[[random.Random], str], int, tuple[int, ...]]] = [
    (lambda r: "4", 16, (4, 4, 4, 4)),
    (lambda r: "4", 13, (4, 4, 5)),
    (lambda r: "4", 19, (4, 4, 4, 4, 3)),
    (lambda r: str(r.randint(51, 55)), 16, (4, 4, 4, 4)),
    (lambda r: str(r.randint(2221, 2720)), 16, (4, 4, 4, 4)),
    (lambda r: r.choice(["34", "37"]), 15, (4, 6, 5)),
    (lambda r: r.choice(["6011", "65"]), 16, (4, 4, 4, 4)),
    (lambda r: "36", 14, (4, 6, 4)),
    (lambda r: str(r.randint(3528, 3589)), 16, (4, 4, 4, 4)),
    (lambda r: "62", 17, (4, 4, 4, 5)),
    (lambda r: "6759", 16, (4, 4, 4, 4)),
]


@dataclass(frozen=True)
class Value:
    entity: str
    canonical: str  # the value with no disguise at all
    shown: str  # as a person would write it (grouped, formatted)
    groups: tuple[int, ...] = ()  # digit grouping for numeric values
    valid: bool = True


def make_card(r: random.Random, broken: bool) -> Value:
    head, length, groups = r.choice(CARD_BRANDS)
    prefix = head(r)
    payload = prefix + "".join(r.choice(string.digits) for _ in range(length - len(prefix) - 1))
    number = payload + luhn_check_digit(payload)
    if broken:
        number = payload + str((int(number[-1]) + r.randint(1, 9)) % 10)
    assert luhn_passes(number) != broken
    return Value("creditCard", number, _grouped(number, groups, " "), groups, not broken)


def make_ssn(r: random.Random, broken: bool) -> Value:
    area = r.choice([a for a in range(1, 900) if a != 666])
    if broken:
        area = r.randint(900, 999)  # ITIN-like area: not an SSN by the SSA rules, still a 9-digit identifier
    number = f"{area:03d}{r.randint(1, 99):02d}{r.randint(1, 9999):04d}"
    return Value("usSsn", number, f"{number[:3]}-{number[3:5]}-{number[5:]}", (3, 2, 4), not broken)


# country: BBAN layout as (kind, count) with n = digits, a = capitals, c = capitals or digits
IBAN_LAYOUTS: dict[str, tuple[tuple[str, int], ...]] = {
    "DE": (("n", 18),), "FR": (("n", 10), ("c", 11), ("n", 2)), "GB": (("a", 4), ("n", 14)),
    "NL": (("a", 4), ("n", 10)), "ES": (("n", 20),), "IT": (("a", 1), ("n", 10), ("c", 12)),
    "CH": (("n", 5), ("c", 12)), "BE": (("n", 12),), "AT": (("n", 16),), "PL": (("n", 24),), "SE": (("n", 20),),
    "NO": (("n", 11),), "DK": (("n", 14),), "FI": (("n", 14),), "IE": (("a", 4), ("n", 14)), "PT": (("n", 21),),
    "LU": (("n", 3), ("c", 13)), "CZ": (("n", 20),), "SA": (("n", 2), ("c", 18)), "GR": (("n", 7), ("c", 16)),
    "HU": (("n", 24),), "RO": (("a", 4), ("c", 16)), "HR": (("n", 17),), "SI": (("n", 15),), "LT": (("n", 16),),
    "EE": (("n", 16),), "LV": (("a", 4), ("c", 13)), "MT": (("a", 4), ("n", 5), ("c", 18)), "TR": (("n", 6), ("c", 16)),
    "AE": (("n", 19),), "IL": (("n", 19),), "BG": (("a", 4), ("n", 6), ("c", 8)),
}  # fmt: skip


def make_iban(r: random.Random, broken: bool) -> Value:
    country = r.choice(list(IBAN_LAYOUTS))
    pools = {"n": string.digits, "a": string.ascii_uppercase, "c": string.ascii_uppercase + string.digits}
    bban = "".join(r.choice(pools[kind]) for kind, count in IBAN_LAYOUTS[country] for _ in range(count))
    iban = iban_with_check(country, bban)
    if broken:
        iban = iban[:2] + f"{(int(iban[2:4]) + r.randint(1, 50)) % 97 + 2:02d}" + iban[4:]
    assert iban_passes(iban) != broken
    groups = tuple([4] * (len(iban) // 4) + ([len(iban) % 4] if len(iban) % 4 else []))
    return Value("iban", iban, _grouped(iban, groups, " "), groups, not broken)


FIRST = ["maria", "john", "li", "ahmed", "sofia", "lukas", "aiko", "noah", "emma", "olu", "ines", "pavel",
         "zoe", "rafael", "hannah", "kwame", "elena", "tomasz", "priya", "jonas", "fatima", "diego", "yuki",
         "lars"]  # fmt: skip
LAST = ["garcia", "smith", "chen", "khan", "rossi", "muller", "tanaka", "brown", "dubois", "okafor", "silva",
        "novak", "jensen", "kowalski", "patel", "schmidt", "haddad", "moreau", "nakamura", "berg"]  # fmt: skip
DOMAINS = ["corp", "example", "mailhost", "acme-bank", "northwind", "contoso", "globex", "initech", "umbrella",
           "hooli", "vandelay", "stark-ind"]  # fmt: skip
TLDS = ["com", "org", "net", "io", "de", "fr", "co.uk", "com.au", "example.org", "eu", "ch", "nl", "health"]


def make_email(r: random.Random, broken: bool) -> Value:
    first, last = r.choice(FIRST), r.choice(LAST)
    local = r.choice([f"{first}.{last}", f"{first}{last}", f"{first[0]}{last}", f"{first}_{last}",
                      f"{first}.{last}{r.randint(1, 99)}", f"{first}+{r.choice(['billing', 'hr', 'x'])}",
                      f"{last}.{first}", f"{first}-{last}"])  # fmt: skip
    sub = r.choice(["", "", "", "mail.", "eu.", "dept."])
    address = f"{local}@{sub}{r.choice(DOMAINS)}.{r.choice(TLDS)}"
    return Value("email", address, address)


def make_phone(r: random.Random, broken: bool) -> Value:
    a, b, c = r.randint(201, 989), r.randint(200, 989), r.randint(0, 9999)
    shown = r.choice([
        f"+1 ({a}) {b}-{c:04d}", f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"{a}.{b}.{c:04d}", f"+1{a}{b}{c:04d}",
        f"+44 20 {b}{c % 10} {c:04d}", f"07{r.randint(100, 999)} {r.randint(100000, 999999)}",
        f"+49 30 {r.randint(1000000, 99999999)}", f"+33 {r.randint(1, 9)} {b % 100:02d} {c // 100:02d} "
        f"{c % 100:02d} {r.randint(10, 99)}", f"+91 9{r.randint(1000, 9999)} {r.randint(10000, 99999)}",
        f"+81 3-{r.randint(1000, 9999)}-{c:04d}", f"+55 11 9{r.randint(1000, 9999)}-{c:04d}",
        f"+61 2 {r.randint(1000, 9999)} {c:04d}", f"{a}{b}{c:04d}",
    ])  # fmt: skip
    digits = "".join(ch for ch in shown if ch.isdigit())
    return Value("phone", digits, shown)


def make_ip(r: random.Random, broken: bool) -> Value:
    if r.random() < 0.8:
        first = r.choice([r.randint(11, 223), 10, 172, 192])
        ip = ".".join([str(first)] + [str(r.randint(0, 255)) for _ in range(2)] + [str(r.randint(1, 254))])
    else:
        groups = [f"{r.randint(0, 0xFFFF):x}" for _ in range(8)]
        ip = r.choice([":".join(groups), f"2001:db8:{groups[2]}::{groups[7]}", f"fe80::{groups[5]}:{groups[6]}"])
    return Value("ipAddress", ip, ip)


ALNUM = string.ascii_letters + string.digits


def _rand(r: random.Random, n: int, alphabet: str = ALNUM) -> str:
    return "".join(r.choice(alphabet) for _ in range(n))


def make_api_key(r: random.Random, broken: bool) -> Value:
    """Vendor tokens in their canonical format, and (half of the time) in a length or case that is not."""
    canonical = r.random() < 0.5
    kind = r.choice(["aws", "openai", "openai-proj", "github", "slack", "gitlab", "google", "stripe", "hf", "npm",
                     "anthropic", "generic-password", "generic-secret"])  # fmt: skip
    if kind == "aws":
        key = "AKIA" + (_rand(r, 16, string.ascii_uppercase + "234567") if canonical else _rand(r, r.randint(12, 30)))
    elif kind == "openai":
        key = "sk-" + _rand(r, 48 if canonical else r.randint(14, 70))
    elif kind == "openai-proj":
        key = "sk-proj-" + _rand(r, r.randint(40, 64), ALNUM + "_-")
    elif kind == "github":
        key = "ghp_" + _rand(r, 36 if canonical else r.randint(14, 60))
    elif kind == "slack":
        key = (f"xoxb-{r.randint(10**10, 10**12)}-{r.randint(10**10, 10**12)}-{_rand(r, 24)}" if canonical
               else "xoxb-" + _rand(r, r.randint(12, 40)))  # fmt: skip
    elif kind == "gitlab":
        key = "glpat-" + _rand(r, 20 if canonical else r.randint(12, 40), ALNUM + "_-")
    elif kind == "google":
        key = "AIza" + _rand(r, 35 if canonical else r.randint(16, 50), ALNUM + "_-")
    elif kind == "stripe":
        key = r.choice(["sk_live_", "rk_live_", "sk_test_"]) + _rand(r, r.randint(16, 60))
    elif kind == "hf":
        key = "hf_" + _rand(r, 34 if canonical else r.randint(16, 40), string.ascii_letters)
    elif kind == "npm":
        key = "npm_" + _rand(r, 36 if canonical else r.randint(16, 48))
    elif kind == "anthropic":
        key = "sk-ant-api03-" + _rand(r, r.randint(30, 95), ALNUM + "_-")
    elif kind == "generic-password":
        key = _rand(r, r.randint(10, 20), ALNUM + "!#%&*+?@^~")
        return Value("apiKey", key, f"{r.choice(['password', 'passwd', 'Password', 'pwd'])}: {key}")
    else:
        key = _rand(r, r.randint(24, 48))
        return Value("apiKey", key, f"{r.choice(['secret', 'client secret', 'api key', 'token'])} {key}")
    if not canonical and r.random() < 0.5:
        key = r.choice([key.lower(), key.upper(), key.swapcase()]) if kind != "generic" else key
    return Value("apiKey", key, key)


MAKERS: dict[str, Callable[[random.Random, bool], Value]] = {
    "creditCard": make_card,
    "usSsn": make_ssn,
    "iban": make_iban,
    "email": make_email,
    "phone": make_phone,
    "ipAddress": make_ip,
    "apiKey": make_api_key,
}
CHECKSUMMED = {"creditCard", "usSsn", "iban"}


def _grouped(s: str, groups: tuple[int, ...], sep: str) -> str:
    out, pos = [], 0
    for g in groups:
        out.append(s[pos : pos + g])
        pos += g
    if pos < len(s):
        out.append(s[pos:])
    return sep.join(x for x in out if x)


# --- disguises -----------------------------------------------------------------------------------------------------

DIGIT_BLOCKS = {"fullwidth": 0xFF10, "arabic-indic": 0x0660, "eastern-arabic": 0x06F0, "devanagari": 0x0966,
                "bengali": 0x09E6, "thai": 0x0E50, "math-bold": 0x1D7CE, "math-monospace": 0x1D7F6}  # fmt: skip
INVISIBLES = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u2062", "\u2063", "\u180e", "\u034f"]
LOOKALIKE = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441", "x": "\u0445",
             "i": "\u0456", "s": "\u0455", "y": "\u0443", "A": "\u0391", "B": "\u0392", "E": "\u0395",
             "K": "\u039a", "M": "\u039c", "O": "\u039f", "T": "\u03a4"}  # fmt: skip
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
AT_FORMS = [" at ", " AT ", " (at) ", "(at)", "[at]", " [at] ", "{at}", " <at> ", " @ "]
DOT_FORMS = [" dot ", " DOT ", "(dot)", " [dot] ", "{dot}", " . ", "[.]"]


def _digits_in(s: str, block: int) -> str:
    return "".join(chr(block + ord(c) - 48) if "0" <= c <= "9" else c for c in s)


def _sprinkle(s: str, r: random.Random, chars: list[str], rate: float = 0.35) -> str:
    out = []
    for i, c in enumerate(s):
        out.append(c)
        if i < len(s) - 1 and r.random() < rate:
            out.append(r.choice(chars))
    return "".join(out)


def _percent(s: str, r: random.Random) -> str:
    if r.random() < 0.5:
        return "".join(f"%{ord(c):02X}" if c.isalnum() and r.random() < 0.6 else urllib.parse.quote(c) for c in s)
    return urllib.parse.quote(s, safe="")


NUMERIC_DISGUISES = ["shown", "compact", "spaced-digits", "mixed-separators", "dots", "unicode-digits",
                     "zero-width", "invisible-mix", "nbsp-groups", "number-words", "trailing-punct",
                     "double-spaced", "slashes"]  # fmt: skip
ENCODINGS = ["base64", "url-encoded", "json-escaped", "html-entities", "hex"]
SPLITS = ["split-user-turns", "split-content-parts", "split-system-user", "split-tool-args", "split-three-turns",
          "split-metadata"]  # fmt: skip


def disguises_for(entity: str) -> list[str]:
    if entity in ("creditCard", "usSsn", "phone"):
        return NUMERIC_DISGUISES + ENCODINGS + SPLITS
    if entity == "iban":
        return ["shown", "compact", "lowercase", "mixed-separators", "dots", "unicode-digits", "zero-width",
                "homoglyph", "trailing-punct", "odd-groups", *ENCODINGS, *SPLITS]  # fmt: skip
    if entity == "email":
        return ["shown", "upper", "mixed-case", "at-dot-words", "bracket-at", "spaced", "fullwidth-at", "homoglyph",
                "zero-width", "trailing-punct", "mailto", "at-only-words", *ENCODINGS, *SPLITS]  # fmt: skip
    if entity == "ipAddress":
        return ["shown", "trailing-punct", "defanged", "with-port", "unicode-digits", "zero-width", "in-url",
                "spaced-dots", *ENCODINGS, *SPLITS]  # fmt: skip
    return ["shown", "quoted", "env-line", "zero-width", "trailing-punct", "homoglyph", *ENCODINGS, *SPLITS]


def disguise(value: Value, how: str, r: random.Random) -> str:
    """The value as written under `how` (splits are written by the request builder from the 'shown' form)."""
    v, shown = value.canonical, value.shown
    if how in ("shown", "quoted") or how.startswith("split"):
        return shown
    if how == "compact":
        return v
    if how == "spaced-digits":
        return " ".join(v)
    if how == "double-spaced":
        return _grouped(v, value.groups or (3, 3, 4), "  ")
    if how == "slashes":
        return _grouped(v, value.groups or (3, 3, 4), "/")
    if how == "mixed-separators":
        groups = value.groups or (3, 3, 4, 4)
        parts, pos = [], 0
        for g in groups:
            parts.append(v[pos : pos + g])
            pos += g
        if pos < len(v):
            parts.append(v[pos:])
        return "".join(p + (r.choice([" ", "-", ".", " - ", "_", "/"]) if k < len(parts) - 1 else "")
                       for k, p in enumerate(parts))  # fmt: skip
    if how == "dots":
        return _grouped(v, value.groups or (3, 3, 4), ".")
    if how == "odd-groups":
        return _grouped(v, (2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3), " ")
    if how == "unicode-digits":
        return _digits_in(shown if r.random() < 0.5 else v, DIGIT_BLOCKS[r.choice(list(DIGIT_BLOCKS))])
    if how == "zero-width":
        return _sprinkle(shown, r, INVISIBLES[:5])
    if how == "invisible-mix":
        return _sprinkle(v, r, INVISIBLES, 0.5)
    if how == "nbsp-groups":
        return _grouped(v, value.groups or (3, 3, 4), r.choice(["\u00a0", "\u202f", "\u2009", "\u3000"]))
    if how == "number-words":
        return r.choice([" ", ", ", "-"]).join(NUMBER_WORDS[int(c)] for c in v)
    if how == "trailing-punct":
        return shown  # the container puts punctuation right after it
    if how == "lowercase":
        return shown.lower()
    if how in ("upper",):
        return shown.upper()
    if how == "mixed-case":
        return "".join(c.upper() if r.random() < 0.5 else c for c in shown)
    if how == "homoglyph":
        chars = list(shown)
        idx = [k for k, c in enumerate(chars) if c in LOOKALIKE]
        for k in r.sample(idx, min(len(idx), r.randint(1, 3))):
            chars[k] = LOOKALIKE[chars[k]]
        return "".join(chars)
    if how == "at-dot-words":
        local, domain = shown.split("@")
        dot = r.choice(DOT_FORMS[:3])
        return local.replace(".", dot if r.random() < 0.5 else ".") + r.choice(AT_FORMS[:3]) + domain.replace(".", dot)
    if how == "at-only-words":
        local, domain = shown.split("@")
        return local + r.choice([" at ", " AT "]) + domain
    if how == "bracket-at":
        local, domain = shown.split("@")
        return local + r.choice(AT_FORMS[2:8]) + domain.replace(".", r.choice([*DOT_FORMS[2:], "."]))
    if how == "spaced":
        return shown.replace("@", " @ ").replace(".", " . ")
    if how == "fullwidth-at":
        return shown.replace("@", r.choice(["\uff20", "\ufe6b"]))
    if how == "mailto":
        return f"mailto:{shown}"
    if how == "defanged":
        return shown.replace(".", r.choice(["[.]", "(.)", "{.}", " dot ", "[dot]"]))
    if how == "spaced-dots":
        return shown.replace(".", " . ")
    if how == "with-port":
        return f"{shown}:{r.randint(1024, 65535)}" if "." in shown else f"[{shown}]:{r.randint(1024, 65535)}"
    if how == "in-url":
        host = shown if "." in shown else f"[{shown}]"
        return f"http://{host}/{r.choice(['admin', 'api/v1/users', 'login', ''])}"
    if how == "env-line":
        var = r.choice(["AWS_ACCESS_KEY_ID", "OPENAI_API_KEY", "GITHUB_TOKEN", "SLACK_BOT_TOKEN", "API_KEY"])
        return f"export {var}={shown}"
    if how == "base64":
        payload = shown if r.random() < 0.6 else f"customer record: {shown}"
        encoded = base64.b64encode(payload.encode()).decode()
        return encoded if r.random() < 0.7 else encoded.rstrip("=")
    if how == "url-encoded":
        return _percent(shown, r)
    if how == "json-escaped":
        return "".join(f"\\u{ord(c):04x}" if (c.isalnum() or c in "@.") and r.random() < 0.7 else c for c in shown)
    if how == "html-entities":
        return "".join((f"&#{ord(c)};" if r.random() < 0.5 else f"&#x{ord(c):x};") if c.isalnum() or c == "@"
                       else c for c in shown)  # fmt: skip
    if how == "hex":
        return shown.encode().hex()
    raise ValueError(how)


# --- containers: the text around the written value -----------------------------------------------------------------

SENTENCES = [
    "Please update the record with {v}",
    "The customer gave {v} when we spoke on the phone yesterday",
    "Can you legal analyse why {v} was flagged by compliance",
    "Summarise the case notes; the reference on file is {v}",
    "I need a short reply to the client whose details are {v}",
    "{v} is what the form said, draft a letter about the refund",
    "According to the intake sheet ({v}) the claim is still open",
    "Translate to French: my details are {v}",
    "Write a polite reminder, include {v}",
    "Check the contract terms; they listed {v} as the contact",
]
TRAILING = [".", ",", ";", ":", "!", "?", ").", "\".", "'", "...", ".\n"]


def contain(written: str, how: str, entity: str, r: random.Random) -> tuple[str, str]:
    """Put the written value into a piece of text; returns (text, container name)."""
    key = {"creditCard": "card_number", "usSsn": "ssn", "iban": "iban", "email": "email", "phone": "phone",
           "ipAddress": "client_ip", "apiKey": "api_key"}[entity]  # fmt: skip
    kind = r.choice(["sentence", "sentence", "sentence", "json", "code", "table", "html", "csv", "yaml", "log"])
    if how == "trailing-punct":
        kind = "sentence-end"
    if kind == "sentence":
        return r.choice(SENTENCES).format(v=written) + r.choice([".", "", " please.", " thanks"]), kind
    if kind == "sentence-end":
        return r.choice(SENTENCES).format(v=written) + r.choice(TRAILING), kind
    if kind == "json":
        return f'Fix this payload: {{"id": {r.randint(1, 999)}, "{key}": "{written}", "ok": true}}', kind
    if kind == "code":
        lang = r.choice(["python", "js", "bash", ""])
        return f"Why does this fail?\n```{lang}\n{key} = \"{written}\"\nsubmit({key})\n```", kind
    if kind == "table":
        return f"| name | {key} |\n|---|---|\n| {r.choice(FIRST).title()} | {written} |\nsummarise the table", kind
    if kind == "html":
        return f"<tr><td>{r.choice(LAST).title()}</td><td>{written}</td></tr> convert to markdown", kind
    if kind == "csv":
        return f"name,{key},city\n{r.choice(FIRST)},{written},Lyon\nclean up this csv", kind
    if kind == "yaml":
        return f"customer:\n  name: {r.choice(FIRST)}\n  {key}: {written}\nvalidate this yaml", kind
    ts = f"2025-0{r.randint(1, 9)}-1{r.randint(0, 9)}T0{r.randint(0, 9)}:1{r.randint(0, 9)}:00Z"
    return f"{ts} WARN auth {key}={written} retry=3\nwhat does this log line mean", kind


NEUTRAL = ["the usual reference", "the one on file", "our standard contact", "the default entry", "the same as before"]


# --- requests ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planted:
    entity: str
    canonical: str
    written: tuple[str, ...]  # what appears in the body, one string per piece (2-3 for splits)
    disguise: str
    valid: bool


@dataclass(frozen=True)
class AdversarialRequest:
    marker: str
    path: str
    body: dict[str, Any]
    planted: tuple[Planted, ...]
    placement: str
    container: str
    tags: dict[str, str] = field(default_factory=dict)

    # the attributes residency_stress.py's rig reads
    @property
    def values(self) -> tuple[str, ...]:
        return tuple(w for p in self.planted for w in p.written)

    @property
    def entities(self) -> tuple[str, ...]:
        return tuple(p.entity for p in self.planted)

    @property
    def disguises(self) -> tuple[str, ...]:
        return tuple(p.disguise for p in self.planted)


def marker(i: int) -> str:
    """'ticket q' + six letters (the reliability rig's marker shape; letters only, never PII-like)."""
    out, n = "", i * 7919 + 13
    for _ in range(6):
        n, k = divmod(n, 26)
        out += string.ascii_lowercase[k]
    return "ticket q" + out


PLACEMENTS = ["user", "system", "earlier-user", "assistant", "content-parts", "image-caption", "image-url",
              "tool-call-arguments", "tool-result", "name-field", "metadata", "user-field", "tool-description",
              "response-format", "completions", "prompt-list", "stop"]  # fmt: skip


def _split_points(s: str, pieces: int, r: random.Random) -> list[str]:
    cuts = sorted(r.sample(range(1, len(s)), pieces - 1))
    bounds = [0, *cuts, len(s)]
    return [s[a:b] for a, b in itertools.pairwise(bounds)]


def _tool_call(arguments: str, name: str = "lookup_customer") -> dict[str, Any]:
    return {"id": "call_7", "type": "function", "function": {"name": name, "arguments": arguments}}


def _body_for_split(how: str, pieces: list[str], mk: str, r: random.Random) -> tuple[str, dict[str, Any]]:
    lead = r.choice(["The first part is", "Starts with", "Here is half:", "Part one:", "ok so it's", ""])
    tail = r.choice(["is the rest", "- that's all of it", "(second half)", "", "and that completes it"])
    ack = r.choice(["Got it, go on.", "Okay, what's the rest?", "Noted. Continue please.", "Sure."])
    if how == "split-user-turns":
        msgs = [{"role": "user", "content": f"{lead} {pieces[0]}".strip()},
                {"role": "assistant", "content": ack},
                {"role": "user", "content": f"{pieces[1]} {tail}. {mk}: legal analyse it".strip()}]  # fmt: skip
    elif how == "split-three-turns":
        msgs = [{"role": "user", "content": f"{lead} {pieces[0]}".strip()},
                {"role": "assistant", "content": ack},
                {"role": "user", "content": pieces[1]},
                {"role": "assistant", "content": ack},
                {"role": "user", "content": f"{pieces[2]} {tail}. {mk}: legal analyse it"}]  # fmt: skip
    elif how == "split-content-parts":
        msgs = [{"role": "user", "content": [{"type": "text", "text": f"{lead} {pieces[0]}".strip()},
                                             {"type": "text", "text": f"{pieces[1]} {tail}"},
                                             {"type": "text", "text": f"{mk}: legal analyse it"}]}]  # fmt: skip
    elif how == "split-system-user":
        msgs = [{"role": "system", "content": f"Customer context: {pieces[0]}"},
                {"role": "user", "content": f"{pieces[1]} {tail}. {mk}: legal analyse it"}]  # fmt: skip
    elif how == "split-tool-args":
        args = json.dumps({"part_a": pieces[0], "part_b": pieces[1]})
        msgs = [{"role": "user", "content": "legal analyse the customer"},
                {"role": "assistant", "content": None, "tool_calls": [_tool_call(args)]},
                {"role": "tool", "tool_call_id": "call_7", "content": "found"},
                {"role": "user", "content": f"{mk}: legal analyse it now"}]  # fmt: skip
    else:  # split-metadata
        msgs = [{"role": "user", "content": f"{mk}: legal analyse the attached record"}]
        return "/v1/chat/completions", {"model": "auto", "messages": msgs,
                                        "metadata": {"ref_a": pieces[0], "ref_b": pieces[1]}}  # fmt: skip
    return "/v1/chat/completions", {"model": "auto", "messages": msgs}


def _body_for_placement(placement: str, text: str, raw: str, mk: str, r: random.Random) -> tuple[str, dict[str, Any]]:
    """A body with `text` (the value in its container) or `raw` (the bare written value) at `placement`."""
    ask = f"{mk}: legal analyse the case"
    chat = "/v1/chat/completions"
    if placement == "user":
        return chat, {"model": "auto", "messages": [{"role": "user", "content": f"{mk}: {text}"}]}
    if placement == "system":
        return chat, {"model": "auto", "messages": [{"role": "system", "content": f"Context for the agent. {text}"},
                                                    {"role": "user", "content": ask}]}  # fmt: skip
    if placement == "earlier-user":
        return chat, {"model": "auto", "messages": [{"role": "user", "content": text},
                                                    {"role": "assistant", "content": "Understood."},
                                                    {"role": "user", "content": ask}]}  # fmt: skip
    if placement == "assistant":
        return chat, {"model": "auto", "messages": [{"role": "user", "content": "what do we have on file?"},
                                                    {"role": "assistant", "content": text},
                                                    {"role": "user", "content": ask}]}  # fmt: skip
    if placement == "content-parts":
        parts = [{"type": "text", "text": ask}, {"type": "text", "text": text}]
        r.shuffle(parts)
        return chat, {"model": "auto", "messages": [{"role": "user", "content": parts}]}
    if placement == "image-caption":
        parts = [{"type": "image_url", "image_url": {"url": "https://img.example.org/scan-17.png", "detail": "low"}},
                 {"type": "text", "text": f"Caption: {text}"}, {"type": "text", "text": ask}]  # fmt: skip
        return chat, {"model": "auto", "messages": [{"role": "user", "content": parts}]}
    if placement == "image-url":
        url = "https://img.example.org/scan.png?note=" + urllib.parse.quote(raw, safe="")
        parts = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": ask}]
        return chat, {"model": "auto", "messages": [{"role": "user", "content": parts}]}
    if placement == "tool-call-arguments":
        args = json.dumps({"query": text, "limit": 3}) if r.random() < 0.5 else json.dumps({"customer": raw})
        return chat, {"model": "auto", "messages": [
            {"role": "user", "content": "legal analyse the customer"},
            {"role": "assistant", "content": None, "tool_calls": [_tool_call(args)]},
            {"role": "tool", "tool_call_id": "call_7", "content": "no match"},
            {"role": "user", "content": ask}]}  # fmt: skip
    if placement == "tool-result":
        return chat, {"model": "auto", "messages": [
            {"role": "user", "content": "look the customer up"},
            {"role": "assistant", "content": None, "tool_calls": [_tool_call('{"id": 42}')]},
            {"role": "tool", "tool_call_id": "call_7", "content": json.dumps({"record": text})},
            {"role": "user", "content": ask}]}  # fmt: skip
    if placement == "name-field":
        return chat, {"model": "auto", "messages": [{"role": "user", "name": raw, "content": ask}]}
    if placement == "metadata":
        return chat, {"model": "auto", "metadata": {"customer_note": text},
                      "messages": [{"role": "user", "content": ask}]}  # fmt: skip
    if placement == "user-field":
        return chat, {"model": "auto", "user": raw, "messages": [{"role": "user", "content": ask}]}
    if placement == "tool-description":
        tools = [{"type": "function", "function": {"name": "notify", "description": f"Notify the owner. {text}",
                                                   "parameters": {"type": "object", "properties": {}}}}]  # fmt: skip
        return chat, {"model": "auto", "tools": tools, "messages": [{"role": "user", "content": ask}]}
    if placement == "response-format":
        fmt = {"type": "json_schema", "json_schema": {"name": "reply", "schema": {
            "type": "object", "description": text, "properties": {"answer": {"type": "string"}}}}}  # fmt: skip
        return chat, {"model": "auto", "response_format": fmt, "messages": [{"role": "user", "content": ask}]}
    if placement == "completions":
        return "/v1/completions", {"model": "auto", "prompt": f"{mk}: {text}", "max_tokens": 8}
    if placement == "prompt-list":
        return "/v1/completions", {"model": "auto", "prompt": [ask, text], "max_tokens": 8}
    # stop
    return chat, {"model": "auto", "stop": [raw, "\n\n"], "messages": [{"role": "user", "content": ask}]}


def build(i: int, control: bool = False, seed: int = SEED) -> AdversarialRequest:
    """Request number `i` of the corpus (deterministic); with `control`, the same request without its value."""
    r = random.Random(seed * 1_000_003 + i)
    entity = list(MAKERS)[i % len(MAKERS)]
    broken = entity in CHECKSUMMED and r.random() < 0.05
    value = MAKERS[entity](r, broken)
    how = r.choice(disguises_for(entity))
    mk = ("control " if control else "") + marker(i)
    stream = r.random() < 0.15
    if how.startswith("split"):
        shown = value.shown
        n = 3 if how == "split-three-turns" else 2
        pieces = _split_points(shown, n, r)
        if control:
            pieces = [r.choice(NEUTRAL) for _ in pieces]
        path, body = _body_for_split(how, pieces, mk, r)
        planted = () if control else (Planted(entity, value.canonical, tuple(pieces), how, value.valid),)
        placement, container = how, "split"
    else:
        written = disguise(value, how, r)
        if how == "quoted":
            written = f'"{written}"'
        filler = r.choice(NEUTRAL)
        text, container = contain(filler if control else written, how, entity, r)
        placement = r.choice(PLACEMENTS)
        path, body = _body_for_placement(placement, text, filler if control else written, mk, r)
        if mk not in json.dumps(body):
            # the marker must be in the body for leak attribution (placements that carry the value alone)
            body.setdefault("metadata", {})["ticket"] = mk
        planted = () if control else (Planted(entity, value.canonical, (written,), how, value.valid),)
    if path == "/v1/chat/completions":
        body["stream"] = stream
    body.setdefault("max_tokens", 8)
    return AdversarialRequest(mk, path, body, planted, placement, container)


def adversarial_requests(n: int, seed: int = SEED) -> list[AdversarialRequest]:
    return [build(i, seed=seed) for i in range(n)]


def control_for(i: int, seed: int = SEED) -> AdversarialRequest:
    return build(i, control=True, seed=seed)


# --- decoys: PII-free text that names entities or carries harmless numbers --------------------------------------

DECOYS = [
    "What is an IBAN and where do I find mine?", "My social security card came in the mail, what now?",
    "How do I reset my API key if I lost it?", "Email me the summary at the end of the day.",
    "Call me tomorrow about the invoice.", "Which credit card has the best travel rewards?",
    "Is my IP address visible to websites I visit?", "Order #48213 arrived damaged on 2024-03-18.",
    "The meeting is at 10:30 in room 4.12, floor 3.", "We sold 1,250 units at $19.99 each in Q3 2023.",
    "Version 3.11.4 fixed the bug from 3.11.2.", "Set the timeout to 3000 ms and retries to 5.",
    "The password policy needs 12 characters minimum.", "Where do I enter the token the bank sent?",
    "Please spell out the account holder's name in capitals.", "Route 66 is 2,448 miles long.",
    "My phone number changed last week, how do I update it?", "The card was declined twice today.",
    "Convert 72 degrees Fahrenheit to Celsius.", "The tracking code starts with UPS and ends with 7.",
]  # fmt: skip


def decoy_request(i: int, seed: int = SEED + 1) -> dict[str, Any]:
    r = random.Random(seed * 7 + i)
    text = r.choice(DECOYS)
    if r.random() < 0.3:
        text += " " + r.choice(DECOYS)
    return {"model": "auto", "messages": [{"role": "user", "content": f"{marker(10**6 + i)}: {text}"}]}


# --- leak recognition (own folding, not the router's) ------------------------------------------------------------


def fold(text: str) -> str:
    """Lowercase ASCII letters and digits only, after NFKC, decimal-digit folding and dropping invisibles."""
    out = []
    for ch in unicodedata.normalize("NFKC", text):
        if unicodedata.category(ch) == "Nd":
            ch = str(unicodedata.digit(ch))
        if ch.isascii() and ch.isalnum():
            out.append(ch.lower())
    return "".join(out)


def reached(text: str, request: AdversarialRequest) -> list[str]:
    """The planted pieces of `request` whose folded form occurs in `text` (what an upstream received)."""
    body = fold(text)
    return [w for p in request.planted for w in p.written if len(fold(w)) >= 4 and fold(w) in body]


def to_jsonl_row(req: AdversarialRequest) -> dict[str, Any]:
    """A `tiered-router pii-eval` row (docs/residency.md)."""
    return {
        "id": req.marker,
        "path": req.path,
        "body": req.body,
        "values": [{"entity": p.entity, "disguise": p.disguise, "value": p.canonical, "written": list(p.written),
                    "valid": p.valid, "placement": req.placement, "container": req.container}
                   for p in req.planted],
    }  # fmt: skip


def main() -> None:
    """`python tests/reliability/pii_adversarial.py --out corpus.jsonl`: the corpus as `tiered-router pii-eval` rows."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--values", type=int, default=10_000)
    ap.add_argument("--decoys", type=int, default=1_000)
    args = ap.parse_args()
    with open(args.out, "w") as fh:
        for req in adversarial_requests(args.values, args.seed):
            fh.write(json.dumps(to_jsonl_row(req)) + "\n")
        for i in range(args.decoys):
            fh.write(json.dumps({"id": f"decoy{i}", "body": decoy_request(i)}) + "\n")


if __name__ == "__main__":
    main()
