"""Effects: ``returns`` containers in streams, ``attempt``, ``*_result`` terminals, retries."""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.future import FutureResult, FutureResultE, future_safe
from returns.io import IOFailure, IOResult, IOSuccess
from returns.maybe import Maybe, Nothing, Some
from returns.result import Failure, Result, Success

from streamsrc import EffectFailed, RetryPolicy, Stream, StreamsrcError

pytestmark = pytest.mark.anyio


class Boom(Exception):
    """The error the tests inject."""


class Rejected:
    """A domain failure value (not an exception), compared by identity."""


# ------------------------------------------------------------------ eval_map and returns containers


async def test_eval_map_with_an_async_function_returning_plain_values() -> None:
    async def f(x: int) -> str:
        await anyio.lowlevel.checkpoint()
        return str(x)

    assert await Stream.range(0, 4).eval_map(f).to_list() == ["0", "1", "2", "3"]


async def test_eval_map_unwraps_success() -> None:
    async def f(x: int) -> Result[int, str]:
        return Success(x * 2)

    assert await Stream.range(0, 4).eval_map(f).to_list() == [0, 2, 4, 6]


async def test_eval_map_failure_fails_the_stream_with_effect_failed() -> None:
    rejected = Rejected()
    seen: list[int] = []

    async def f(x: int) -> Result[int, Rejected]:
        seen.append(x)
        return Failure(rejected) if x == 2 else Success(x)

    s = Stream.range(0, 5, chunk_size=1).eval_map(f)
    with pytest.raises(EffectFailed) as info:
        await s.to_list()
    assert info.value.failure is rejected
    assert isinstance(info.value, StreamsrcError)
    assert seen == [0, 1, 2], "effects after the first Failure must not run"

    result = await s.to_list_result()
    error = result.failure()
    assert isinstance(error, EffectFailed)
    assert error.failure is rejected


async def test_eval_map_unwraps_io_success_and_fails_on_io_failure() -> None:
    async def f(x: int) -> IOResult[int, str]:
        return IOSuccess(x + 1) if x < 3 else IOFailure(f"{x} rejected")

    assert await Stream.range(0, 3).eval_map(f).to_list() == [1, 2, 3]
    with pytest.raises(EffectFailed) as info:
        await Stream.range(0, 5).eval_map(f).drain()
    assert info.value.failure == "3 rejected"


async def test_eval_map_with_a_sync_function_returning_future_result() -> None:
    def f(x: int) -> FutureResult[int, str]:
        return FutureResult.from_value(x * 3) if x < 3 else FutureResult.from_failure("too big")

    assert await Stream.range(0, 3).eval_map(f).to_list() == [0, 3, 6]
    with pytest.raises(EffectFailed) as info:
        await Stream.range(0, 4).eval_map(f).drain()
    assert info.value.failure == "too big"


