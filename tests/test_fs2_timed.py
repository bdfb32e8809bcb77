"""fs2's groupWithin, timeout and rate cases (StreamCombinatorsSuite), ported with real time.

fs2 runs these under a virtual clock (``TestControl``); here the clock is
real, so the durations are chosen far apart (a sleep several times a
timeout) and the tests check groups, order and failures, never how long
anything took. Each case cites the fs2 test; every case runs on asyncio and trio.
"""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_helpers import forever

from streamsrc import Stream

pytestmark = pytest.mark.anyio

BACKENDS = ("asyncio", "trio")
LIMIT = 10


class Err(Exception):
    """The error the tests raise (fs2's ``Err``)."""


def pause(seconds: float) -> Stream[int]:
    return Stream.sleep(seconds).drain_pipe()


@settings(max_examples=10, deadline=None)
@given(xs=st.lists(st.integers(), max_size=30), n=st.integers(1, 8), chunk=st.integers(1, 5))
@pytest.mark.parametrize("backend", BACKENDS)
def test_group_within_never_loses_never_empties_never_overfills(
    backend: str, xs: list[int], n: int, chunk: int
) -> None:
    # fs2 StreamCombinatorsSuite "groupWithin" / "should never lose any elements", "should never emit
    # empty groups", "should never have more elements than in its specified limit"
    s = Stream.emits(xs, chunk_size=chunk).spaced(0.0002)
    groups = anyio.run(s.group_within(n, 0.001).to_list, backend=backend)
    assert [x for g in groups for x in g] == xs
    assert all(0 < len(g) <= n for g in groups)


@settings(max_examples=10, deadline=None)
@given(xs=st.lists(st.integers(), max_size=30), n=st.integers(1, 8))
@pytest.mark.parametrize("backend", BACKENDS)
def test_group_within_is_chunk_n_when_no_timeouts_trigger(backend: str, xs: list[int], n: int) -> None:
    # fs2 StreamCombinatorsSuite "groupWithin" / "should be equivalent to chunkN when no timeouts trigger"
    s = Stream.emits(xs)
    got = anyio.run(s.group_within(n, 60).to_list, backend=backend)
    assert got == anyio.run(s.chunk_n(n).to_list, backend=backend)


async def test_group_within_accumulation_and_splitting() -> None:
    # fs2 StreamCombinatorsSuite "groupWithin" / "accumulation and splitting"
    t = 0.2  # long enough that a loaded machine moves a chunk between the two tasks within it
    source = Stream.range(1, 4) + pause(4 * t) + Stream.range(4, 16) + Stream.range(16, 23)
    expected = [[1, 2, 3], [4, 5, 6, 7, 8], [9, 10, 11, 12, 13], [14, 15, 16, 17, 18], [19, 20, 21, 22]]
    with anyio.fail_after(LIMIT):
        assert await source.group_within(5, t).to_list() == expected


async def test_group_within_upstream_failures_are_propagated_downstream() -> None:
    # fs2 StreamCombinatorsSuite "groupWithin" / "upstream failures are propagated downstream"
    with anyio.fail_after(LIMIT):
        with pytest.raises(Err):
            await (Stream.range(0, 3) + Stream.raise_error(Err())).group_within(2, 0.01).drain()


async def test_group_within_stress_all_elements_are_processed() -> None:
    # fs2 StreamCombinatorsSuite "groupWithin" / "stress test: all elements are processed"
    with anyio.fail_after(LIMIT):
        groups = await Stream.range(0, 5_000, chunk_size=7).group_within(100, 0.01).to_list()
    assert [x for g in groups for x in g] == list(range(5_000))


async def test_timeout_never_ending_stream() -> None:
    # fs2 StreamCombinatorsSuite "withTimeout" / "timeout never-ending stream"
    with anyio.fail_after(LIMIT):
        with pytest.raises(TimeoutError):
            await Stream.eval(forever).timeout(0.02).drain()


async def test_timeout_not_triggered_on_successfully_completed_stream() -> None:
    # fs2 StreamCombinatorsSuite "withTimeout" / "not trigger timeout on successfully completed stream"
    assert await Stream.sleep(0.001).timeout(5).to_list() == [None]


@pytest.mark.parametrize(("d1", "d2"), [(0.2, 0.3), (0.4, 0.3)])
async def test_compose_timeouts(d1: float, d2: float) -> None:
    # fs2 StreamCombinatorsSuite "withTimeout" / "compose timeouts d1 and d2 when d1 < d2", "... d1 > d2"
    s = (Stream.sleep(0.1).timeout(d1) + Stream.sleep(0.3)).timeout(d2)
    with anyio.fail_after(LIMIT):
        with pytest.raises(TimeoutError):
            await s.drain()


async def test_metered_lets_one_element_through_per_period() -> None:
    # fs2 StreamCombinatorsSuite "metered should not start immediately": elements are due at t, 2t,
    # 3t, ...; in 4.5t at most 4 can pass (a slow machine lets fewer through, never more)
    t = 0.05
    with anyio.fail_after(LIMIT):
        out = await Stream.range(0, 100).metered(t).interrupt_after(4.5 * t).to_list()
    assert out == list(range(len(out)))
    assert len(out) <= 4


async def test_spaced_waits_between_events_and_starts_immediately() -> None:
    # fs2 StreamCombinatorsSuite "spaced should start immediately if startImmediately is not set",
    # "spaced should wait between events"
    with anyio.fail_after(LIMIT):
        out = await Stream.range(0, 10).spaced(0.1).interrupt_after(0.25).to_list()
    assert out[:1] == [0]
    assert len(out) <= 4
