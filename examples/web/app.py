"""The account example over HTTP: a Starlette (ASGI) app on any store URL.

``create_app(url)`` builds the app; its lifespan opens the store and closes it
at shutdown. Every entity is a resource whose ``ETag`` is its seq (``"3"``),
and every change to an existing entity needs ``If-Match`` with that ETag: the
append then expects exactly that seq, so of two clients that read seq 3 and
both write, one gets ``200`` and the other ``412 Precondition Failed`` —
the store's compare-and-set, seen through HTTP. See ``README.md`` beside this
file for the routes and how to run it.

The web layer only translates: JSON and headers in, a call to the example's
:class:`~streamsrc.examples.accounts.Accounts` (or its repositories, for
reads), and the ``Result`` it returns out as a status code. The domain rules
stay in ``streamsrc.examples.accounts``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from returns.result import Failure, Result, Success
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from streamsrc.codec import to_json_value
from streamsrc.entity import CommandError, Repository, Saved
from streamsrc.errors import (
    Conflict,
    IncompatibleSchema,
    InvalidEvent,
    Rejection,
    StoreError,
    StoreUnavailable,
    WrongExpectedVersion,
)
from streamsrc.examples.accounts import Accounts, AuditEntry, codec
from streamsrc.store import open_store

__all__ = ["DEFAULT_URL", "create_app"]

DEFAULT_URL = "sqlite:///accounts-web.db"
"""The store ``create_app()`` opens when given no URL and ``$STREAMSRC_URL`` is unset."""

MAX_BODY = 64 * 1024
"""The largest request body accepted (``413`` above it)."""

ACTOR_HEADER = "X-Actor"
"""Who makes a change, for the audit trail (a stand-in for authentication; default ``anonymous``)."""

log = logging.getLogger(__name__)

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_SEQ = re.compile(r"[0-9]{1,18}")
_ETAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e]*)"\s*(?:,|$)')

# ------------------------------------------------------------------------------------------- errors


class Problem(Exception):
    """An answer other than success: a status and a JSON body with one-line ``error`` (and more)."""

    def __init__(self, status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, Any] = {"error": _one_line(error), **extra}


def _one_line(text: str) -> str:
    return " ".join(text.split())


async def _problem_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return JSONResponse(exc.body, status_code=exc.status)


async def _store_error_response(request: Request, exc: Exception) -> Response:
    """A store failure raised by a read (a ``StoreError``): ``503``, one line, never a traceback."""
    assert isinstance(exc, StoreError)
    problem = _store_problem(exc)
    log.warning("%s %s: %s", request.method, request.url.path, problem.body["error"])
    return JSONResponse(problem.body, status_code=problem.status)


def _store_problem(error: StoreError) -> Problem:
    if isinstance(error, StoreUnavailable | IncompatibleSchema):
        return Problem(503, f"store unavailable: {error}")
    if isinstance(error, InvalidEvent):  # e.g. a field too large to store
        return Problem(422, f"cannot store this: {error}")
    return Problem(500, f"store error: {error}")


# ------------------------------------------------------------------------------------------- resources


@dataclass(frozen=True)
class _Kind:
    """One kind of entity served as a resource: ``/users/{key}``, ``/groups/{key}``."""

    name: str
    route: str
    repository: Callable[[Accounts], Repository[str, Any, Any, Any]]


USERS = _Kind("user", "user", lambda accounts: accounts.users)
GROUPS = _Kind("group", "group", lambda accounts: accounts.groups)


def _json(value: Any) -> Any:
    """A state or event as JSON: dataclasses as objects, sets as sorted lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, set | frozenset):
        return sorted(_json(v) for v in value)
    return to_json_value(value)


def _etag(seq: int) -> str:
    return f'"{seq}"'


def _entity_tags(header: str) -> list[tuple[bool, str]] | None:
    """The ``(weak, tag)`` pairs of an ``If-Match``/``If-None-Match`` list; ``None`` if malformed."""
    tags: list[tuple[bool, str]] = []
    position = 0
    while position < len(header) and not header[position:].isspace():
        match = _ETAG.match(header, position)
        if match is None:
            return None
        tags.append((match.group(1) is not None, match.group(2)))
        position = match.end()
    return tags or None


