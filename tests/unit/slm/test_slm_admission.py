"""The bounded queue in front of the model: admission, 429 estimate, drain."""

import asyncio

import pytest

from tiered_slm.admission import Admission, Draining, QueueFull, ewma, retry_after_seconds


def test_retry_after_scales_with_the_work_ahead() -> None:
    assert retry_after_seconds(waiting=3, running=1, mean_service_s=2.5) == 10
    assert retry_after_seconds(waiting=3, running=1, mean_service_s=2.5, workers=2) == 5


def test_retry_after_is_clamped_to_one_minute_and_at_least_one_second() -> None:
    assert retry_after_seconds(100, 1, 10.0) == 60
    assert retry_after_seconds(0, 0, 0.0) == 1


def test_ewma_moves_towards_the_sample() -> None:
    assert ewma(1.0, 2.0, weight=0.5) == 1.5


async def test_queue_full_when_capacity_waiting_requests_are_behind_a_running_one() -> None:
    admission = Admission(capacity=1)
    release = asyncio.Event()
    entered = asyncio.Event()

    async def hold() -> None:
        async with admission.slot():
            entered.set()
            await release.wait()

    running = asyncio.create_task(hold())
    await entered.wait()
    waiting = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert admission.snapshot().waiting == 1
    with pytest.raises(QueueFull) as caught:
        async with admission.slot():
            pass
    assert caught.value.retry_after >= 1
    release.set()
    await asyncio.wait_for(asyncio.gather(running, waiting), 5)
    assert (admission.waiting, admission.running) == (0, 0)


async def test_cancelled_waiter_leaves_the_queue() -> None:
    admission = Admission(capacity=2)
    release = asyncio.Event()

    async def hold() -> None:
        async with admission.slot():
            await release.wait()

    first = asyncio.create_task(hold())
    await asyncio.sleep(0)
    second = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert admission.waiting == 1
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert admission.waiting == 0
    release.set()
    await asyncio.wait_for(first, 5)


async def test_drain_refuses_new_work_and_waits_for_admitted_work() -> None:
    admission = Admission(capacity=4)
    release = asyncio.Event()

    async def hold() -> None:
        async with admission.slot():
            await release.wait()

    task = asyncio.create_task(hold())
    await asyncio.sleep(0)
    admission.start_draining()
    with pytest.raises(Draining):
        async with admission.slot():
            pass
    assert await admission.wait_idle(0.05) is False
    release.set()
    assert await admission.wait_idle(5) is True
    await task
