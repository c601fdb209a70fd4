"""Keeps grammar-constrained output valid UTF-8, so the characters the grammar counts are the text returned.

llama.cpp's grammar engine decodes token bytes as UTF-8 "assuming valid UTF-8": an overlong form (C0 A2 for a
quote), a code point above U+10FFFF or a surrogate passes a character class as some character, and Python's
decoder then turns those bytes into several U+FFFD, so a `maxLength` the grammar enforced no longer holds (a
random-weight model sampled under the grammar did exactly that). Control tokens are a second gap: the grammar
matches their text (``<|im_start|>``), while the text returned leaves them out.

:class:`Utf8Guard` is a sampler stage placed in front of greedy/dist: it bans control tokens and any token whose
bytes, appended to what was generated so far, are not a valid UTF-8 prefix. Which tokens are banned depends only on
the bytes of an unfinished character at the end (at most three), so the ban lists are computed once per such state
and cached; the common state (nothing pending) costs one masked assignment per token.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from llama_cpp import Llama


def _second_byte_range(lead: int) -> tuple[int, int, int] | None:
    """(continuation bytes needed, lowest and highest allowed second byte) after a lead byte, per the Unicode
    Standard's table of well-formed UTF-8 (Table 3-7); None for a byte that cannot start a character."""
    if lead < 0x80:
        return (0, 0, 0)
    if 0xC2 <= lead <= 0xDF:
        return (1, 0x80, 0xBF)
    if lead == 0xE0:
        return (2, 0xA0, 0xBF)
    if lead == 0xED:
        return (2, 0x80, 0x9F)  # not the surrogates
    if 0xE1 <= lead <= 0xEF:
        return (2, 0x80, 0xBF)
    if lead == 0xF0:
        return (3, 0x90, 0xBF)
    if 0xF1 <= lead <= 0xF3:
        return (3, 0x80, 0xBF)
    if lead == 0xF4:
        return (3, 0x80, 0x8F)  # nothing above U+10FFFF
    return None


def _valid_prefix(data: bytes) -> bool:
    """True when ``data`` is well-formed UTF-8, or well-formed UTF-8 cut inside its last character."""
    remaining, low, high = 0, 0, 0
    for byte in data:
        if remaining:
            if not low <= byte <= high:
                return False
            remaining, low, high = remaining - 1, 0x80, 0xBF
            continue
        shape = _second_byte_range(byte)
        if shape is None:
            return False
        remaining, low, high = shape
    return True


def _pending(data: bytes) -> bytes:
    """The bytes of an unfinished last character of valid UTF-8 ``data`` (empty when it ends on a boundary)."""
    for back in range(1, min(3, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead (or ASCII) byte
            width = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            return data[-back:] if back < width else b""
    return b""


class Utf8Guard:
    """Token bans that keep the byte stream valid UTF-8 (see the module docstring). One per model."""

    def __init__(self, llm: Llama) -> None:
        import llama_cpp

        vocab = llm._model.vocab
        self.n_vocab = llm.n_vocab()
        buffer = ctypes.create_string_buffer(256)
        self.pieces: list[bytes] = []
        control: list[int] = []
        for token in range(self.n_vocab):
            size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, True)
            self.pieces.append(buffer.raw[:max(0, size)])
            is_eog = llama_cpp.llama_vocab_is_eog(vocab, token)
            if not is_eog and llama_cpp.llama_vocab_get_attr(vocab, token) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL:
                control.append(token)
        self._control = np.array(control, dtype=np.int64)
        self._bans: dict[bytes, np.ndarray[Any, np.dtype[np.int64]]] = {}
        self.pending = b""

    def start(self) -> None:
        """A new generation: nothing pending."""
        self.pending = b""

    def accept(self, token: int) -> None:
        """Record a generated token's bytes."""
        self.pending = _pending(self.pending + self.pieces[token]) if 0 <= token < self.n_vocab else b""

    def banned(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Token ids that may not come next (cached per pending state)."""
        bans = self._bans.get(self.pending)
        if bans is None:
            invalid = [token for token, piece in enumerate(self.pieces)
                       if piece and not _valid_prefix(self.pending + piece)]
            bans = np.union1d(self._control, np.array(invalid, dtype=np.int64))
            self._bans[self.pending] = bans
        return bans

    def apply(self, candidates: Any) -> None:
        """The sampler stage: ``candidates`` is llama.cpp's token data array, still indexed by token id (penalties
        and the grammar change logits in place, they do not reorder)."""
        array = candidates.contents
        if array.size != self.n_vocab:
            return
        data = np.ctypeslib.as_array(array.data, shape=(array.size,))
        data["logit"][self.banned()] = -np.inf
