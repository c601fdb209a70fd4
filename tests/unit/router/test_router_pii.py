"""PII scanner: each entity's positive formats, checksum negatives, unicode disguises, redaction."""

from __future__ import annotations

import pytest

from tiered_router.config import PiiEntity
from tiered_router.pii import iban_valid, luhn_valid, normalize, redact, scan, ssn_valid

ALL = list(PiiEntity)
FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + i) for i in range(10)))
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + i) for i in range(10)))


def entities(text: str, wanted: list[PiiEntity] | None = None) -> set[str]:
    return {f.entity.value for f in scan(text, wanted or ALL)}


@pytest.mark.parametrize(
    ("text", "entity"),
    [
        ("write to jane.doe+billing@example.co.uk today", "email"),
        ("ADMIN@EXAMPLE.ORG", "email"),
        ("card 4111 1111 1111 1111 expires soon", "creditCard"),
        ("card 4111-1111-1111-1111", "creditCard"),
        ("amex 378282246310005", "creditCard"),
        ("iban DE89 3704 0044 0532 0130 00 please", "iban"),
        ("GB82WEST12345698765432", "iban"),
        ("fr1420041010050500013m02606", "iban"),
        ("my ssn is 123-45-6789", "usSsn"),
        ("ssn 123 45 6789", "usSsn"),
        ("server at 192.168.10.20 is down", "ipAddress"),
        ("v6 2001:db8::8a2e:370:7334 here", "ipAddress"),
        ("loopback ::1 only", "ipAddress"),
        ("call +1 (415) 555-2671 now", "phone"),
        ("call +44 20 7946 0958", "phone"),
        ("ring 415.555.2671", "phone"),
        ("key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789", "apiKey"),
        ("AKIAIOSFODNN7EXAMPLE", "apiKey"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "apiKey"),
        ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz.0123456789", "apiKey"),
        ("password = correcthorsebattery", "apiKey"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "apiKey"),
        ("user at example dot com", "email"),
        ("update the record with 69.66.127.92.", "ipAddress"),
    ],
)
def test_entity_is_detected(text: str, entity: str) -> None:
    assert entity in entities(text)


@pytest.mark.parametrize(
    ("text", "entity"),
    [
        ("ref 4111 1111 1111 1112", PiiEntity.CREDIT_CARD),  # Luhn fails, no card word near (see context tests)
        ("order 1234567890123", PiiEntity.CREDIT_CARD),
        ("iban DE89 3704 0044 0532 0130 01", PiiEntity.IBAN),  # mod-97 fails
        ("GB82WEST1234569876543", PiiEntity.IBAN),  # wrong length for GB
        ("ssn 000-45-6789", PiiEntity.US_SSN),
        ("ssn 666-45-6789", PiiEntity.US_SSN),
        ("ssn 923-45-6789", PiiEntity.US_SSN),
        ("ssn 123-00-6789", PiiEntity.US_SSN),
        ("it is 12:30:45 now", PiiEntity.IP_ADDRESS),
        ("std::vector<int> v;", PiiEntity.IP_ADDRESS),
        ("999.1.1.1 is not an address", PiiEntity.IP_ADDRESS),
        ("meeting on 2024-01-15 at noon, total 123.45", PiiEntity.PHONE),
        ("the job ran 2025-06-24 14:36:25 on the worker", PiiEntity.PHONE),
        ("look at example.com for the details", PiiEntity.EMAIL),
        ("sk-short", PiiEntity.API_KEY),
    ],
)
def test_checksum_and_format_negatives(text: str, entity: PiiEntity) -> None:
    assert entities(text, [entity]) == set()


def test_plain_prose_has_no_pii() -> None:
    assert scan("What is the capital of France, and how tall is the Eiffel tower in 2024?", ALL) == []


@pytest.mark.parametrize(
    "text",
    [
        "card " + " ".join(["4111", "1111", "1111", "1111"]).translate(FULLWIDTH),
        "card 4111\u200b1111\u200b1111\u200b1111",  # zero-width spaces
        "card 4111\u00a01111\u00a01111\u00a01111",  # no-break spaces
        "card 4111\u20131111\u20131111\u20131111",  # en dashes
        "card " + "4111111111111111".translate(ARABIC_INDIC),
    ],
)
def test_unicode_disguises_do_not_hide_a_card(text: str) -> None:
    assert "creditCard" in entities(text)


def test_fullwidth_at_sign_email() -> None:
    assert "email" in entities("mail jane\uff20example.com")


def test_only_configured_entities_are_reported() -> None:
    text = "jane@example.com 4111 1111 1111 1111"
    assert entities(text, [PiiEntity.EMAIL]) == {"email"}


def test_redact_replaces_each_finding() -> None:
    text = "mail jane@example.com card 4111 1111 1111 1111."
    out = redact(text, scan(text, ALL))
    assert out == "mail [REDACTED:email] card [REDACTED:creditCard]."


def test_validators() -> None:
    assert luhn_valid("79927398713") and not luhn_valid("79927398710") and not luhn_valid("abc")
    assert iban_valid("NL91 ABNA 0417 1643 00") and not iban_valid("NL91 ABNA 0417 1643 01")
    assert ssn_valid("078-05-1120") and not ssn_valid("078-05-0000")


def test_ascii_text_is_not_copied_by_normalize() -> None:
    text = "plain ascii"
    assert normalize(text) is text