class _AtSeq(Repository[str, Any, Any, Any]):
    """A repository whose commands to the entity ``key`` act only if it is at ``seq``.

    ``Accounts`` takes an expected seq on ``update`` only; this carries an
    ``If-Match`` into its other commands (``delete``, ``revert``,
    ``add_member``, ...) without repeating their domain logic here: each of
    them sends exactly one command to the entity it changes.
    """

    def __init__(self, repository: Repository[str, Any, Any, Any], key: str, seq: int) -> None:
        super().__init__(repository.store, repository.entity)
        self._key = key
        self._seq = seq

    async def handle(
        self,
        key: str,
        command: Any,
        *,
        if_seq: int | None = None,
        metadata: dict[str, Any] | None = None,
        command_id: str | uuid.UUID | None = None,
    ) -> Result[Saved[Any, Any], CommandError]:
        if key == self._key and if_seq is None:
            if_seq = self._seq
        return await super().handle(key, command, if_seq=if_seq, metadata=metadata, command_id=command_id)


def _at_seq(accounts: Accounts, kind: _Kind, key: str, seq: int | None) -> Accounts:
    """``accounts`` with every command to entity ``key`` of ``kind`` conditional on ``seq``."""
    if seq is None:
        return accounts
    guarded = copy.copy(accounts)
    if kind is USERS:
        guarded.users = _AtSeq(accounts.users, key, seq)
    else:
        guarded.groups = _AtSeq(accounts.groups, key, seq)
    return guarded


# ------------------------------------------------------------------------------------------- the app


class _Service:
    """The routes of one app, around the ``Accounts`` its lifespan opened."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._accounts: Accounts | None = None
        self._down = "the store is not open"

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Open the store for the app's lifetime; if it cannot be opened, answer ``503`` meanwhile."""
        async with AsyncExitStack() as stack:
            try:
                store = await stack.enter_async_context(open_store(self.url))
            except (StoreUnavailable, IncompatibleSchema) as exc:
                self._down = _one_line(str(exc))
                log.error("store unavailable, answering 503 until restarted: %s", self._down)
            else:
                self._accounts = Accounts(store)
            try:
                yield
            finally:
                self._accounts = None
                self._down = "the app is shutting down"

    @property
    def accounts(self) -> Accounts:
        if self._accounts is None:
            raise StoreUnavailable(self._down)
        return self._accounts

    # -- reads

    async def health(self, request: Request) -> Response:
        """``200`` when the store answers a read, ``503`` (one line) when it does not: for load balancers."""
        head = await self.accounts.users.store.head()
        return JSONResponse({"store": "ok", "head": head})

    async def get_user(self, request: Request) -> Response:
        return await self._get(request, USERS)

    async def get_group(self, request: Request) -> Response:
        return await self._get(request, GROUPS)

    async def _get(self, request: Request, kind: _Kind) -> Response:
        """The entity now, or at ``?at=SEQ`` or ``?at=ISO-TIME``; ``ETag`` = the seq it is at."""
        key = request.path_params["key"]
        repository = kind.repository(self.accounts)
        at = request.query_params.get("at")
        if at is None:
            loaded = await repository.load(key)
        else:
            seq, time = _parse_at(at)
            loaded = await repository.state_at(key, seq=seq, time=time)
        if loaded.seq == 0:
            raise Problem(404, f"no {kind.name} {key!r}" + ("" if at is None else f" at {at}"))
        etag = _etag(loaded.seq)
        if _none_match(request, loaded.seq):
            return Response(status_code=304, headers={"ETag": etag})
        return JSONResponse(_json(loaded.state) | {"seq": loaded.seq}, headers={"ETag": etag})

    async def user_history(self, request: Request) -> Response:
        """The audit trail: every change with its seq, time, author, event and the state after it."""
        key = request.path_params["key"]

        def entry(pair: tuple[AuditEntry, int]) -> dict[str, Any]:
            audit, index = pair
            return {
                "seq": index + 1,  # seqs are gap-free from 1
                "time": audit.time.isoformat(),
                "by": audit.by,
                "type": codec.type_of(audit.event),
                "event": _json(audit.event),
                "state": _json(audit.state),
            }

        entries = await self.accounts.audit(key).zip_with_index().map(entry).to_list()
        if not entries:
            raise Problem(404, f"no user {key!r}")
        return JSONResponse(entries, headers={"ETag": _etag(len(entries))})

    # -- commands that create

    async def register(self, request: Request) -> Response:
        body = await _body(
            request, required={"username": str, "name": str, "email": str}, optional={"id": str}
        )
        key = _new_id(body)
        result = await self.accounts.register(
            key, body["username"], body["name"], body["email"], by=_actor(request)
        )
        return _answer(request, USERS, key, result, created=True)

    async def create_group(self, request: Request) -> Response:
        body = await _body(request, required={"name": str, "owner": str}, optional={"id": str})
        key = _new_id(body)
        result = await self.accounts.create_group(key, body["name"], body["owner"], by=_actor(request))
        return _answer(request, GROUPS, key, result, created=True)

    # -- commands on an existing entity: If-Match required

    async def update_user(self, request: Request) -> Response:
        body = await _body(request, optional={"username": str, "name": str, "email": str})
        if not body:
            raise Problem(422, "nothing to change: give username, name and/or email")
        key = request.path_params["key"]
        seq = await self._precondition(request, USERS, key)
        result = await self.accounts.update(key, by=_actor(request), if_seq=seq, **body)
        return _answer(request, USERS, key, result)

    async def delete_user(self, request: Request) -> Response:
        key = request.path_params["key"]
        seq = await self._precondition(request, USERS, key)
        result = await _at_seq(self.accounts, USERS, key, seq).delete(key, by=_actor(request))
        return _answer(request, USERS, key, result)

    async def revert_user(self, request: Request) -> Response:
        body = await _body(request, required={"to": str})
        _, to = _parse_at(body["to"], seq_allowed=False)
        assert to is not None
        key = request.path_params["key"]
        seq = await self._precondition(request, USERS, key)
        result = await _at_seq(self.accounts, USERS, key, seq).revert(key, to, by=_actor(request))
        return _answer(request, USERS, key, result)

    async def add_member(self, request: Request) -> Response:
        body = await _body(request, required={"user_id": str})
        key = request.path_params["key"]
        seq = await self._precondition(request, GROUPS, key)
        accounts = _at_seq(self.accounts, GROUPS, key, seq)
        result = await accounts.add_member(key, body["user_id"], by=_actor(request))
        return _answer(request, GROUPS, key, result)

    async def remove_member(self, request: Request) -> Response:
        key = request.path_params["key"]
        seq = await self._precondition(request, GROUPS, key)
        accounts = _at_seq(self.accounts, GROUPS, key, seq)
        result = await accounts.remove_member(key, request.path_params["user_id"], by=_actor(request))
        return _answer(request, GROUPS, key, result)

    async def _precondition(self, request: Request, kind: _Kind, key: str) -> int | None:
        """The seq ``If-Match`` names, checked against the entity's (``None`` for ``*``: any seq).

        Checked here first so that a stale request changes nothing anywhere
        (an update that renames would otherwise claim the new username, then
        release it); the command is then made conditional on the same seq,
        which the append enforces against a writer that comes in between.
        """
        header = request.headers.get("if-match")
        if header is None:
            raise Problem(
                428, f'If-Match is required: send the ETag of the {kind.name} you read, e.g. If-Match: "3"'
            )
        star = header.strip() == "*"
        tags = [] if star else _entity_tags(header)
        if tags is None:
            raise Problem(400, f'malformed If-Match {header!r}: expected an ETag such as "3", or *')
        repository = kind.repository(self.accounts)
        latest = await repository.store.latest(repository.entity.stream(key))
        current = latest.map(lambda event: event.seq).value_or(0)
        if current == 0:
            raise Problem(404, f"no {kind.name} {key!r}")
        if star:
            return None
        if str(current) not in {tag for weak, tag in tags if not weak}:  # If-Match compares strongly
            raise _moved(kind, key, current)
        return current


