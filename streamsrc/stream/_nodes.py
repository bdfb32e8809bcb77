"""What a ``Stream`` is made of: a small tree of nodes, and the loop that runs it in constant stack.

Most stages are *leaves*: a pull (an async generator function, see ``_core``)
built over the pull of the stage before. Four kinds of node are kept apart,
because they nest without bound in ordinary programs (a stream that appends
itself, a chain of ``flat_map``, error handlers around error handlers):

* ``Chunked(up, f)``: a stateless function on each chunk (``map``,
  ``filter``, ``collect``, ``map_chunks``). A run of them is fused into one
  loop over the functions, so a chain of 1,000 ``map`` costs one stage.
* ``Append(left, right)``: ``left``'s chunks, then those of the node
  ``right()`` builds.
* ``Bind(up, f)``: for each element ``x`` of ``up``, the chunks of ``f(x)``
  (``flat_map``).
* ``Handle(up, h)``: ``up``'s chunks; if it fails with ``e``, those of ``h(e)``.

A tree with only leaves and ``Chunked`` nodes compiles to plain nested
generators (the fast path for the common pipeline). Any other tree runs in
:func:`interpret`: one async generator that keeps the continuation as a
linked list of frames on the heap (a trampoline), so nesting depth costs
memory, never Python stack, and each chunk moves in a bounded number of
steps. Frames:

* a leaf frame holds a running pull (or a list of chunks);
* ``_Map`` transforms chunks on their way down (its ``out``);
* ``_Then`` is what to do when the frames above it finish (``right()``);
* ``_Bind`` takes chunks from its upstream as elements, suspends the
  upstream's top frame while the inner stream of each element runs, and
  resumes it after;
* ``_Catch`` is where an error stops (``h(e)`` takes its place).

Every frame has ``down`` (where control goes when the frames above finish
or fail) and ``out`` (where chunks go: the next frame that transforms them,
so pass-through frames cost nothing per chunk). Closing walks the frames
innermost first, with an explicit work list, so finalizers run exactly once
and in order however deep the tree is.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel

from streamsrc.stream._core import DRIVER, Driver, Pull, Run, aclosing, close_because, combine


class Node:
    """A stream's description: see the module docstring."""

    __slots__ = ()


class Leaf(Node):
    """A pull; ``scoped`` when it runs a concurrent stage that may stop what runs downstream of it."""

    __slots__ = ("pull", "scoped")

    def __init__(self, pull: Pull[Any], scoped: bool = False) -> None:
        self.pull = pull
        self.scoped = scoped


def is_scoped(node: Node) -> bool:
    """Whether running ``node`` runs a scoped leaf where a stage built over it would pull it."""
    while True:
        kind = type(node)
        if kind is Leaf:
            return node.scoped  # type: ignore[attr-defined, no-any-return]
        if kind is Chunks or kind is Fail:
            return False
        node = node.left if kind is Append else node.up  # type: ignore[attr-defined]


class Chunks(Node):
    """Constant chunks (``emit``, ``emits``, ``empty``): run without a generator."""

    __slots__ = ("chunks",)

    def __init__(self, chunks: list[list[Any]]) -> None:
        self.chunks = chunks


