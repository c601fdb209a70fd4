"""Pure pieces of generation: stop strings, speculative acceptance accounting, decode rate."""

import pytest

from tiered_slm.engine import Finished, ProposalTracker, StopMatcher
from tiered_slm.speculative import AcceptanceStats, SpeculativeConfig, settle_proposal


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


def test_sequential_verification_asks_for_a_proposal_after_a_miss_or_a_full_match() -> None:
    tracker = ProposalTracker()
    assert tracker.needs_proposal(5)  # nothing proposed yet
    tracker.start([1, 2, 3])
    assert not tracker.needs_proposal(1)
    assert not tracker.needs_proposal(2)
    assert tracker.needs_proposal(3)  # all three agreed: propose again
    tracker.start([7, 8])
    assert tracker.needs_proposal(9)  # first token disagreed
    tracker.start([])
    assert tracker.needs_proposal(4)  # an empty proposal never blocks the next one


def test_speculative_verify_mode_is_checked() -> None:
    assert SpeculativeConfig(mode="prompt-lookup").verify == "exact"
    with pytest.raises(ValueError, match="verify"):
        SpeculativeConfig(mode="prompt-lookup", verify="fast")  # type: ignore[arg-type]


async def test_token_channel_with_interval_never_holds_the_first_or_the_last_event() -> None:
    import asyncio

    from tiered_slm.engine import TextDelta, TokenChannel

    channel = TokenChannel(asyncio.get_running_loop(), min_interval_s=60.0)
    channel.put(TextDelta("first"))
    assert await asyncio.wait_for(channel.get_batch(), 1) == [TextDelta("first")]
    channel.put(TextDelta("held"))  # waits for the loop's timer (60 s here) ...
    batch = asyncio.ensure_future(channel.get_batch())
    await asyncio.sleep(0.05)
    assert not batch.done()
    done = Finished("stop", 1, 2, 0.0, 0.1, 0.2)
    channel.put(done)  # ... or the end, whichever comes first
    assert await asyncio.wait_for(batch, 1) == [TextDelta("held"), done]


async def test_token_channel_interval_timer_bounds_how_long_a_token_waits() -> None:
    import asyncio
    import time

    from tiered_slm.engine import TextDelta, TokenChannel

    channel = TokenChannel(asyncio.get_running_loop(), min_interval_s=0.05)
    channel.put(TextDelta("first"))
    await channel.get_batch()
    channel.put(TextDelta("a"))
    channel.put(TextDelta("b"))
    started = time.monotonic()
    assert await asyncio.wait_for(channel.get_batch(), 2) == [TextDelta("a"), TextDelta("b")]
    assert 0.04 <= time.monotonic() - started < 1.0


async def test_token_channel_without_interval_wakes_for_every_delta() -> None:
    import asyncio

    from tiered_slm.engine import TextDelta, TokenChannel

    channel = TokenChannel(asyncio.get_running_loop())
    for text in ("a", "b"):
        channel.put(TextDelta(text))
        assert await asyncio.wait_for(channel.get_batch(), 1) == [TextDelta(text)]
