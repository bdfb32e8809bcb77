"""The public API: exported names, docstrings, operators, re-running, typing marker."""

from __future__ import annotations

import importlib.resources
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import mypy.api
import pytest

import streamsrc
import streamsrc.stream
from streamsrc import EffectFailed, Pipe, RetryPolicy, Stream, StreamsrcError

pytestmark = pytest.mark.anyio

T = TypeVar("T")

# Methods whose docstring may skip the ``>>>`` example: thin variants of a documented one.
EXEMPT_FROM_EXAMPLE = {
    "__add__",
    "__or__",
    "count_result",
    "drain_result",
    "fold_result",
    "last_result",
    "to_list_result",
}


def public_stream_members() -> list[str]:
    names = [name for name in vars(Stream) if not name.startswith("_")]
    return sorted([*names, "__add__", "__or__"])


# ------------------------------------------------------------------ exported names


def test_streamsrc_all() -> None:
    assert sorted(streamsrc.__all__) == [
        "EffectFailed",
        "Pipe",
        "RetryPolicy",
        "Stream",
        "StreamsrcError",
    ]
    for name in streamsrc.__all__:
        assert getattr(streamsrc, name) is not None


def test_streamsrc_stream_all() -> None:
    assert sorted(streamsrc.stream.__all__) == ["CHUNK_SIZE", "ExitCase", "Pipe", "Preview", "Stream"]
    for name in streamsrc.stream.__all__:
        assert hasattr(streamsrc.stream, name)


def test_top_level_names_are_the_same_objects() -> None:
    assert streamsrc.Stream is streamsrc.stream.Stream
    assert streamsrc.Pipe is streamsrc.stream.Pipe
    assert issubclass(EffectFailed, StreamsrcError)
    assert issubclass(StreamsrcError, Exception)
    assert isinstance(streamsrc.stream.CHUNK_SIZE, int)
    assert streamsrc.stream.CHUNK_SIZE >= 1


def test_package_ships_py_typed() -> None:
    marker = importlib.resources.files("streamsrc") / "py.typed"
    assert marker.is_file()


# ------------------------------------------------------------------ docstrings


def test_the_docstring_check_sees_methods_and_staticmethods() -> None:
    members = set(public_stream_members())
    assert {"bracket", "emits", "range", "map", "flat_map", "par_eval_map", "to_list"} <= members
    assert {"to_list_result", "fold_result", "__add__", "__or__"} <= members
    assert not any(name.startswith("_") and not name.endswith("__") for name in members)


@pytest.mark.parametrize("name", public_stream_members())
def test_every_public_stream_method_is_documented_with_an_example(name: str) -> None:
    member = inspect.getattr_static(Stream, name)
    function: Callable[..., Any] = (
        member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
    )
    doc = inspect.getdoc(function)
    assert doc, f"Stream.{name} has no docstring"
    lines = doc.splitlines()
    summary = lines[0]
    assert summary, f"Stream.{name}: empty first line"
    assert summary.strip() == summary, f"Stream.{name}: summary has stray whitespace"
    assert summary.endswith("."), f"Stream.{name}: summary should be one sentence ending in '.'"
    assert len(lines) == 1 or lines[1] == "", f"Stream.{name}: summary is not a single line"
    if name not in EXEMPT_FROM_EXAMPLE:
        assert ">>>" in doc, f"Stream.{name} has no >>> example"


def test_stream_class_and_retry_policy_are_documented() -> None:
    for obj in (Stream, RetryPolicy, EffectFailed, StreamsrcError):
        assert inspect.getdoc(obj)
    assert ">>>" in (inspect.getdoc(Stream) or "")
    assert ">>>" in (inspect.getdoc(RetryPolicy) or "")


# ------------------------------------------------------------------ static types

TYPED_PRELUDE = """
from collections.abc import Sequence
from typing import assert_type

from returns.future import FutureResult
from returns.io import IOResult, IOSuccess
from returns.maybe import Maybe
from returns.result import Result, Success

from streamsrc import Stream


async def plain(x: int) -> str:
    return str(x)


async def result(x: int) -> Result[str, ValueError]:
    return Success(str(x))


async def io_result(x: int) -> IOResult[str, ValueError]:
    return IOSuccess(str(x))


def future_result(x: int) -> FutureResult[str, ValueError]:
    return FutureResult.from_value(str(x))


async def io_effect() -> IOResult[str, ValueError]:
    return IOSuccess("x")


ints = Stream.range(0, 3)
"""


