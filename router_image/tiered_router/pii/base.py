"""What every PII detector shares: the finding and segment types, and the normalised text they all read.

Two levels of normalisation, both pure:
- `normalize` folds what hides a value from ASCII patterns without changing what the text says: NFKC (fullwidth and
  mathematical letters and digits, ligatures, circled digits), every Unicode decimal digit to ASCII, dashes to '-',
  spaces to ' ', '@' look-alikes to '@', and drops invisible characters (format characters such as zero-width
  spaces, joiners and soft hyphens; control characters other than tab and newlines; Hangul and Braille fillers).
  Redaction writes this text, so it must stay readable.
- `fold_confusables` maps Cyrillic and Greek letters that look like Latin ones to those Latin letters, one character
  for one, so offsets hold. Detectors read the folded text; it is never sent anywhere (folding Russian prose into
  look-alike Latin would garble a redacted request).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from ..config import PiiEntity


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected entity.

    `start`/`end` index the normalised text that was scanned. `rule` says what found it (a pattern with its
    checksum, a context word, a strict-mode rule, a decoded view...); for a value found in a decoded view the span
    covers the encoded source, which is what redaction must remove. `redactable` is False for a value split across
    several strings of a request: no single string's span holds it, so it cannot be redacted away.
    """

    entity: PiiEntity
    start: int
    end: int
    rule: str = "pattern"
    redactable: bool = True


@dataclass(frozen=True, slots=True)
class Segment:
    """One string of a request as it is forwarded upstream.

    `channel` groups strings that read as one stream (the role of the message they belong to, or the top-level field
    name), so a value split across two user turns with an assistant turn between is joined up. `key` marks JSON
    object keys and structural values (a message's `role`, a part's `type`, ids): scanned like every other string,
    but never joined to their neighbours, since they are not part of what anyone wrote.
    """

    text: str
    channel: str = ""
    key: bool = False


_ASCII_INVISIBLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# The same characters as bytes: `bytes.translate` deleting them is a plain table loop (~5 µs on 8,000 characters),
# where a regex search with a character class costs ~35 µs.
_ASCII_INVISIBLE_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
# Default-ignorable and blank-rendering characters that are not category Cf: Hangul fillers, Braille blank, the
# combining grapheme joiner, Khmer inherent vowels, Mongolian free variation selectors, variation selectors.
_BLANK_LETTERS = frozenset(
    "\u115f\u1160\u3164\uffa0\u2800\u180e\u034f\u17b4\u17b5\u180b\u180c\u180d\u180f"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
)
# Generic combining marks (diacritics, enclosing and overlay marks) right after an ASCII letter, digit or symbol of
# an address: "4̲1̲1̲1̲" underlines digits without changing them. Script vowel signs are not in these blocks.
_MARKS_ON_ASCII = re.compile(
    r"(?<=[A-Za-z0-9@.\-+_])[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+"
)


@lru_cache(maxsize=8192)
def _fold_char(ch: str) -> str:
    cat = unicodedata.category(ch)
    if cat in ("Cf", "Cc", "Co", "Cn") or ch in _BLANK_LETTERS:
        return "" if ch not in "\t\n\r" else ch
    if cat == "Nd":
        return str(unicodedata.decimal(ch))
    if cat == "Pd" or ch in "\u2212\u2010\u2011":
        return "-"
    if cat == "Zs":
        return " "
    if cat in ("Zl", "Zp"):
        return "\n"
    if ch in "\uff20\ufe6b":
        return "@"
    return ch


def normalize(text: str) -> str:
    """Fold the unicode tricks that would hide an entity from ASCII patterns (see the module docstring).

    Printable ASCII text is returned as is (the same object)."""
    if text.isascii():
        raw = text.encode("ascii")
        kept = raw.translate(None, _ASCII_INVISIBLE_BYTES)
        return text if len(kept) == len(raw) else kept.decode("ascii")
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return _ASCII_INVISIBLE.sub("", text) if _ASCII_INVISIBLE.search(text) else text
    text = "".join(_fold_char(c) if ord(c) > 127 or c in "\x00\x7f" or ord(c) < 32 else c for c in text)
    return _MARKS_ON_ASCII.sub("", text) if not text.isascii() else text


# Cyrillic and Greek letters that are drawn like Latin ones (Unicode's confusables for the letters that occur in
# e-mail addresses, keys and IBANs); one character each, so offsets into the folded text equal offsets into the text.
_CONFUSABLES = str.maketrans(
    {
        # Cyrillic
        "\u0410": "A", "\u0412": "B", "\u0415": "E", "\u041a": "K", "\u041c": "M", "\u041d": "H", "\u041e": "O",
        "\u0420": "P", "\u0421": "C", "\u0422": "T", "\u0423": "Y", "\u0425": "X", "\u0405": "S", "\u0406": "I",
        "\u0408": "J", "\u04c0": "I", "\u0430": "a", "\u0435": "e", "\u043e": "o", "\u0440": "p", "\u0441": "c",
        "\u0443": "y", "\u0445": "x", "\u0455": "s", "\u0456": "i", "\u0458": "j", "\u0501": "d", "\u051b": "q",
        "\u051d": "w", "\u04cf": "l", "\u0432": "b", "\u043a": "k", "\u043d": "h", "\u0442": "t", "\u044c": "b",
        # Greek
        "\u0391": "A", "\u0392": "B", "\u0395": "E", "\u0396": "Z", "\u0397": "H", "\u0399": "I", "\u039a": "K",
        "\u039c": "M", "\u039d": "N", "\u039f": "O", "\u03a1": "P", "\u03a4": "T", "\u03a5": "Y", "\u03a7": "X",
        "\u03bf": "o", "\u03b1": "a", "\u03b9": "i", "\u03ba": "k", "\u03bd": "v", "\u03c1": "p", "\u03c5": "u",
        "\u03c7": "x", "\u03f2": "c", "\u03f3": "j",
        # Latin look-alikes NFKC keeps
        "\u0131": "i", "\u0237": "j", "\u0261": "g", "\u01c3": "!", "\u2044": "/", "\u2215": "/",
    }
)  # fmt: skip


def fold_confusables(text: str) -> str:
    """`text` with look-alike Cyrillic/Greek letters replaced by Latin ones (same length)."""
    if text.isascii():
        return text
    return text.translate(_CONFUSABLES)