async def test_eval_map_with_a_future_safe_async_function() -> None:
    error = Boom("four")

    @future_safe
    async def f(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        if x == 4:
            raise error
        return -x

    g: Callable[[int], FutureResultE[int]] = f
    assert await Stream.range(0, 4).eval_map(g).to_list() == [0, -1, -2, -3]
    with pytest.raises(EffectFailed) as info:
        await Stream.range(0, 6).eval_map(g).drain()
    assert info.value.failure is error


async def test_eval_map_with_an_async_function_returning_future_result() -> None:
    async def f(x: int) -> FutureResult[int, str]:
        await anyio.lowlevel.checkpoint()
        return FutureResult.from_value(x * 3) if x < 3 else FutureResult.from_failure("too big")

    out: list[object] = list(await Stream.range(0, 3).eval_map(f).to_list())
    # Await whatever came out unawaited so a failure here does not leak
    # "coroutine was never awaited" warnings into other tests.
    leftovers = [x for x in out if isinstance(x, FutureResult)]
    for leftover in leftovers:
        await leftover
    assert out == [0, 3, 6]
    result = await Stream.range(0, 4).eval_map(f).to_list_result()
    leaked = [x for x in result.value_or([]) if isinstance(x, FutureResult)]
    for leftover in leaked:
        await leftover
    assert isinstance(result.failure(), EffectFailed)


async def test_stream_eval_unwraps_every_kind_of_effect() -> None:
    async def plain() -> int:
        return 1

    async def success() -> Result[int, str]:
        return Success(2)

    async def io_success() -> IOResult[int, str]:
        return IOSuccess(3)

    def future() -> FutureResult[int, str]:
        return FutureResult.from_value(4)

    s = Stream.eval(plain) + Stream.eval(success) + Stream.eval(future)
    assert await s.to_list() == [1, 2, 4]
    assert await Stream.eval(io_success).to_list() == [3]

    rejected = Rejected()

    async def failure() -> Result[int, Rejected]:
        return Failure(rejected)

    result = await (Stream.eval(plain) + Stream.eval(failure)).to_list_result()
    error = result.failure()
    assert isinstance(error, EffectFailed)
    assert error.failure is rejected


async def test_par_eval_map_unwraps_results_and_fails_on_failure() -> None:
    async def f(x: int) -> Result[int, str]:
        await anyio.sleep(0.001 * (x % 3))
        return Success(x * x) if x != 5 else Failure("five")

    assert await Stream.range(0, 5).par_eval_map(3, f).to_list() == [0, 1, 4, 9, 16]
    result = await Stream.range(0, 8).par_eval_map(3, f).to_list_result()
    error = result.failure()
    assert isinstance(error, EffectFailed)
    assert error.failure == "five"


async def test_par_eval_map_unwraps_io_results() -> None:
    async def f(x: int) -> IOResult[int, str]:
        await anyio.lowlevel.checkpoint()
        return IOSuccess(x + 1) if x != 3 else IOFailure("three")

    # (typed as list[object]: the static type wrongly says IOResult, see test_stream_api)
    out: list[object] = list(await Stream.range(0, 3).par_eval_map(2, f).to_list())
    assert out == [1, 2, 3]
    unordered: list[object] = list(await Stream.range(0, 3).par_eval_map_unordered(2, f).to_list())
    assert set(unordered) == {1, 2, 3}
    assert len(unordered) == 3
    with pytest.raises(EffectFailed) as info:
        await Stream.range(0, 5).par_eval_map(2, f).drain()
    assert info.value.failure == "three"


def test_effect_failed_carries_the_failure_value() -> None:
    rejected = Rejected()
    error = EffectFailed(rejected)
    assert error.failure is rejected
    assert isinstance(error, StreamsrcError)
    assert isinstance(error, Exception)


# ------------------------------------------------------------------ attempt


@settings(max_examples=30, deadline=None)
@given(
    before=st.lists(st.integers(), max_size=10),
    after=st.lists(st.integers(), max_size=5),
    chunk_size=st.integers(1, 4),
)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_attempt_emits_successes_then_the_failure_and_ends(
    backend: str, before: list[int], after: list[int], chunk_size: int
) -> None:
    error = Boom("midway")
    s = (
        Stream.emits(before, chunk_size=chunk_size)
        + Stream.raise_error(error)
        + Stream.emits(after, chunk_size=chunk_size)
    )
    out = anyio.run(s.attempt().to_list, backend=backend)
    assert out == [*(Success(x) for x in before), Failure(error)]
    assert out[-1].failure() is error


async def test_attempt_of_a_successful_stream_is_all_successes() -> None:
    assert await Stream.range(0, 3).attempt().to_list() == [Success(0), Success(1), Success(2)]


async def test_attempt_stops_upstream_and_runs_its_finalizer_once() -> None:
    finalized: list[str] = []

    async def fin() -> None:
        finalized.append("fin")

    error = Boom("x")
    s = (Stream.range(0, 2) + Stream.raise_error(error) + Stream.range(5, 7)).on_finalize(fin)
    assert await s.attempt().to_list() == [Success(0), Success(1), Failure(error)]
    assert finalized == ["fin"]


async def test_attempt_turns_effect_failures_into_failure_values() -> None:
    async def f(x: int) -> Result[int, str]:
        return Success(x) if x < 2 else Failure("stop")

    out = await Stream.range(0, 5, chunk_size=1).eval_map(f).attempt().to_list()
    assert out[:2] == [Success(0), Success(1)]
    assert len(out) == 3
    error = out[2].failure()
    assert isinstance(error, EffectFailed)
    assert error.failure == "stop"


# ------------------------------------------------------------------ *_result terminals

RESULT_TERMINALS = ["to_list_result", "fold_result", "drain_result", "last_result", "count_result"]


def fold_step(acc: int, x: int) -> int:
    return acc * 2 + x


async def run_result_terminal(name: str, s: Stream[int]) -> Result[object, Exception]:
    if name == "to_list_result":
        return await s.to_list_result()
    if name == "fold_result":
        return await s.fold_result(0, fold_step)
    if name == "drain_result":
        return await s.drain_result()
    if name == "last_result":
        return await s.last_result()
    assert name == "count_result"
    return await s.count_result()


def list_semantics(name: str, xs: list[int]) -> object:
    """What the terminal operation ``name`` returns for a stream of ``xs``, computed on lists."""
    if name == "to_list_result":
        return xs
    if name == "fold_result":
        return functools.reduce(fold_step, xs, 0)
    if name == "drain_result":
        return None
    if name == "last_result":
        last: Maybe[int] = Some(xs[-1]) if xs else Nothing
        return last
    return len(xs)


@pytest.mark.parametrize("xs", [[], [7], [3, 1, 4, 1, 5]])
@pytest.mark.parametrize("name", RESULT_TERMINALS)
async def test_result_terminals_return_success(name: str, xs: list[int]) -> None:
    result = await run_result_terminal(name, Stream.emits(xs, chunk_size=2))
    assert result == Success(list_semantics(name, xs))


@pytest.mark.parametrize("name", RESULT_TERMINALS)
async def test_result_terminals_return_failure_instead_of_raising(name: str) -> None:
    error = Boom(name)
    result = await run_result_terminal(name, Stream.range(0, 3) + Stream.raise_error(error))
    assert isinstance(result, Failure)
    assert result.failure() is error


@pytest.mark.parametrize("name", RESULT_TERMINALS)
async def test_result_terminals_return_effect_failed_for_a_failure_value(name: str) -> None:
    rejected = Rejected()

    async def f(x: int) -> Result[int, Rejected]:
        return Failure(rejected) if x == 1 else Success(x)

    result = await run_result_terminal(name, Stream.range(0, 3).eval_map(f))
    error = result.failure()
    assert isinstance(error, EffectFailed)
    assert error.failure is rejected


@pytest.mark.parametrize("name", [*RESULT_TERMINALS, "attempt"])
async def test_cancellation_is_not_turned_into_a_failure(name: str) -> None:
    finished = False
    s = Stream.range(0, 2) + Stream.eval(anyio.sleep_forever).map(lambda _: -1)
    with anyio.move_on_after(0.05) as scope:
        if name == "attempt":
            await s.attempt().to_list()
        else:
            await run_result_terminal(name, s)
        finished = True
    assert scope.cancelled_caught
    assert not finished, "cancellation was swallowed and returned as a value"


async def test_cancellation_from_a_task_group_is_not_turned_into_a_failure() -> None:
    results: list[Result[list[int], Exception]] = []
    started = anyio.Event()

    async def block(x: int) -> int:
        started.set()
        await anyio.sleep_forever()
        return x

    async def consume() -> None:
        results.append(await Stream.range(0, 3).eval_map(block).to_list_result())

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        with anyio.fail_after(10):
            await started.wait()
        tg.cancel_scope.cancel()
    assert results == []


# ------------------------------------------------------------------ RetryPolicy


def test_retry_policy_rejects_invalid_settings() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="delays"):
        RetryPolicy(base_delay=-1)
    with pytest.raises(ValueError, match="delays"):
        RetryPolicy(max_delay=-1)
    with pytest.raises(ValueError, match="multiplier"):
        RetryPolicy(multiplier=0.5)


