"""Account management: users, unique usernames, groups, audit trail and revert.

Streams: ``user-<id>`` (one per user), ``username-<name>`` (one per
username: who holds it), ``group-<id>`` (one per group). Each is an
:class:`~streamsrc.entity.Entity` with a pure decider; :class:`Accounts`
puts them together against any store.

Why a stream per username: uniqueness across all users needs one place that
decides who holds a name. A single directory stream would serialise every
registration in the system; a claim stream per name puts the decision on the
store's compare-and-set for just that name. Two people registering ``ada`` at
once both try to start ``username-ada``; one append wins, the other is
retried, sees the claim and is rejected. Registering claims the name first,
then creates the user; if the second step is refused the claim is released.

>>> import anyio
>>> from streamsrc.store import open_store
>>> async def demo():
...     async with open_store("memory://") as store:
...         accounts = Accounts(store)
...         await accounts.register("u1", "ada", "Ada Lovelace", "ada@example.com", by="admin")
...         taken = await accounts.register("u2", "ada", "Ada Byron", "byron@example.com", by="admin")
...         return (await accounts.users.load("u1")).state.username, taken
>>> anyio.run(demo)
('ada', <Failure: username 'ada' is taken>)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from returns.result import Failure, Result, Success

from streamsrc.codec import Codec
from streamsrc.entity import Decider, Entity, EveryN, Repository, Saved, Step
from streamsrc.errors import Rejection, StoreError
from streamsrc.store import EventStore
from streamsrc.stream import Stream

codec = Codec()

# ---------------------------------------------------------------------------- events


@codec.register()
@dataclass(frozen=True)
class UserRegistered:
    """A user signed up.

    >>> codec.encode(UserRegistered("u1", "ada", "Ada Lovelace", "ada@example.com")).data
    {'user_id': 'u1', 'username': 'ada', 'name': 'Ada Lovelace', 'email': 'ada@example.com'}
    """

    user_id: str
    username: str
    name: str
    email: str


@codec.register()
@dataclass(frozen=True)
class UsernameChanged:
    """A user took another username.

    >>> ada = User("u1", "ada", "Ada", "ada@example.com", exists=True)
    >>> evolve_user(ada, UsernameChanged("u1", "lovelace")).username
    'lovelace'
    """

    user_id: str
    username: str


@codec.register()
@dataclass(frozen=True)
class NameChanged:
    """A user changed their display name.

    >>> ada = User("u1", "ada", "Ada", "ada@example.com", exists=True)
    >>> evolve_user(ada, NameChanged("u1", "Ada Lovelace")).name
    'Ada Lovelace'
    """

    user_id: str
    name: str


@codec.register()
@dataclass(frozen=True)
class EmailChanged:
    """A user changed their email address.

    >>> ada = User("u1", "ada", "Ada", "ada@example.com", exists=True)
    >>> evolve_user(ada, EmailChanged("u1", "ada@example.org")).email
    'ada@example.org'
    """

    user_id: str
    email: str


@codec.register()
@dataclass(frozen=True)
class UserDeleted:
    """A user closed their account.

    >>> ada = User("u1", "ada", "Ada", "ada@example.com", exists=True)
    >>> evolve_user(ada, UserDeleted("u1")).exists
    False
    """

    user_id: str


@codec.register()
@dataclass(frozen=True)
class UserRestored:
    """A deleted account was brought back (by a revert).

    >>> gone = User("u1", "ada", "Ada", "ada@example.com", exists=False)
    >>> evolve_user(gone, UserRestored("u1")).exists
    True
    """

    user_id: str


@codec.register()
@dataclass(frozen=True)
class UsernameClaimed:
    """A username now belongs to a user.

    >>> username_decider("ada").fold([UsernameClaimed("ada", "u1")])
    'u1'
    """

    username: str
    user_id: str


@codec.register()
@dataclass(frozen=True)
class UsernameReleased:
    """A username is free again.

    >>> username_decider("ada").fold([UsernameClaimed("ada", "u1"), UsernameReleased("ada", "u1")])
    ''
    """

    username: str
    user_id: str


@codec.register()
@dataclass(frozen=True)
class GroupCreated:
    """A group was created by its owner.

    >>> group_decider("g1").fold([GroupCreated("g1", "chess", owner="u1")])
    Group(group_id='g1', name='chess', owner='u1', members=frozenset({'u1'}))
    """

    group_id: str
    name: str
    owner: str


@codec.register()
@dataclass(frozen=True)
class MemberAdded:
    """A user joined a group.

    >>> chess = group_decider("g1").fold([GroupCreated("g1", "chess", "u1"), MemberAdded("g1", "u2")])
    >>> sorted(chess.members)
    ['u1', 'u2']
    """

    group_id: str
    user_id: str


@codec.register()
@dataclass(frozen=True)
class MemberRemoved:
    """A user left a group.

    >>> chess = group_decider("g1").fold([GroupCreated("g1", "chess", "u1"), MemberRemoved("g1", "u1")])
    >>> chess.members
    frozenset()
    """

    group_id: str
    user_id: str


# ---------------------------------------------------------------------------- users


@dataclass(frozen=True)
class User:
    """The state of one user stream.

    >>> user_decider("u1").fold([UserRegistered("u1", "ada", "Ada", "ada@example.com"), UserDeleted("u1")])
    User(user_id='u1', username='ada', name='Ada', email='ada@example.com', exists=False)
    """

    user_id: str = ""
    username: str = ""
    name: str = ""
    email: str = ""
    exists: bool = False


@dataclass(frozen=True)
class Register:
    """Register a new user (the username is claimed first, by :meth:`Accounts.register`).

    >>> user_decider("u1").decide(Register("ada", "Ada", "ada@example.com"), User())
    <Success: [UserRegistered(user_id='u1', username='ada', name='Ada', email='ada@example.com')]>
    """

    username: str
    name: str
    email: str


@dataclass(frozen=True)
class Update:
    """Change any of the user's fields (``None``: leave as is).

    >>> ada = User("u1", "ada", "Ada", "ada@example.com", exists=True)
    >>> user_decider("u1").decide(Update(name="Ada Lovelace", email="ada@example.com"), ada)
    <Success: [NameChanged(user_id='u1', name='Ada Lovelace')]>
    """

    username: str | None = None
    name: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class Delete:
    """Close the user's account.

    >>> ada = User("u1", "ada", "Ada", "ada@example.com", exists=True)
    >>> user_decider("u1").decide(Delete(), ada), user_decider("u1").decide(Delete(), User())
    (<Success: [UserDeleted(user_id='u1')]>, <Failure: user 'u1' does not exist>)
    """


@dataclass(frozen=True)
class Revert:
    """Bring the user back to an earlier state by appending compensating events.

    >>> before = User("u1", "ada", "Ada", "ada@example.com", exists=True)
    >>> now = User("u1", "ada", "Ada L.", "ada@example.com", exists=False)
    >>> user_decider("u1").decide(Revert(to=before), now)
    <Success: [UserRestored(user_id='u1'), NameChanged(user_id='u1', name='Ada')]>
    """

    to: User


UserCommand = Register | Update | Delete | Revert


def evolve_user(state: User, event: object) -> User:
    """The user after one more event.

    >>> evolve_user(User(), UserRegistered("u1", "ada", "Ada", "ada@example.com")).email
    'ada@example.com'
    """
    match event:
        case UserRegistered(user_id, username, name, email):
            return User(user_id, username, name, email, exists=True)
        case UsernameChanged(_, username):
            return replace(state, username=username)
        case NameChanged(_, name):
            return replace(state, name=name)
        case EmailChanged(_, email):
            return replace(state, email=email)
        case UserDeleted():
            return replace(state, exists=False)
        case UserRestored():
            return replace(state, exists=True)
    return state


def _changes(user_id: str, state: User, username: str, name: str, email: str) -> list[Any]:
    events: list[Any] = []
    if username != state.username:
        events.append(UsernameChanged(user_id, username))
    if name != state.name:
        events.append(NameChanged(user_id, name))
    if email != state.email:
        events.append(EmailChanged(user_id, email))
    return events


def user_decider(user_id: str) -> Decider[UserCommand, Any, User]:
    """The decider of one user.

    >>> decider = user_decider("u1")
    >>> decider.decide(Register("ada", "Ada", "not an email"), decider.initial)
    <Failure: 'not an email' is not an email address>
    """

    def decide(command: UserCommand, state: User) -> Result[list[Any], Rejection]:
        match command:
            case Register(username, name, email):
                if state.user_id:
                    return Failure(Rejection(f"user {user_id!r} already exists"))
                if "@" not in email:
                    return Failure(Rejection(f"{email!r} is not an email address"))
                return Success([UserRegistered(user_id, username, name, email)])
            case Update(username, name, email):
                if not state.exists:
                    return Failure(Rejection(f"user {user_id!r} does not exist"))
                if email is not None and "@" not in email:
                    return Failure(Rejection(f"{email!r} is not an email address"))
                return Success(
                    _changes(
                        user_id,
                        state,
                        state.username if username is None else username,
                        state.name if name is None else name,
                        state.email if email is None else email,
                    )
                )
            case Delete():
                if not state.exists:
                    return Failure(Rejection(f"user {user_id!r} does not exist"))
                return Success([UserDeleted(user_id)])
            case Revert(to):
                if not state.user_id:
                    return Failure(Rejection(f"user {user_id!r} never existed"))
                events = _changes(user_id, state, to.username, to.name, to.email)
                if to.exists and not state.exists:
                    events.insert(0, UserRestored(user_id))
                elif state.exists and not to.exists:
                    events.append(UserDeleted(user_id))
                return Success(events)
        raise TypeError(f"not a user command: {command!r}")

    return Decider(User(), evolve_user, decide)


users = Entity(
    "user",
    user_decider(""),
    codec,
    stream=lambda user_id: f"user-{user_id}",
    view=user_decider,
    state_type=User,
    snapshots=EveryN(50),
)

# ---------------------------------------------------------------------------- usernames


@dataclass(frozen=True)
class Claim:
    """Claim the username for ``user_id``; refused if another user holds it.

    >>> username_decider("ada").decide(Claim("u2"), "u1")
    <Failure: username 'ada' is taken>
    """

    user_id: str


@dataclass(frozen=True)
class Release:
    """Release the username if ``user_id`` holds it (otherwise nothing happens).

    >>> ada = username_decider("ada")
    >>> ada.decide(Release("u1"), "u1"), ada.decide(Release("u2"), "u1")
    (<Success: [UsernameReleased(username='ada', user_id='u1')]>, <Success: []>)
    """

    user_id: str


def username_decider(username: str) -> Decider[Claim | Release, Any, str]:
    """Who holds ``username`` ("" for nobody), and the claims and releases of it.

    >>> ada = username_decider("ada")
    >>> ada.decide(Claim("u1"), ada.initial)
    <Success: [UsernameClaimed(username='ada', user_id='u1')]>
    """

    def evolve(holder: str, event: object) -> str:
        match event:
            case UsernameClaimed(_, user_id):
                return user_id
            case UsernameReleased():
                return ""
        return holder

    def decide(command: Claim | Release, holder: str) -> Result[list[Any], Rejection]:
        match command:
            case Claim(user_id):
                if holder == user_id:
                    return Success([])
                if holder:
                    return Failure(Rejection(f"username {username!r} is taken"))
                return Success([UsernameClaimed(username, user_id)])
            case Release(user_id):
                return Success([UsernameReleased(username, user_id)] if holder == user_id else [])
        raise TypeError(f"not a username command: {command!r}")

    return Decider("", evolve, decide)


usernames = Entity(
    "username",
    username_decider(""),
    codec,
    stream=lambda username: f"username-{username}",
    view=username_decider,
)

# ---------------------------------------------------------------------------- groups


@dataclass(frozen=True)
class Group:
    """The state of one group stream.

    >>> Group()
    Group(group_id='', name='', owner='', members=frozenset())
    """

    group_id: str = ""
    name: str = ""
    owner: str = ""
    members: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class CreateGroup:
    """Create a group owned by ``owner`` (its first member).

    >>> group_decider("g1").decide(CreateGroup("chess", owner="u1"), Group())
    <Success: [GroupCreated(group_id='g1', name='chess', owner='u1')]>
    """

    name: str
    owner: str


@dataclass(frozen=True)
class AddMember:
    """Add a user to the group (nothing happens if they are a member already).

    >>> chess = Group("g1", "chess", "u1", frozenset({"u1"}))
    >>> group_decider("g1").decide(AddMember("u2"), chess), group_decider("g1").decide(AddMember("u1"), chess)
    (<Success: [MemberAdded(group_id='g1', user_id='u2')]>, <Success: []>)
    """

    user_id: str


@dataclass(frozen=True)
class RemoveMember:
    """Remove a member from the group.

    >>> chess = Group("g1", "chess", "u1", frozenset({"u1"}))
    >>> group_decider("g1").decide(RemoveMember("u2"), chess)
    <Failure: 'u2' is not a member of 'g1'>
    """

    user_id: str


def evolve_group(state: Group, event: object) -> Group:
    """The group after one more event.

    >>> g = evolve_group(Group(), GroupCreated("g1", "chess", "u1"))
    >>> sorted(evolve_group(g, MemberAdded("g1", "u2")).members)
    ['u1', 'u2']
    """
    match event:
        case GroupCreated(group_id, name, owner):
            return Group(group_id, name, owner, frozenset({owner}))
        case MemberAdded(_, user_id):
            return replace(state, members=state.members | {user_id})
        case MemberRemoved(_, user_id):
            return replace(state, members=state.members - {user_id})
    return state


def group_decider(group_id: str) -> Decider[CreateGroup | AddMember | RemoveMember, Any, Group]:
    """The decider of one group.

    >>> chess = group_decider("g1")
    >>> chess.decide(AddMember("u2"), chess.initial)
    <Failure: group 'g1' does not exist>
    """

    def decide(command: CreateGroup | AddMember | RemoveMember, state: Group) -> Result[list[Any], Rejection]:
        match command:
            case CreateGroup(name, owner):
                if state.group_id:
                    return Failure(Rejection(f"group {group_id!r} already exists"))
                return Success([GroupCreated(group_id, name, owner)])
            case AddMember(user_id):
                if not state.group_id:
                    return Failure(Rejection(f"group {group_id!r} does not exist"))
                return Success([] if user_id in state.members else [MemberAdded(group_id, user_id)])
            case RemoveMember(user_id):
                if user_id not in state.members:
                    return Failure(Rejection(f"{user_id!r} is not a member of {group_id!r}"))
                return Success([MemberRemoved(group_id, user_id)])
        raise TypeError(f"not a group command: {command!r}")

    return Decider(Group(), evolve_group, decide)


groups = Entity(
    "group",
    group_decider(""),
    codec,
    stream=lambda group_id: f"group-{group_id}",
    view=group_decider,
)

# ---------------------------------------------------------------------------- the application


@dataclass(frozen=True)
class AuditEntry:
    """Who changed what, and when.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     accounts = Accounts(MemoryStore())
    ...     await accounts.register("u1", "ada", "Ada", "ada@example.com", by="admin")
    ...     await accounts.update("u1", by="ada", name="Ada Lovelace")
    ...     for entry in await accounts.audit("u1").to_list():
    ...         print(entry.by, entry.event, entry.state.name)
    >>> anyio.run(main)
    admin UserRegistered(user_id='u1', username='ada', name='Ada', email='ada@example.com') Ada
    ada NameChanged(user_id='u1', name='Ada Lovelace') Ada Lovelace
    """

    time: datetime
    by: str
    event: Any
    state: Any


Outcome = Result[Saved[Any, Any], Rejection | StoreError | Any]


class Accounts:
    """The account-management application: commands across users, usernames and groups.

    >>> import anyio
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main() -> None:
    ...     accounts = Accounts(MemoryStore())
    ...     await accounts.register("u1", "ada", "Ada", "ada@example.com", by="admin")
    ...     await accounts.create_group("g1", "chess", owner="u1", by="ada")
    ...     print(await accounts.add_member("g1", "u2", by="ada"))
    ...     print((await accounts.groups.load("g1")).state.members)
    >>> anyio.run(main)
    <Failure: user 'u2' does not exist>
    frozenset({'u1'})
    """

    def __init__(self, store: EventStore) -> None:
        self.users = Repository(store, users)
        self.usernames = Repository(store, usernames)
        self.groups = Repository(store, groups)

    async def register(self, user_id: str, username: str, name: str, email: str, by: str) -> Outcome:
        """Create a user, claiming its username first (exactly one registration wins a name)."""
        claimed = await self.usernames.handle(username, Claim(user_id), metadata={"by": by})
        if isinstance(claimed, Failure):
            return claimed
        saved = await self.users.handle(user_id, Register(username, name, email), metadata={"by": by})
        if isinstance(saved, Failure):
            await self.usernames.handle(username, Release(user_id), metadata={"by": by})
        return saved

    async def update(
        self,
        user_id: str,
        by: str,
        username: str | None = None,
        name: str | None = None,
        email: str | None = None,
        if_seq: int | None = None,
    ) -> Outcome:
        """Change a user's fields; a new username is claimed first and the old one released after."""
        before = (await self.users.load(user_id)).state
        new_name = username is not None and username != before.username and before.exists
        if new_name:
            assert username is not None
            claimed = await self.usernames.handle(username, Claim(user_id), metadata={"by": by})
            if isinstance(claimed, Failure):
                return claimed
        command = Update(username, name, email)
        saved = await self.users.handle(user_id, command, if_seq=if_seq, metadata={"by": by})
        if new_name:
            assert username is not None
            dropped = username if isinstance(saved, Failure) else before.username
            await self.usernames.handle(dropped, Release(user_id), metadata={"by": by})
        return saved

    async def delete(self, user_id: str, by: str) -> Outcome:
        """Close a user's account (its username stays reserved, so a revert can bring it back)."""
        return await self.users.handle(user_id, Delete(), metadata={"by": by})

    async def revert(self, user_id: str, to_time: datetime, by: str) -> Outcome:
        """Bring a user back to its state at ``to_time`` by appending compensating events.

        History is never rewritten: the revert is itself in the audit trail.
        """
        then = (await self.users.state_at(user_id, time=to_time)).state
        now = (await self.users.load(user_id)).state
        if not then.user_id:
            return Failure(Rejection(f"user {user_id!r} did not exist at {to_time.isoformat()}"))
        if then.username != now.username:
            claimed = await self.usernames.handle(then.username, Claim(user_id), metadata={"by": by})
            if isinstance(claimed, Failure):
                return claimed
        saved = await self.users.handle(user_id, Revert(then), metadata={"by": by})
        if then.username != now.username:
            dropped = then.username if isinstance(saved, Failure) else now.username
            await self.usernames.handle(dropped, Release(user_id), metadata={"by": by})
        return saved

    def audit(self, user_id: str) -> Stream[AuditEntry]:
        """The audit trail of a user: every change, who made it and when, with the state after it."""

        def entry(step: Step) -> AuditEntry:
            by = (step.recorded.metadata or {}).get("by", "?")
            return AuditEntry(step.recorded.time, str(by), step.event, step.state)

        return self.users.history(user_id).map(entry)

    async def create_group(self, group_id: str, name: str, owner: str, by: str) -> Outcome:
        """Create a group owned by an existing user."""
        if not (await self.users.load(owner)).state.exists:
            return Failure(Rejection(f"user {owner!r} does not exist"))
        return await self.groups.handle(group_id, CreateGroup(name, owner), metadata={"by": by})

    async def add_member(self, group_id: str, user_id: str, by: str) -> Outcome:
        """Add an existing user to a group."""
        if not (await self.users.load(user_id)).state.exists:
            return Failure(Rejection(f"user {user_id!r} does not exist"))
        return await self.groups.handle(group_id, AddMember(user_id), metadata={"by": by})

    async def remove_member(self, group_id: str, user_id: str, by: str) -> Outcome:
        """Remove a user from a group."""
        return await self.groups.handle(group_id, RemoveMember(user_id), metadata={"by": by})
