"""Checksums and issuance rules that confirm a candidate (pure functions over strings).

IBAN country lengths come from python-stdnum's copy of the SWIFT IBAN registry and the mod-97 check is stdnum's
ISO 7064 implementation. Two checks are our own, for speed, and are tested against stdnum on random input
(tests/unit/router/test_router_pii_checks.py): the Luhn sum (stdnum's `luhn.is_valid` costs ~12 µs, this one ~2 µs,
and the digit-run detector runs it on every 13-19-digit window of a long number), and the SSN issuance rules (stdnum
~15 µs, this ~1 µs). stdnum's full `iban.is_valid` also checks each country's BBAN layout (~80 µs); a value with a
valid checksum and the registry length is treated as an IBAN whatever its layout, because residency needs recall
and the layout check adds nothing to the checksum's 1-in-97 chance.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from stdnum.iso7064 import mod_97_10

_NON_DIGIT = re.compile(r"\D")
_IBAN_SEPARATOR = re.compile(r"[\s\-.]")
_DOUBLED = tuple((2 * d if d < 5 else 2 * d - 9) for d in range(10))


def luhn_valid(digits: str) -> bool:
    """Luhn checksum over a string of ASCII digits (payment card numbers)."""
    if not digits.isdigit() or not digits.isascii():
        return False
    values = [ord(c) - 48 for c in digits]
    doubled = _DOUBLED
    return (sum(values[-1::-2]) + sum(doubled[d] for d in values[-2::-2])) % 10 == 0


def _registry_lengths() -> dict[str, int]:
    """Country code -> IBAN length, from stdnum's iban.dat (`DE country="Germany" bban="8!n10!n"`)."""
    import stdnum

    lengths: dict[str, int] = {}
    for line in (Path(stdnum.__file__).parent / "iban.dat").read_text().splitlines():
        m = re.match(r'([A-Z]{2}) .*bban="([^"]*)"', line)
        if m:
            lengths[m.group(1)] = 4 + sum(int(n) for n in re.findall(r"(\d+)!?[nac]", m.group(2)))
    return lengths


IBAN_LENGTHS: dict[str, int] = _registry_lengths()
"""ISO 13616 registry lengths per country code (python-stdnum's data)."""


def iban_valid(candidate: str) -> bool:
    """ISO 13616: a registry country with its length, and (rearranged, letters as 10..35) mod 97 == 1."""
    iban = _IBAN_SEPARATOR.sub("", candidate).upper()
    if len(iban) < 15 or not iban.isascii() or not iban[:2].isalpha() or not iban[2:4].isdigit():
        return False
    if not iban.isalnum() or IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    return _mod97(iban[4:] + iban[:4])


@lru_cache(maxsize=1024)
def _mod97(rearranged: str) -> bool:
    return bool(mod_97_10.is_valid(rearranged))


def ssn_valid(candidate: str) -> bool:
    """US SSN issuance rules: area not 000/666/9xx, group not 00, serial not 0000."""
    digits = _NON_DIGIT.sub("", candidate)
    if len(digits) != 9:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