@settings(max_examples=100, deadline=None)
@given(
    base=st.floats(0, 5),
    cap=st.floats(0, 60),
    multiplier=st.floats(1, 4),
    attempt=st.integers(0, 60),
    seed=st.integers(0, 2**32),
)
def test_retry_delay_is_within_zero_and_an_exponential_capped_bound(
    base: float, cap: float, multiplier: float, attempt: int, seed: int
) -> None:
    policy = RetryPolicy(
        max_attempts=100,
        base_delay=base,
        max_delay=cap,
        multiplier=multiplier,
        rng=random.Random(seed),
    )
    bound = min(cap, base * multiplier**attempt)
    assert policy.cap(attempt) == pytest.approx(bound)
    assert policy.cap(attempt) <= cap
    assert policy.cap(attempt) <= policy.cap(attempt + 1)
    for _ in range(5):
        assert 0 <= policy.delay(attempt) <= policy.cap(attempt)


def test_retry_cap_grows_exponentially_until_capped() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.1, max_delay=1.0, multiplier=2.0)
    caps = [policy.cap(k) for k in range(8)]
    uncapped = [0.1 * 2.0**k for k in range(8)]
    assert caps == pytest.approx([min(1.0, u) for u in uncapped])
    assert caps[0] == pytest.approx(0.1)
    assert caps[-1] == 1.0