class Fail(Node):
    """A stream that fails with ``error`` (``raise_error``): the interpreter unwinds without raising,
    so an error handed from handler to handler does not grow its traceback at every level."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Chunked(Node):
    __slots__ = ("f", "up")

    def __init__(self, up: Node, f: Callable[[list[Any]], list[Any]]) -> None:
        self.up = up
        self.f = f


class Append(Node):
    __slots__ = ("left", "right")

    def __init__(self, left: Node, right: Callable[[], Node]) -> None:
        self.left = left
        self.right = right


class Bind(Node):
    __slots__ = ("f", "up")

    def __init__(self, up: Node, f: Callable[[Any], Node]) -> None:
        self.up = up
        self.f = f


class Handle(Node):
    __slots__ = ("h", "up")

    def __init__(self, up: Node, h: Callable[[Exception], Node]) -> None:
        self.up = up
        self.h = h


# ------------------------------------------------------------------ compiling


def compile_node(node: Node) -> Pull[Any]:
    """The pull that runs ``node``: plain generators when possible, else :func:`interpret`."""
    kind = type(node)
    if kind is Leaf:
        return node.pull  # type: ignore[attr-defined, no-any-return]
    if kind is Chunks:
        return _chunks_pull(node.chunks)  # type: ignore[attr-defined]
    if kind is Fail:
        return _fail_pull(node.error)  # type: ignore[attr-defined]
    if kind is Chunked:
        fs: list[Callable[[list[Any]], list[Any]]] = []
        while type(node) is Chunked:
            fs.append(node.f)
            node = node.up
        if type(node) is Leaf or type(node) is Chunks:
            fs.reverse()
            return _fused(compile_node(node), fs)
        return _interpreted(Chunked(node, _composed(fs[::-1])))
    return _interpreted(node)


def _composed(fs: list[Callable[[list[Any]], list[Any]]]) -> Callable[[list[Any]], list[Any]]:
    if len(fs) == 1:
        return fs[0]

    def f(chunk: list[Any]) -> list[Any]:
        for g in fs:
            chunk = g(chunk)
            if not chunk:
                break
        return chunk

    return f


def _chunks_pull(chunks: list[list[Any]]) -> Pull[Any]:
    async def pull(run: Run) -> AsyncGenerator[list[Any], None]:
        for chunk in chunks:
            yield chunk[:]

    return pull


def _fail_pull(error: BaseException) -> Pull[Any]:
    async def pull(run: Run) -> AsyncGenerator[list[Any], None]:
        raise error
        yield  # an async generator that fails when first pulled

    return pull


def _fused(pull: Pull[Any], fs: list[Callable[[list[Any]], list[Any]]]) -> Pull[Any]:
    if len(fs) == 1:
        f = fs[0]

        async def one(run: Run) -> AsyncGenerator[list[Any], None]:
            async with aclosing(pull(run)) as up:
                async for chunk in up:
                    if out := f(chunk):
                        yield out

        return one
    functions = tuple(fs)

    async def many(run: Run) -> AsyncGenerator[list[Any], None]:
        async with aclosing(pull(run)) as up:
            async for chunk in up:
                for g in functions:
                    chunk = g(chunk)
                    if not chunk:
                        break
                else:
                    yield chunk

    return many


def _interpreted(node: Node) -> Pull[Any]:
    def pull(run: Run) -> AsyncGenerator[list[Any], None]:
        return interpret(node, run)

    return pull


# ------------------------------------------------------------------ the interpreter


Drivers = tuple[Driver, ...]


class _Frame:
    __slots__ = ("down", "drivers", "out")

    def __init__(self, down: _Frame | None, out: _Frame | None, drivers: Drivers = ()) -> None:
        self.down = down
        self.out = out
        self.drivers = drivers  # the scoped leaves whose interruption ends what runs here


class _Leaf(_Frame):
    __slots__ = ("fail", "gen", "it")

    def __init__(
        self,
        down: _Frame | None,
        out: _Frame | None,
        drivers: Drivers,
        gen: AsyncGenerator[list[Any], None] | None,
        it: Iterator[list[Any]] | None,
        fail: BaseException | None = None,
    ) -> None:
        super().__init__(down, out, drivers)
        self.gen = gen
        self.it = it
        self.fail = fail


class _Map(_Frame):
    __slots__ = ("f",)

    def __init__(self, out: _Frame | None, f: Callable[[list[Any]], list[Any]]) -> None:
        super().__init__(None, out)
        self.f = f


class _Then(_Frame):
    __slots__ = ("right",)

    def __init__(
        self, down: _Frame | None, out: _Frame | None, drivers: Drivers, right: Callable[[], Node]
    ) -> None:
        super().__init__(down, out, drivers)
        self.right = right


class _Catch(_Frame):
    __slots__ = ("h",)

    def __init__(
        self, down: _Frame | None, out: _Frame | None, drivers: Drivers, h: Callable[[Exception], Node]
    ) -> None:
        super().__init__(down, out, drivers)
        self.h = h


class _Bind(_Frame):
    __slots__ = ("f", "index", "pending", "up")

    def __init__(self, down: _Frame | None, out: _Frame | None, f: Callable[[Any], Node]) -> None:
        super().__init__(down, out)
        self.f = f
        self.up: _Leaf | None = None  # the upstream's top frame, while an inner stream runs
        self.pending: list[Any] = []
        self.index = 0


class _Failed(Exception):
    """Internal: ``error`` happened where control was at ``frame`` (unwinding starts there)."""

    def __init__(self, error: Exception, frame: _Frame | None) -> None:
        self.error = error
        self.frame = frame


def _enter(node: Node, down: _Frame | None, out: _Frame | None, run: Run, drivers: Drivers) -> _Leaf:
    """Push the frames of ``node`` (above ``down``, emitting to ``out``); return the top leaf frame."""
    while True:
        kind = type(node)
        if kind is Leaf:
            if not node.scoped:  # type: ignore[attr-defined]
                return _Leaf(down, out, drivers, node.pull(run), None)  # type: ignore[attr-defined]
            # A scoped leaf gets a driver of its own: stopping it ends this leaf and what
            # runs on its elements downstream (inner streams of a flat_map on it, say).
            driver = Driver(DRIVER.get(), active=False)
            leaf = _Leaf(down, out, (*drivers, driver), node.pull(run), None)  # type: ignore[attr-defined]
            driver.frame = leaf
            return leaf
        if kind is Chunks:
            return _Leaf(down, out, drivers, None, iter(node.chunks))  # type: ignore[attr-defined]
        if kind is Fail:
            return _Leaf(down, out, drivers, None, None, node.error)  # type: ignore[attr-defined]
        if kind is Chunked:
            out = _Map(out, node.f)  # type: ignore[attr-defined]
            node = node.up  # type: ignore[attr-defined]
        elif kind is Append:
            down = _Then(down, out, drivers, node.right)  # type: ignore[attr-defined]
            node = node.left  # type: ignore[attr-defined]
        elif kind is Bind:
            down = out = _Bind(down, out, node.f)  # type: ignore[attr-defined]
            node = node.up  # type: ignore[attr-defined]
        elif kind is Handle:
            down = _Catch(down, out, drivers, node.h)  # type: ignore[attr-defined]
            node = node.up  # type: ignore[attr-defined]
        else:
            raise TypeError(f"not a stream node: {node!r}")


def _complete(frame: _Frame | None, run: Run) -> _Leaf | None:
    """Where control goes when the frames above ``frame`` have finished: the next leaf, or ``None``."""
    while frame is not None:
        kind = type(frame)
        if kind is _Then:
            try:
                node = frame.right()  # type: ignore[attr-defined]
            except Exception as exc:
                raise _Failed(exc, frame.down) from None
            return _enter(node, frame.down, frame.out, run, frame.drivers)
        if kind is _Bind:
            bind: _Bind = frame  # type: ignore[assignment]
            if bind.up is not None:  # an inner stream finished
                if bind.index < len(bind.pending):
                    x = bind.pending[bind.index]
                    bind.index += 1
                    try:
                        node = bind.f(x)
                    except Exception as exc:
                        raise _Failed(exc, bind) from None
                    return _enter(node, bind, bind.out, run, bind.drivers)
                up, bind.up, bind.pending = bind.up, None, []
                return up
        frame = frame.down
    return None


async def _close(top: _Frame | None, stop: _Frame | None, why: BaseException | None) -> list[BaseException]:
    """Close every running pull from ``top`` down to ``stop``, innermost first; return their errors.

    ``why`` is the error (or cancellation) that stops them, if any: brackets see it as their exit case.
    """
    errors: list[BaseException] = []
    work: list[tuple[_Frame | None, _Frame | None]] = [(top, stop)]
    with anyio.CancelScope(shield=True):
        while work:
            frame, end = work.pop()
            while frame is not None and frame is not end:
                kind = type(frame)
                if kind is _Leaf:
                    gen = frame.gen  # type: ignore[attr-defined]
                    frame.gen = frame.it = None  # type: ignore[attr-defined]
                    if gen is not None:
                        try:
                            await close_because(gen, why)
                        except BaseException as exc:
                            errors.append(exc)
                elif kind is _Bind and frame.up is not None:  # type: ignore[attr-defined]
                    bind: _Bind = frame  # type: ignore[assignment]
                    up, bind.up, bind.pending = bind.up, None, []
                    work.append((bind.down, end))
                    work.append((up, bind))  # the suspended upstream closes first: it is newer
                    break
                frame = frame.down
    return errors


async def _unwind(error: Exception, frame: _Frame | None, run: Run) -> _Leaf:
    """Close the frames from ``frame`` down to the nearest handler; return its recovery's leaf."""
    while frame is not None:
        kind = type(frame)
        if kind is _Catch:
            try:
                node = frame.h(error)  # type: ignore[attr-defined]
            except Exception as exc:
                error = exc
            else:
                return _enter(node, frame.down, frame.out, run, frame.drivers)
        elif kind is _Bind and frame.up is not None:  # type: ignore[attr-defined]
            bind: _Bind = frame  # type: ignore[assignment]
            up, bind.up, bind.pending = bind.up, None, []
            if closing := await _close(up, bind, error):
                error = combine([error, *closing])  # type: ignore[assignment]
                if not isinstance(error, Exception):
                    raise error
        frame = frame.down
    raise error


