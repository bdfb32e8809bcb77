"""The streaming core: ``Stream``, a lazy, re-runnable, chunked async stream (no I/O, no store)."""

from streamsrc.stream._core import CHUNK_SIZE as CHUNK_SIZE
from streamsrc.stream._core import ExitCase as ExitCase
from streamsrc.stream._stream import Pipe as Pipe
from streamsrc.stream._stream import Preview as Preview
from streamsrc.stream._stream import Stream as Stream

__all__ = ["CHUNK_SIZE", "ExitCase", "Pipe", "Preview", "Stream"]
