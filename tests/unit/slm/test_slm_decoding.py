"""Pure pieces of generation: stop strings, speculative acceptance accounting, decode rate."""

from tiered_slm.engine import Finished, StopMatcher
from tiered_slm.speculative import AcceptanceStats, settle_proposal


def feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[str, bool]:
    out = ""
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out += text
        if stopped:
            return out, True
    return out + matcher.flush(), False


def test_stop_string_split_across_tokens_is_never_emitted() -> None:
    assert feed_all(StopMatcher(["<|im_end|>"]), ["Hello", " wor", "ld<|im", "_end|>", "tail"]) == (
        "Hello world", True)


def test_text_resembling_a_stop_prefix_is_released_when_it_diverges() -> None:
    assert feed_all(StopMatcher(["STOP"]), ["a ST", "OX b"]) == ("a STOX b", False)


def test_earliest_of_several_stops_wins() -> None:
    assert feed_all(StopMatcher(["zz", "b"]), ["a b zz"]) == ("a ", True)


def test_without_stops_text_passes_straight_through() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("abc") == ("abc", False)


def test_fully_accepted_proposal() -> None:
    assert settle_proposal([5, 6, 7], [5, 6, 7, 9]) == (3, 3)


def test_rejection_counts_the_rejected_token_and_not_the_rest() -> None:
    assert settle_proposal([5, 6, 7, 8], [5, 9, 7, 8]) == (2, 1)


def test_first_token_rejected() -> None:
    assert settle_proposal([5, 6], [4]) == (1, 0)


def test_proposal_cut_short_by_the_end_of_generation_counts_only_what_was_compared() -> None:
    assert settle_proposal([5, 6, 7, 8], [5, 6]) == (2, 2)


def test_acceptance_rate_is_zero_without_proposals() -> None:
    assert AcceptanceStats().rate == 0.0
    assert AcceptanceStats(proposed=4, accepted=3).rate == 0.75


def test_decode_rate_excludes_the_first_token() -> None:
    done = Finished("length", prompt_tokens=3, completion_tokens=11, started_at=0.0, first_token_at=1.0,
                    finished_at=2.0)
    assert done.decode_tokens_per_second == 10.0
    single = Finished("length", 3, 1, 0.0, 1.0, 1.5)
    assert single.decode_tokens_per_second is None