DOCUMENTED_CALLS = """
assert_type(ints.map(str), Stream[str])
assert_type(ints.eval_map(plain), Stream[str])
assert_type(ints.eval_map(result), Stream[str])
assert_type(ints.eval_map(io_result), Stream[str])
assert_type(ints.eval_map(future_result), Stream[str])
assert_type(ints.par_eval_map(2, result), Stream[str])
assert_type(ints.par_eval_map(2, future_result), Stream[str])
assert_type(ints.attempt(), Stream[Result[int, Exception]])
assert_type(ints.zip(ints.map(str)), Stream[tuple[int, str]])
assert_type(ints.zip_with_index(), Stream[tuple[int, int]])
assert_type(ints.chunks(), Stream[list[int]])
assert_type(ints.chunk_n(2), Stream[list[int]])
assert_type(ints.group_adjacent_by(lambda x: x % 2), Stream[tuple[int, list[int]]])
assert_type(ints.map(Stream.emit).par_join(2), Stream[int])
assert_type(ints.flat_map(lambda x: Stream.emits([str(x)])), Stream[str])
assert_type(Stream.eval(future_result(1).map(len)), Stream[int])


async def main() -> None:
    assert_type(await ints.to_list(), list[int])
    assert_type(await ints.last(), Maybe[int])
    assert_type(await ints.to_list_result(), Result[list[int], Exception])
    assert_type(await ints.fold(0.0, lambda acc, x: acc + x), float)
"""

# At runtime these streams emit ``str`` elements (IOResult is unwrapped like Result,
# see test_stream_effects), so their static types must say so; and ``unchunks``,
# documented as the inverse of ``chunks``, must accept what ``chunks`` gives.
RUNTIME_AGREEMENT = """
assert_type(ints.chunks().unchunks(), Stream[int])
assert_type(Stream.emits([[1, 2], [], [3]]).unchunks(), Stream[int])
assert_type(ints.par_eval_map(2, io_result), Stream[str])
assert_type(ints.par_eval_map_unordered(2, io_result), Stream[str])
assert_type(Stream.eval(io_effect), Stream[str])
"""