@pytest.mark.parametrize("attempt", [1023, 1100, 10_000])
def test_retry_cap_stays_at_max_delay_for_very_late_attempts(attempt: int) -> None:
    # A long-lived consumer (max_attempts in the thousands) must keep waiting
    # max_delay, not crash with OverflowError once multiplier**attempt overflows.
    policy = RetryPolicy(max_attempts=100_000, base_delay=0.05, max_delay=2.0)
    assert policy.cap(attempt) == 2.0
    assert 0 <= policy.delay(attempt) <= 2.0


def test_retry_delay_is_full_jitter() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=1.0, rng=random.Random(1234))
    delays = [policy.delay(3) for _ in range(500)]
    assert all(0 <= d <= 1.0 for d in delays)
    # full jitter spreads over the whole of [0, cap], not just its upper half
    assert min(delays) < 0.1
    assert max(delays) > 0.9
    assert len(set(delays)) > 400


@pytest.mark.parametrize("max_attempts", [1, 2, 5])
def test_should_retry_respects_max_attempts(max_attempts: int) -> None:
    policy = RetryPolicy(max_attempts=max_attempts)
    allowed = [k for k in range(10) if policy.should_retry(k, Boom())]
    # max_attempts counts the first try: attempts 0 .. max_attempts - 2 may be retried
    assert allowed == list(range(max_attempts - 1))


def test_should_retry_respects_retry_on() -> None:
    policy = RetryPolicy(max_attempts=5, retry_on=lambda exc: isinstance(exc, ConnectionError))
    assert policy.should_retry(0, ConnectionError("reset"))
    assert not policy.should_retry(0, Boom("no"))
    assert not policy.should_retry(4, ConnectionError("reset"))


def flaky_result(
    outcomes: list[Result[str, object]],
) -> tuple[list[int], Callable[[], Awaitable[Result[str, object]]]]:
    calls: list[int] = []

    async def fn() -> Result[str, object]:
        calls.append(len(calls))
        return outcomes[min(len(calls) - 1, len(outcomes) - 1)]

    return calls, fn


async def test_retry_policy_call_retries_until_success() -> None:
    calls, fn = flaky_result([Failure("busy"), Failure("busy"), Success("ok")])
    result = await RetryPolicy(max_attempts=5, base_delay=0).call(fn)
    assert result == Success("ok")
    assert len(calls) == 3


async def test_retry_policy_call_gives_up_and_returns_the_last_failure() -> None:
    outcomes: list[Result[str, object]] = [Failure(f"busy {i}") for i in range(10)]
    calls, fn = flaky_result(outcomes)
    result = await RetryPolicy(max_attempts=4, base_delay=0).call(fn)
    assert len(calls) == 4
    assert result == Failure("busy 3")


async def test_retry_policy_call_asks_retry_on_about_exception_failures() -> None:
    def policy() -> RetryPolicy:
        return RetryPolicy(max_attempts=4, base_delay=0, retry_on=lambda e: isinstance(e, ConnectionError))

    calls, fn = flaky_result([Failure(ConnectionError("reset")), Success("ok")])
    assert await policy().call(fn) == Success("ok")
    assert len(calls) == 2

    error = Boom("fatal")
    calls, fn = flaky_result([Failure(error), Success("ok")])
    result = await policy().call(fn)
    assert result.failure() is error
    assert len(calls) == 1


