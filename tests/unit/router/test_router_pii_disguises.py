"""PII in disguise: normalised views, context words, strict mode, encodings, and values split across strings.

Each case names the mechanism it checks; the values are written here by hand (the large generated corpus is
tests/reliability/pii_adversarial.py). Library cross-checks: the hand-written Luhn and SSN rules agree with
python-stdnum on random input.
"""

from __future__ import annotations

import base64
import random

import pytest
from stdnum import luhn
from stdnum.iso7064 import mod_97_10
from stdnum.us import ssn as stdnum_ssn

from tiered_router.config import PiiEntity, parse_config
from tiered_router.decision import Classification, Reason, RoutingRequest, decide
from tiered_router.pii import Segment, redact, scan, scan_segments
from tiered_router.pii.checks import IBAN_LENGTHS, iban_valid, luhn_valid, ssn_valid

ALL = list(PiiEntity)


def found(text: str, strict: bool = False) -> set[str]:
    return {f.entity.value for f in scan(text, ALL, strict)}


# --- found in both modes -------------------------------------------------------------------------------------

BOTH = [
    # "at"/"dot" spellings of e-mail addresses
    ("first.last at corp dot example dot org", "email"),
    ("write to jdoe(at)example.com today", "email"),
    ("jdoe [at] example [dot] co [dot] uk", "email"),
    ("jane @ example . org", "email"),
    ("JANE.DOE AT EXAMPLE DOT COM", "email"),
    ("j.doe at example.com", "email"),  # a name-like local part
    # look-alike letters, invisible characters and combining marks
    ("mail j\u0430ne.d\u043ee@ex\u0430mple.com", "email"),  # Cyrillic a and o
    ("card 4\u20621\u20631\u034f1 1111 1111 1111", "creditCard"),  # invisible times/separator, grapheme joiner
    ("card 4\u03321\u03321\u03321\u0332 1111 1111 1111", "creditCard"),  # combining low line
    ("card \U0001d7d2\U0001d7cf\U0001d7cf\U0001d7cf 1111 1111 1111", "creditCard"),  # mathematical bold digits
    # separators the patterns do not expect
    ("card 4111.1111-1111 1111", "creditCard"),
    ("card 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "creditCard"),
    ("card 4111 / 1111 / 1111 / 1111", "creditCard"),
    ("ssn 123.45.6789", "usSsn"),
    ("iban LV 67 VOUE HKSU 7EOY P4PO K", "iban") if iban_valid("LV67VOUEHKSU7EOYP4POK") else ("", ""),
    ("iban de89.3704.0044.0532.0130.00", "iban"),
    ("iban DE89 370 400 440 532 013 000", "iban"),
    ("IBAN: GB82WEST12345698765432.", "iban"),
    # context words (Presidio-style): a weak candidate near the entity's words
    ("my ssn is 123456789, thanks", "usSsn"),
    ("social security number: 078051120", "usSsn"),
    ("card 4111 1111 1111 1112 (my visa)", "creditCard"),
    ("my password is hunter2!x", "apiKey"),
    ("password = correcthorsebattery", "apiKey"),
    # trailing punctuation
    ("update the record with 69.66.127.92.", "ipAddress"),
    ("the server (10.1.2.3) is down", "ipAddress"),
    ("see 10[.]1[.]2[.]3 in the report", "ipAddress"),
    # well-known prefixes in a length or case that is not the vendor's canonical format
    ("AKIAabcDEF123ghiJKL456mno", "apiKey"),
    ("akiaqkqkgkddxwffdljiaa", "apiKey"),
    ("use sk-AbC123dEf456 here", "apiKey"),
    ("GHP_ABCDEF123456GHIJKL", "apiKey"),
    ("xoxb-AbC123dEf456GhI789", "apiKey"),
    # encodings, decoded and scanned again
    ("payload " + base64.b64encode(b"jane.doe@example.com").decode(), "email"),
    ("note=" + base64.b64encode(b"123-45-6789").decode().rstrip("="), "usSsn"),
    ("q=jane%2Edoe%40example%2Ecom&x=1", "email"),
    ("&#52;&#49;&#x31;&#x31; 1111 1111 1111", "creditCard"),
    ("\\u0034\\u0031\\u0031\\u0031 1111 1111 1111", "creditCard"),
    ("hex " + b"jane.doe@example.com".hex(), "email"),
    ("four one one one one one one one one one one one one one one one", "creditCard"),
]


@pytest.mark.parametrize(("text", "entity"), [c for c in BOTH if c[0]])
@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_disguised_value_is_found(text: str, entity: str, strict: bool) -> None:
    assert entity in found(text, strict), (text, scan(text, ALL, strict))


# --- strict mode only: ambiguous values ----------------------------------------------------------------------

STRICT_ONLY = [
    ("please update 123456789 in the file", "usSsn"),  # nine bare digits, no context
    ("order 4111 1111 1111 1112 arrived", "creditCard"),  # a card-length number with a broken checksum
    ("ref 30 1234 5678 9", None),
    ("ref Zx81aQ9mPl0Rt7Yb2Kd4Wc6", "apiKey"),  # a random-looking token, no secret word near
    ("look at example.com for the details", "email"),  # a plain word before " at "
    ("iban SA12 50V2 UPYB RHQU KOJY 2TEV", "iban"),  # IBAN layout, checksum broken
]


@pytest.mark.parametrize(("text", "entity"), STRICT_ONLY)
def test_strict_mode_keeps_ambiguous_values(text: str, entity: str | None) -> None:
    strict = found(text, strict=True)
    assert strict if entity is None else entity in strict, text
    assert entity is None or entity not in found(text, strict=False), text


NEVER = [
    "What is the capital of France, and how tall is the Eiffel tower in 2024?",
    "2025-06-24 14:36:25 status installed libc6:amd64 2.36-9+deb12u10",
    "install libedit2:amd64 <none> 3.1-20221030-2",
    "class BaseDefaultEventLoopPolicy(AbstractEventLoopPolicy): GetExitCodeProcess",
    "commit a4337bc45a8fc544c03f52dc550cd6e1e87021bc8 fixed it",
    "see https://docs.example.org/v6/guide/page-220.html?ref=abc_28 for details",
    "we sold 1,250 units at $19.99 each; total $24,987.50 in Q3 2023",
    "the token expired yesterday, reset my password please",
    "pi is 3.14159265358979",
    "meet me at home. then we go",
]


@pytest.mark.parametrize("text", NEVER)
@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_ordinary_text_has_no_pii(text: str, strict: bool) -> None:
    assert scan(text, ALL, strict) == [], text


# --- across strings ------------------------------------------------------------------------------------------


def user(text: str) -> Segment:
    return Segment(text, "messages:user")


def assistant(text: str) -> Segment:
    return Segment(text, "messages:assistant")


SPLITS = {
    "card across user turns": [user("My card starts 4111 1111"), assistant("Go on."), user("1111 1111 is the rest")],
    "email across user turns": [user("it is jane.doe@exa"), assistant("ok"), user("mple.org thanks")],
    "email local part alone": [user("Customer: tomaszkowalski"), user("@vandelay.com.au and that's it")],
    "ssn in three turns": [user("081-0"), assistant("ok"), user("6-6"), assistant("ok"), user("751 done")],
    "ipv6 in three turns": [user("c83c:2ca8:31df:d01e:cece:5a72"), assistant("ok"), user(":fa:"), assistant("ok"),
                            user("826a is the rest")],
    "key across content parts": [user("Part one: HF_"), user("UPFXRGIFHELYNLPMJQQVL (second half)")],
    "iban across system and user": [Segment("Customer context: LV15 PDYN", "messages:system"),
                                    user("SF44 M1S0 X9AY X and that completes it")]
    if iban_valid("LV15PDYNSF44M1S0X9AYX") else [user("DE89 3704 0044"), user("0532 0130 00")],
    "password across turns": [user("pwd: h5K"), assistant("ok"), user("MKZzbN"), assistant("ok"),
                              user("V8f+rspoJpK and done")],
}  # fmt: skip


@pytest.mark.parametrize("case", list(SPLITS))
def test_value_split_across_strings_is_found_and_cannot_be_redacted(case: str) -> None:
    segments = SPLITS[case]
    for seg in segments:  # no single string holds the value (the case would prove nothing otherwise)
        assert not any(f.rule == "seam" for f in scan_segments([seg], ALL, True))
    findings = scan_segments(segments, ALL, strict=True)
    assert findings, case
    assert any(not f.redactable for f in findings), findings


def test_unrelated_numbers_in_consecutive_turns_are_not_joined_in_default_mode() -> None:
    segments = [user("I have 2 kids and 3 cats"), assistant("Nice!"), user("born in 2019 and 2021")]
    assert scan_segments(segments, ALL, strict=False) == []


def test_keys_are_scanned_but_not_joined() -> None:
    assert scan_segments([Segment("4111 1111 1111 1111", "metadata", key=True)], ALL)
    segments = [Segment("4111 1111", "metadata", key=True), Segment("1111 1111", "metadata")]
    assert not any(f.rule == "seam" for f in scan_segments(segments, ALL, strict=False))


# --- redaction of decoded values -----------------------------------------------------------------------------


def test_redaction_removes_the_encoded_source() -> None:
    token = base64.b64encode(b"card 4111 1111 1111 1111").decode()
    text = f"please decode {token} and reply"
    out = redact(text, scan(text, ALL))
    assert token not in out and out == "please decode [REDACTED:creditCard] and reply"


def test_a_value_found_only_across_strings_keeps_an_unrestricted_redacting_request_local() -> None:
    config = parse_config(
        {
            "tiers": [
                {"name": "slm", "kind": "local", "baseURL": "http://127.0.0.1:9/v1", "model": "m"},
                {"name": "gpt", "kind": "cloud", "baseURL": "http://127.0.0.1:9/v1", "model": "m"},
            ],
            "defaultTier": "gpt",
            "residency": {"namespaceClass": "unrestricted", "pii": {"action": "redact"}},
        }
    )

    class ToDefault:
        def classify(self, text: str, input_tokens: int) -> Classification:
            return Classification(None, 0.0, None, 0.0, Reason.NO_ROUTE_MATCHED)

    split = SPLITS["card across user turns"]
    req = RoutingRequest(text="", model="auto", segments=tuple(split))
    d = decide(config, ToDefault(), req)
    assert d.tier == "slm" and d.redact, d
    whole = (user("card 4111 1111 1111 1111 please"),)
    d = decide(config, ToDefault(), RoutingRequest(text="", model="auto", segments=whole))
    assert d.tier == "gpt" and d.redact, d  # a value inside one string is redacted and may go out


# --- strict mode defaults ------------------------------------------------------------------------------------


def _config(namespace_class: str, strict: bool | None = None) -> bool:
    pii: dict[str, object] = {} if strict is None else {"strict": strict}
    config = parse_config(
        {
            "tiers": [{"name": "slm", "kind": "local", "baseURL": "http://127.0.0.1:9/v1", "model": "m"}],
            "defaultTier": "slm",
            "residency": {"namespaceClass": namespace_class, "pii": pii},
        }
    )
    return config.residency.pii_strict


def test_strict_mode_is_the_default_except_in_unrestricted_namespaces() -> None:
    assert _config("restricted") and _config("local-only") and not _config("unrestricted")
    assert not _config("restricted", strict=False) and _config("unrestricted", strict=True)


# --- our checks agree with python-stdnum ---------------------------------------------------------------------


def test_luhn_agrees_with_stdnum() -> None:
    rng = random.Random(11)
    for _ in range(20_000):
        number = "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 19)))
        assert luhn_valid(number) == luhn.is_valid(number), number


def test_ssn_rules_agree_with_stdnum_apart_from_its_blacklist() -> None:
    rng = random.Random(12)
    for _ in range(20_000):
        number = f"{rng.randint(0, 999):03d}{rng.randint(0, 99):02d}{rng.randint(0, 9999):04d}"
        if number in ("078051120", "219099999") or number.startswith("98765432"):
            continue  # stdnum refuses these advertised numbers; residency keeps them local anyway
        assert ssn_valid(number) == stdnum_ssn.is_valid(number), number


def test_iban_uses_the_registry_lengths_and_stdnum_checksum() -> None:
    rng = random.Random(13)
    for country, length in list(IBAN_LENGTHS.items())[:40]:
        bban = "".join(rng.choice("0123456789") for _ in range(length - 4))
        check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
        iban = f"{country}{check:02d}{bban}"
        assert iban_valid(iban) and mod_97_10.is_valid(iban[4:] + iban[:4])
        assert not iban_valid(iban + "0")  # wrong length for the country