@pytest.fixture(scope="module")
def mypy_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Type-check each snippet (after the prelude) with mypy --strict, in one run.

    Returns, per snippet, what mypy reports about that snippet ('' if nothing).
    """
    root = tmp_path_factory.mktemp("typing")
    repo = Path(streamsrc.__file__).resolve().parents[1]
    config = root / "mypy.ini"
    config.write_text(f"[mypy]\nmypy_path = {repo}\n")
    snippets = {"documented": DOCUMENTED_CALLS, "runtime_agreement": RUNTIME_AGREEMENT}
    paths = {name: root / f"{name}.py" for name in snippets}
    for name, code in snippets.items():
        paths[name].write_text(TYPED_PRELUDE + code)
    args = ["--strict", "--config-file", str(config), "--cache-dir", str(root / "cache")]
    report, errors, _ = mypy.api.run([*args, *map(str, paths.values())])
    assert not errors, errors
    # Only what mypy says about the snippets: the library's own files are checked elsewhere.
    lines = str(report).splitlines()
    return {
        name: "\n".join(line for line in lines if line.startswith(str(path))) for name, path in paths.items()
    }


def test_static_types_of_documented_calls(mypy_reports: dict[str, str]) -> None:
    assert mypy_reports["documented"] == ""


def test_static_types_agree_with_runtime_for_unchunks_and_io_results(
    mypy_reports: dict[str, str],
) -> None:
    assert mypy_reports["runtime_agreement"] == ""


# ------------------------------------------------------------------ operators


def evens(s: Stream[int]) -> Stream[int]:
    return s.filter(lambda x: x % 2 == 0)


def tens(s: Stream[int]) -> Stream[str]:
    return s.map(lambda x: f"{x}0")


async def test_pipe_operator_is_through() -> None:
    s = Stream.range(0, 7)
    expected = [f"{x}0" for x in range(7) if x % 2 == 0]
    assert await (s | evens | tens).to_list() == expected
    assert await s.through(evens).through(tens).to_list() == expected
    assert await tens(evens(s)).to_list() == expected
    pipe: Pipe[int, int] = evens
    assert await (s | pipe).to_list() == [0, 2, 4, 6]


async def test_plus_operator_is_append() -> None:
    a, b = Stream.emits([1, 2]), Stream.emits([3])
    assert await (a + b).to_list() == [1, 2, 3]
    assert await a.append(b).to_list() == [1, 2, 3]
    assert await (b + a + b).to_list() == [3, 1, 2, 3]


async def test_append_thunk_is_built_lazily_on_every_run() -> None:
    built: list[int] = []

    def later() -> Stream[int]:
        built.append(1)
        return Stream.emit(9)

    s = Stream.emits([1, 2]).append(later)
    assert built == []
    assert await s.take(2).to_list() == [1, 2]
    assert built == [], "the thunk must not be built before it is reached"
    assert await s.to_list() == [1, 2, 9]
    assert await s.to_list() == [1, 2, 9]
    assert built == [1, 1]


# ------------------------------------------------------------------ laziness and re-running


async def test_building_a_stream_does_no_work() -> None:
    calls: list[int] = []

    async def effect(x: int) -> int:
        calls.append(x)
        return x

    s = Stream.range(0, 3).eval_map(effect).map(lambda x: x + 1).filter(bool)
    assert calls == []
    assert await s.to_list() == [1, 2, 3]
    assert calls == [0, 1, 2]


async def test_a_stream_is_rerunnable() -> None:
    s = Stream.range(0, 5).map(lambda x: x * x).scan(0, lambda a, x: a + x)
    first = await s.to_list()
    assert first == [0, 0, 1, 5, 14, 30]
    assert await s.to_list() == first
    assert await s.count() == len(first)
    assert await s.fold(0, max) == max(first)


async def test_emits_copies_its_input() -> None:
    xs = [1, 2, 3]
    s = Stream.emits(xs)
    xs.append(4)
    assert await s.to_list() == [1, 2, 3]


async def test_open_iterates_element_by_element() -> None:
    async with Stream.range(0, 10, chunk_size=4).open() as it:
        first = [await anext(it) for _ in range(3)]
        rest = [x async for x in it]
    assert first == [0, 1, 2]
    assert rest == list(range(3, 10))


async def collect_via_open(s: Stream[T], into: list[T]) -> None:
    async with s.open() as it:
        async for x in it:
            into.append(x)


async def test_open_raises_the_stream_error_unwrapped() -> None:
    got: list[int] = []
    with pytest.raises(KeyError):
        await collect_via_open(Stream.range(0, 2) + Stream.raise_error(KeyError("k")), got)
    assert got == [0, 1]


async def test_handle_error_with_recovers_with_the_handlers_stream() -> None:
    seen: list[Exception] = []

    def handler(exc: Exception) -> Stream[int]:
        seen.append(exc)
        return Stream.emits([-1, -2])

    error = KeyError("k")
    s = (Stream.range(0, 2) + Stream.raise_error(error)).handle_error_with(handler)
    assert await s.to_list() == [0, 1, -1, -2]
    assert seen == [error]
    assert await Stream.range(0, 2).handle_error_with(handler).to_list() == [0, 1]
    assert len(seen) == 1


async def test_unfold_chunk_eval_fetches_pages_only_on_demand() -> None:
    fetched: list[int] = []

    async def page(offset: int) -> tuple[list[int], int] | None:
        fetched.append(offset)
        return (list(range(offset, offset + 3)), offset + 3) if offset < 30 else None

    s = Stream.unfold_chunk_eval(0, page)
    assert await s.take(4).to_list() == [0, 1, 2, 3]
    assert fetched == [0, 3]
    assert await s.to_list() == list(range(30))


async def test_repeat_eval_and_fixed_delay_are_endless_until_taken() -> None:
    n = iter(range(100))

    async def tick() -> int:
        return next(n)

    assert await Stream.repeat_eval(tick).take(4).to_list() == [0, 1, 2, 3]
    with anyio.fail_after(10):
        assert await Stream.fixed_delay(0.001).take(3).to_list() == [None, None, None]


# ------------------------------------------------------------------ argument checks


@pytest.mark.parametrize(
    "build",
    [
        lambda: Stream.emits([1], chunk_size=0),
        lambda: Stream.range(0, 5, chunk_size=0),
        lambda: Stream.range(0, 5, step=0),
        lambda: Stream.range(0, 5).chunk_n(0),
        lambda: Stream.range(0, 5).par_eval_map(0, anyio.sleep),
        lambda: Stream.range(0, 5).par_eval_map_unordered(0, anyio.sleep),
        lambda: Stream.emit(Stream.emit(1)).par_join(0),
        lambda: Stream.range(0, 5).buffer(0),
        lambda: Stream.range(0, 5).group_within(0, 1.0),
        lambda: Stream.range(0, 5).group_within(2, 0),
    ],
    ids=[
        "emits-chunk_size",
        "range-chunk_size",
        "range-step",
        "chunk_n",
        "par_eval_map",
        "par_eval_map_unordered",
        "par_join",
        "buffer",
        "group_within-n",
        "group_within-seconds",
    ],
)
def test_invalid_arguments_fail_when_the_stream_is_built(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each message differs; the type is the API
        build()