def _moved(kind: _Kind, key: str, current: int) -> Problem:
    return Problem(
        412,
        f"{kind.name} {key!r} has changed: it is at seq {current}; read it again and retry",
        seq=current,
        etag=_etag(current),
    )


def _answer(request: Request, kind: _Kind, key: str, result: Any, *, created: bool = False) -> Response:
    """A command's ``Result`` as a response: the entity with its new ``ETag``, or the problem."""
    match result:
        case Success(Saved() as saved):
            headers = {"ETag": _etag(saved.seq), "Location": str(request.url_for(kind.route, key=key))}
            body = _json(saved.state) | {"seq": saved.seq}
            return JSONResponse(body, status_code=201 if created else 200, headers=headers)
        case Failure(error):
            raise _command_problem(kind, key, error)
    raise TypeError(f"not a command result: {result!r}")


def _command_problem(kind: _Kind, key: str, error: CommandError) -> Problem:
    match error:
        case Rejection(reasons=reasons):
            return Problem(409, "rejected", reasons=list(reasons))
        case WrongExpectedVersion(actual=actual):
            return _moved(kind, key, actual)
        case Conflict():
            return Problem(409, "conflict", reasons=[str(error)])
        case StoreError():
            problem = _store_problem(error)
            log.warning("%s %r: %s", kind.name, key, problem.body["error"])
            return problem
    raise TypeError(f"not a command error: {error!r}")


