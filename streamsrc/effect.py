"""The bridge between plain async code and ``returns`` containers, and retry policies.

An *effect* here is whatever an async step gives back: a plain value, a
``Result``, an ``IOResult``, or an awaitable of any of them (a coroutine, a
``FutureResult``). :func:`run_effect` reduces all of these to a plain value,
turning a ``Failure`` into :class:`~streamsrc.errors.EffectFailed`, so the
stream core needs one code path for every kind.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import CoroutineType
from typing import Any, TypeVar

import anyio
from returns.io import IOResult
from returns.result import Failure, Result, Success
from returns.unsafe import unsafe_perform_io

from streamsrc.errors import EffectFailed

__all__ = ["RetryPolicy", "run_effect", "to_result", "unwrap_result"]

T = TypeVar("T")
E = TypeVar("E")


def unwrap_result(value: Any) -> Any:
    """Return the value inside ``Success``/``IOSuccess``; raise ``EffectFailed`` for a failure.

    Anything that is not a ``returns`` result passes through unchanged.

    >>> from returns.result import Failure, Success
    >>> unwrap_result(Success(3)), unwrap_result(3)
    (3, 3)
    >>> unwrap_result(Failure("no funds"))
    Traceback (most recent call last):
    ...
    streamsrc.errors.EffectFailed: no funds
    """
    kind = type(value)
    is_container = _CONTAINER_TYPES.get(kind)
    if is_container is None:
        is_container = _CONTAINER_TYPES[kind] = issubclass(kind, Result | IOResult)
    if not is_container:
        return value
    if isinstance(value, Result):
        if isinstance(value, Success):
            return value.unwrap()
        raise EffectFailed(value.failure())
    return unwrap_result(unsafe_perform_io(value))


# Whether a type is a returns container, cached: ``isinstance`` against returns' ABCs
# costs about a microsecond, and effects run once per element.
_CONTAINER_TYPES: dict[type, bool] = {}


async def run_effect(value: Any) -> Any:
    """Await ``value`` if it is awaitable, then unwrap it with :func:`unwrap_result`.

    >>> import anyio
    >>> from returns.future import FutureResult
    >>> anyio.run(run_effect, FutureResult.from_value(5))
    5
    """
    # A loop: an ``async def`` may return a FutureResult, itself awaitable.
    while type(value) is CoroutineType or inspect.isawaitable(value):
        value = await value
    return unwrap_result(value)


def to_result(exc: Exception) -> Result[Any, Any]:
    """The ``Failure`` that an exception stands for.

    ``EffectFailed`` gives back the failure value it carries; any other
    exception becomes ``Failure(exc)``.

    >>> to_result(EffectFailed("rejected"))
    <Failure: rejected>
    """
    if isinstance(exc, EffectFailed):
        return Failure(exc.failure)
    return Failure(exc)


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again, and how long to wait: capped exponential backoff with full jitter.

    Attempt ``k`` (0-based) waits a random time in ``[0, min(max_delay,
    base_delay * multiplier**k)]`` ("full jitter", which spreads competing
    retries apart best). ``max_attempts`` counts the first try, so
    ``max_attempts=1`` never retries. ``retry_on`` decides which errors are
    worth another try; by default every ``Exception``.

    >>> policy = RetryPolicy(max_attempts=4, base_delay=0.1, max_delay=0.25)
    >>> [policy.cap(k) for k in range(4)]
    [0.1, 0.2, 0.25, 0.25]
    >>> 0 <= policy.delay(1) <= 0.2
    True
    """

    max_attempts: int = 3
    base_delay: float = 0.05
    max_delay: float = 2.0
    multiplier: float = 2.0
    retry_on: Callable[[Exception], bool] = field(default=lambda exc: True)
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("delays must be >= 0 and multiplier >= 1")

    def cap(self, attempt: int) -> float:
        """The longest wait after failed attempt number ``attempt`` (0-based)."""
        try:
            return float(min(self.max_delay, self.base_delay * self.multiplier**attempt))
        except OverflowError:  # multiplier**attempt is past any float: long since capped
            return float(self.max_delay)

    def delay(self, attempt: int) -> float:
        """A random wait in ``[0, cap(attempt)]``."""
        return self.rng.uniform(0.0, self.cap(attempt))

    def should_retry(self, attempt: int, exc: Exception) -> bool:
        """Whether failed attempt number ``attempt`` (0-based) may be tried again."""
        return attempt + 1 < self.max_attempts and self.retry_on(exc)

    async def call(self, fn: Callable[[], Awaitable[Result[T, E]]]) -> Result[T, E]:
        """Call ``fn`` until it succeeds or the policy gives up; return the last ``Result``.

        ``retry_on`` is asked about failures that are exceptions; a failure
        value that is not an exception is retried while attempts remain.
        Exceptions ``fn`` raises are not caught.

        >>> import anyio
        >>> from returns.result import Failure, Success
        >>> tries = []
        >>> async def flaky():
        ...     tries.append(1)
        ...     return Success("ok") if len(tries) == 3 else Failure("busy")
        >>> anyio.run(RetryPolicy(max_attempts=5, base_delay=0).call, flaky), len(tries)
        (<Success: ok>, 3)
        """
        attempt = 0
        while True:
            result = await fn()
            if isinstance(result, Success):
                return result
            failure = result.failure()
            if isinstance(failure, Exception):
                give_up = not self.should_retry(attempt, failure)
            else:
                give_up = attempt + 1 >= self.max_attempts
            if give_up:
                return result
            await anyio.sleep(self.delay(attempt))
            attempt += 1