async def _scoped_anext(leaf: _Leaf) -> tuple[list[Any], Driver | None]:
    """Pull ``leaf`` under a cancel scope every driver in force shares; say which driver stopped it."""
    drivers = leaf.drivers
    for driver in drivers:
        if driver.stopped:  # stopped while this leaf was not pulling, and not passed on
            return [], driver
    scope = anyio.CancelScope()
    for driver in drivers:
        driver.scope = scope
        driver.active = True
    token = DRIVER.set(drivers[-1])
    try:
        with scope:
            return await leaf.gen.__anext__(), None  # type: ignore[union-attr]
    finally:
        for driver in drivers:
            driver.active = False
        DRIVER.reset(token)
    # Only our own cancellation gets here: the outermost driver stopped decides where it ends.
    return [], next(d for d in drivers if d.stopped)


async def _stop(leaf: _Leaf, driver: Driver, run: Run) -> _Leaf | None:
    """``driver`` was stopped: close everything from ``leaf`` down to its leaf; go on after it (or fail)."""
    top: _Leaf = driver.frame  # type: ignore[assignment]
    error = driver.error
    driver.error, driver.interrupted = None, False
    errors: list[BaseException] = []
    if top is not leaf:
        # ``top`` is suspended in the bind that runs inner streams of its elements: close those first.
        bind = leaf.down
        while bind is not None and not (type(bind) is _Bind and bind.up is top):
            bind = bind.down
        errors += await _close(leaf, bind, error)
        if bind is not None:
            bind.up, bind.pending = None, []
    errors += await _close(top, top.down, error)
    if error is not None or errors:
        failure = combine([e for e in (error, *errors) if e is not None])
        if not isinstance(failure, Exception):
            raise failure
        return await _unwind(failure, top.down, run)
    try:
        return _complete(top.down, run)
    except _Failed as failed:
        return await _unwind(failed.error, failed.frame, run)


