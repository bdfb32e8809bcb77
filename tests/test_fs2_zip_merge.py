"""fs2's StreamZipSuite, StreamMergeSuite and StreamParJoinSuite properties, ported.

Each case cites the fs2 suite and test (``core/shared/src/test/scala/fs2/``);
properties compare with the list model; every case runs on asyncio and trio.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsrc import Stream

BACKENDS = ("asyncio", "trio")
backends = pytest.mark.parametrize("backend", BACKENDS)
prop = settings(max_examples=12, deadline=None)
ints = st.lists(st.integers(-50, 50), max_size=15)


def run(backend: str, s: Stream[Any]) -> list[Any]:
    return anyio.run(s.to_list, backend=backend)


@backends
def test_zip_issue_941_scope_closure(backend: str) -> None:
    # fs2 StreamZipSuite "issue #941 - scope closure issue"
    left = Stream.emits([1, 2, 3]).map(lambda x: x + 1).repeat()
    right = Stream.emits([4, 5, 6]).map(lambda x: x + 1).repeat()
    assert run(backend, left.zip(right).take(4)) == [(2, 5), (3, 6), (4, 7), (2, 5)]


@backends
def test_zip_and_zip_all_with_an_infinite_side(backend: str) -> None:
    # fs2 StreamZipSuite "zip left/right side infinite", "zipWith left/right side infinite",
    # "zipAll left/right side infinite", "zip both side infinite"
    ones = Stream.emit(1).repeat()
    s = Stream.emits(["A", "B", "C"])
    assert run(backend, ones.zip(s)) == [(1, "A"), (1, "B"), (1, "C")]
    assert run(backend, s.zip(ones)) == [("A", 1), ("B", 1), ("C", 1)]
    assert run(backend, ones.zip_with(s, lambda a, b: f"{a}{b}")) == ["1A", "1B", "1C"]
    assert run(backend, ones.zip_all(s, -1, "Z").take(5)) == [
        (1, "A"),
        (1, "B"),
        (1, "C"),
        (1, "Z"),
        (1, "Z"),
    ]
    assert run(backend, ones.zip(ones.map(lambda x: x + 1)).take(3)) == [(1, 2)] * 3


@backends
def test_zip_with_scopes_3(backend: str) -> None:
    # fs2 StreamZipSuite "zip with scopes" / "3": each side's resources open and close in step
    log: list[str] = []

    def lifecycle(tag: str) -> Stream[None]:
        async def acquire() -> None:
            log.append(f"acquired {tag}")

        async def release(_: None) -> None:
            log.append(f"released {tag}")

        return Stream.bracket(acquire, release)

    def s(tag: str) -> Stream[None]:
        return lifecycle(tag).flat_map(lambda _: lifecycle(f"{tag} - 1") + lifecycle(f"{tag} - 2"))

    anyio.run(s("a").zip(s("b")).drain, backend=backend)
    assert log == [
        "acquired a",
        "acquired a - 1",
        "acquired b",
        "acquired b - 1",
        "released a - 1",
        "acquired a - 2",
        "released b - 1",
        "acquired b - 2",
        "released a - 2",
        "released a",
        "released b - 2",
        "released b",
    ]


@prop
@given(xs=ints)
@backends
def test_zip_with_index(backend: str, xs: list[int]) -> None:
    # fs2 StreamZipSuite "zipWithIndex"
    assert run(backend, Stream.emits(xs, chunk_size=4).zip_with_index()) == [(x, i) for i, x in enumerate(xs)]


@prop
@given(xs=ints, ys=ints)
@backends
def test_merge_basic(backend: str, xs: list[int], ys: list[int]) -> None:
    # fs2 StreamMergeSuite "merge" / "basic": every element of both sides, each side in its order
    left = Stream.emits(xs, chunk_size=3).map(lambda x: ("l", x))
    right = Stream.emits(ys, chunk_size=2).map(lambda y: ("r", y))
    out = run(backend, left.merge(right))
    assert [x for side, x in out if side == "l"] == xs
    assert [y for side, y in out if side == "r"] == ys


@prop
@given(xs=ints)
@backends
def test_merge_identity_elements(backend: str, xs: list[int]) -> None:
    # fs2 StreamMergeSuite "identity elements" / "right identity", "left identity"
    s = Stream.emits(xs)
    nothing: Stream[int] = Stream.empty()
    assert run(backend, s.merge(nothing)) == xs
    assert run(backend, nothing.merge(s)) == xs


@prop
@given(xss=st.lists(ints, max_size=5), n=st.integers(1, 4))
@backends
def test_par_join_concurrency(backend: str, xss: list[list[int]], n: int) -> None:
    # fs2 StreamParJoinSuite "concurrency", "concurrent flattening": the same elements as flat_map,
    # each inner stream in its own order
    inner = [Stream.emits(xs, chunk_size=2).map(lambda x, i=i: (i, x)) for i, xs in enumerate(xss)]  # type: ignore[misc]
    out = run(backend, Stream.emits(inner).par_join(n))
    assert Counter(out) == Counter((i, x) for i, xs in enumerate(xss) for x in xs)
    for i, xs in enumerate(xss):
        assert [x for j, x in out if j == i] == xs


@prop
@given(xs=ints, ys=ints)
@backends
def test_par_join_merge_consistency(backend: str, xs: list[int], ys: list[int]) -> None:
    # fs2 StreamParJoinSuite "merge consistency": s1.merge(s2) and Stream(s1, s2).parJoin(2) agree
    s1, s2 = Stream.emits(xs), Stream.emits(ys)
    merged = run(backend, s1.merge(s2))
    joined = run(backend, Stream.emits([s1, s2]).par_join(2))
    assert Counter(merged) == Counter(joined) == Counter(xs + ys)
