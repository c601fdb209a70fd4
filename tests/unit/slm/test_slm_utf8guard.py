"""The UTF-8 state the guard keeps (tiered_slm/utf8guard.py), checked against Python's own strict decoder."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tiered_slm.utf8guard import _pending, _valid_prefix


@given(st.text(), st.data())
def test_every_cut_of_valid_text_is_a_valid_prefix(text: str, data: st.DataObject) -> None:
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates are not text UTF-8 can hold
        return
    cut = data.draw(st.integers(0, len(encoded)))
    assert _valid_prefix(encoded[:cut])
    head = encoded[:cut]
    pending = _pending(head)
    head[: len(head) - len(pending)].decode("utf-8")  # everything before the unfinished character decodes
    assert len(pending) < 4


@given(st.binary(max_size=12))
def test_what_the_guard_lets_through_decodes_strictly_once_complete(data: bytes) -> None:
    if _valid_prefix(data) and _pending(data) == b"":
        data.decode("utf-8")
    if not _valid_prefix(data):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return
        raise AssertionError(f"{data!r} decodes but was refused")


def test_the_forms_llama_cpp_lets_through_are_refused() -> None:
    for form in (b"\xc0\xa2", b"\xe0\x80", b"\xed\xa0", b"\xf0\x80", b"\xf4\x90", b"\xf5", b"\x80", b"\xed\x9f<"):
        assert not _valid_prefix(form), form
