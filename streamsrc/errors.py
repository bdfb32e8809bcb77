"""streamsrc's error types: one tree, one module.

Expected failures (a lost race, a rejected command, invalid input) travel as
values inside ``returns`` containers; these classes are those values. They are
exceptions too, so a terminal operation that raises can raise them unchanged.

::

    StreamsrcError
    └── EffectFailed            an effect returned a returns Failure inside a stream
"""

from __future__ import annotations

__all__ = ["EffectFailed", "StreamsrcError"]


class StreamsrcError(Exception):
    """Base class of every error streamsrc raises or returns."""


class EffectFailed(StreamsrcError):
    """An effect in a stream returned a ``Failure``; the stream failed with it.

    ``failure`` holds the value inside the ``Failure`` unchanged, so a caller
    that gets this error back (from a terminal ``*_result`` variant, say) can
    match on the domain value.
    """

    def __init__(self, failure: object) -> None:
        super().__init__(failure)
        self.failure = failure

    def __repr__(self) -> str:
        return f"EffectFailed({self.failure!r})"