async def test_retry_policy_call_retries_non_exception_failures_while_attempts_remain() -> None:
    # Documented: "retry_on is asked about failures that are exceptions; a failure
    # value that is not an exception is retried while attempts remain."
    policy = RetryPolicy(max_attempts=3, base_delay=0, retry_on=lambda e: isinstance(e, ConnectionError))
    calls, fn = flaky_result([Failure("busy"), Failure("busy"), Success("ok")])
    assert await policy.call(fn) == Success("ok")
    assert len(calls) == 3


async def test_retry_policy_call_waits_between_attempts() -> None:
    _, fn = flaky_result([Failure("busy"), Failure("busy"), Success("ok")])
    policy = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.05, multiplier=1.0)
    start = anyio.current_time()
    assert await policy.call(fn) == Success("ok")
    # each wait is random in [0, 0.05]: together well under a few seconds
    assert anyio.current_time() - start < 5


# ------------------------------------------------------------------ Stream.retry


async def test_retry_reruns_the_stream_from_the_start() -> None:
    runs = itertools.count()

    async def start() -> int:
        return next(runs)

    def attempt(n: int) -> Stream[str]:
        body = Stream.emits(["a", "b"])
        return body + Stream.raise_error(ConnectionError(n)) if n < 2 else body + Stream.emit("done")

    s = Stream.eval(start).flat_map(attempt).retry(RetryPolicy(max_attempts=5, base_delay=0))
    # elements a failed attempt emitted are not taken back (documented)
    assert await s.to_list() == ["a", "b", "a", "b", "a", "b", "done"]
    assert next(runs) == 3


async def test_retry_gives_up_after_max_attempts_reraising_the_last_error() -> None:
    attempts: list[int] = []

    async def always_fails() -> int:
        attempts.append(len(attempts))
        raise ConnectionError(f"attempt {len(attempts) - 1}")

    s = Stream.eval(always_fails).retry(RetryPolicy(max_attempts=4, base_delay=0))
    with pytest.raises(ConnectionError, match="attempt 3"):
        await s.to_list()
    assert len(attempts) == 4

    attempts.clear()
    result = await s.to_list_result()
    assert isinstance(result.failure(), ConnectionError)
    assert len(attempts) == 4


async def test_retry_does_not_retry_errors_retry_on_rejects() -> None:
    attempts: list[int] = []

    async def fails() -> int:
        attempts.append(1)
        raise Boom("not transient")

    policy = RetryPolicy(max_attempts=5, base_delay=0, retry_on=lambda e: isinstance(e, ConnectionError))
    with pytest.raises(Boom, match="not transient"):
        await Stream.eval(fails).retry(policy).drain()
    assert len(attempts) == 1


async def test_retry_with_the_default_policy_tries_three_times() -> None:
    attempts: list[int] = []

    async def fails() -> int:
        attempts.append(1)
        raise ConnectionError("down")

    with anyio.fail_after(10), pytest.raises(ConnectionError):
        await Stream.eval(fails).retry().drain()
    assert len(attempts) == RetryPolicy().max_attempts


async def test_retry_releases_each_attempts_resources_once() -> None:
    acquired: list[int] = []
    released: list[int] = []

    async def acquire() -> int:
        acquired.append(len(acquired))
        return acquired[-1]

    async def release(r: int) -> None:
        released.append(r)

    def use(r: int) -> Stream[int]:
        return Stream.emit(r) + (Stream.raise_error(ConnectionError()) if r < 2 else Stream.empty())

    s = Stream.bracket(acquire, release).flat_map(use)
    out = await s.retry(RetryPolicy(max_attempts=3, base_delay=0)).to_list()
    assert out == [0, 1, 2]
    assert acquired == released == [0, 1, 2]


async def test_retry_is_not_triggered_by_a_successful_run() -> None:
    runs: list[int] = []

    async def once() -> int:
        runs.append(1)
        return 1

    assert await Stream.eval(once).retry(RetryPolicy(base_delay=0)).to_list() == [1]
    assert runs == [1]
