"""streamsrc: event sourcing and CQRS on a functional streaming core."""

from streamsrc.effect import RetryPolicy as RetryPolicy
from streamsrc.errors import EffectFailed as EffectFailed
from streamsrc.errors import StreamsrcError as StreamsrcError
from streamsrc.stream import Pipe as Pipe
from streamsrc.stream import Stream as Stream

__all__ = ["EffectFailed", "Pipe", "RetryPolicy", "Stream", "StreamsrcError"]