def _none_match(request: Request, seq: int) -> bool:
    """Whether ``If-None-Match`` names this seq (weak comparison) or is ``*``: then ``304``."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(tag == str(seq) for _, tag in _entity_tags(header) or ())


def _parse_at(text: str, *, seq_allowed: bool = True) -> tuple[int | None, datetime | None]:
    """``?at=`` as a seq (digits) or a time (ISO 8601; UTC if it names no offset)."""
    if seq_allowed and _SEQ.fullmatch(text):
        return int(text), None
    try:
        time = datetime.fromisoformat(text)
    except ValueError:
        expected = "a seq or an ISO 8601 time" if seq_allowed else "an ISO 8601 time"
        raise Problem(422, f"{text!r} is not {expected} (e.g. 2026-01-31T12:00:00Z)") from None
    return None, time if time.tzinfo is not None else time.replace(tzinfo=UTC)


async def _body(
    request: Request, required: Mapping[str, type] | None = None, optional: Mapping[str, type] | None = None
) -> dict[str, Any]:
    """The JSON object of the request, with exactly these fields of these types (``422`` if not)."""
    required = required or {}
    optional = optional or {}
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise Problem(413, f"the body is over {MAX_BODY} bytes")
    try:
        value = json.loads(raw)
    except ValueError:
        raise Problem(422, "the body is not JSON") from None
    if not isinstance(value, dict):
        raise Problem(422, "the body must be a JSON object")
    reasons = [f"{name!r} is missing" for name in required if name not in value]
    for name, field_value in value.items():
        expected = required.get(name) or optional.get(name)
        if expected is None:
            reasons.append(f"unknown field {name!r}")
        elif not isinstance(field_value, expected):
            reasons.append(f"{name!r} must be a {'string' if expected is str else expected.__name__}")
    if reasons:
        raise Problem(422, "malformed body", reasons=reasons)
    return value


def _new_id(body: Mapping[str, Any]) -> str:
    """The id the body gives (checked), or a fresh one."""
    key = body.get("id")
    if key is None:
        return uuid.uuid4().hex
    if not _ID.fullmatch(key):
        raise Problem(422, "malformed body", reasons=[f"'id' must match {_ID.pattern}"])
    return str(key)


def _actor(request: Request) -> str:
    return request.headers.get(ACTOR_HEADER, "anonymous")


def create_app(url: str | None = None) -> Starlette:
    """The account example over HTTP on the store at ``url`` (opened by the app's lifespan).

    Without ``url``: ``$STREAMSRC_URL``, else :data:`DEFAULT_URL` (a SQLite
    file in the current directory), so that ``uvicorn --factory
    examples.web.app:create_app`` runs it.

    ====== ================================= ===================================================
    GET    /users/{id}[?at=SEQ|ISO-TIME]     the user (now or then); ``ETag`` = its seq
    GET    /users/{id}/history               the audit trail
    POST   /users                            register: ``{"username", "name", "email"[, "id"]}``
    PATCH  /users/{id}                       update: any of ``username``, ``name``, ``email``
    POST   /users/{id}/delete                close the account
    POST   /users/{id}/revert                ``{"to": ISO-TIME}``: back to the state then
    GET    /groups/{id}[?at=SEQ|ISO-TIME]    the group
    POST   /groups                           create: ``{"name", "owner"[, "id"]}``
    POST   /groups/{id}/members              add ``{"user_id"}``
    DELETE /groups/{id}/members/{user_id}    remove a member
    GET    /health                           ``200`` if the store answers, else ``503``
    ====== ================================= ===================================================

    Commands on an existing entity need ``If-Match: "<seq>"``.
    """
    service = _Service(url or os.environ.get("STREAMSRC_URL", DEFAULT_URL))
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        Problem: _problem_response,
        StoreError: _store_error_response,
    }
    return Starlette(
        routes=[
            Route("/health", service.health, methods=["GET"]),
            Route("/users", service.register, methods=["POST"]),
            Route("/users/{key}", service.get_user, methods=["GET"], name="user"),
            Route("/users/{key}", service.update_user, methods=["PATCH"]),
            Route("/users/{key}/history", service.user_history, methods=["GET"]),
            Route("/users/{key}/delete", service.delete_user, methods=["POST"]),
            Route("/users/{key}/revert", service.revert_user, methods=["POST"]),
            Route("/groups", service.create_group, methods=["POST"]),
            Route("/groups/{key}", service.get_group, methods=["GET"], name="group"),
            Route("/groups/{key}/members", service.add_member, methods=["POST"]),
            Route("/groups/{key}/members/{user_id}", service.remove_member, methods=["DELETE"]),
        ],
        exception_handlers=handlers,
        lifespan=service.lifespan,
    )