async def interpret(node: Node, run: Run) -> AsyncGenerator[list[Any], None]:
    """Run ``node``'s tree: see the module docstring."""
    cur: _Leaf | None = _enter(node, None, None, run, ())
    spins = 0  # steps taken without awaiting (constant chunks, failures)
    try:
        while cur is not None:
            leaf = cur
            if leaf.gen is None:
                spins += 1
                if spins >= 1024:
                    # ``Stream.empty().repeat()`` and its kin never await: let the loop breathe, and
                    # let a cancellation in.
                    spins = 0
                    await anyio.lowlevel.checkpoint()
            if leaf.fail is not None:
                error, leaf.fail = leaf.fail, None
                if not isinstance(error, Exception):
                    raise error
                cur = await _unwind(error, leaf.down, run)
                continue
            stopped: Driver | None = None
            try:
                if leaf.gen is None:
                    chunk = next(leaf.it)  # type: ignore[arg-type]
                    chunk = chunk[:]
                elif not leaf.drivers:
                    chunk = await leaf.gen.__anext__()
                else:
                    chunk, stopped = await _scoped_anext(leaf)
            except (StopAsyncIteration, StopIteration):
                leaf.gen = leaf.it = None
                try:
                    cur = _complete(leaf.down, run)
                except _Failed as failed:
                    cur = await _unwind(failed.error, failed.frame, run)
                continue
            except Exception as exc:
                leaf.gen = leaf.it = None
                cur = await _unwind(exc, leaf.down, run)
                continue
            if stopped is not None:
                cur = await _stop(leaf, stopped, run)
                continue
            target = leaf.out
            try:
                while target is not None:
                    if type(target) is _Map:
                        chunk = target.f(chunk)
                        if not chunk:
                            break
                        target = target.out
                    else:  # a _Bind taking this chunk as elements
                        bind: _Bind = target  # type: ignore[assignment]
                        inner = bind.f(chunk[0])
                        bind.up, bind.pending, bind.index, bind.drivers = leaf, chunk, 1, leaf.drivers
                        cur = _enter(inner, bind, bind.out, run, leaf.drivers)
                        break
                else:
                    yield chunk
            except Exception as exc:
                # A chunk function failed while ``leaf`` is still running: close it first.
                closing = await _close(leaf, leaf.down, exc)
                error = combine([exc, *closing]) if closing else exc
                if not isinstance(error, Exception):
                    raise error from None
                cur = await _unwind(error, leaf.down, run)
    except BaseException as exc:
        if cur is not None and (errors := await _close(cur, None, exc)):
            if isinstance(exc, GeneratorExit):
                raise combine(errors) from None
            raise combine([exc, *errors]) from None
        raise
