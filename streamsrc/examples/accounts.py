"""Account management: users and groups as event streams.

Each user is one stream (``user-<id>``), each group one stream
(``group-<id>``). The state of an entity is a fold of its events; nothing in
this module knows which store keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from streamsrc.codec import Codec

codec = Codec()


@codec.register()
@dataclass(frozen=True)
class UserRegistered:
    """A user signed up."""

    user_id: str
    email: str
    name: str


@codec.register()
@dataclass(frozen=True)
class EmailChanged:
    """A user changed their email address."""

    user_id: str
    email: str


@codec.register()
@dataclass(frozen=True)
class UserDeleted:
    """A user closed their account."""

    user_id: str


@codec.register()
@dataclass(frozen=True)
class GroupCreated:
    """A group was created by its owner."""

    group_id: str
    name: str
    owner: str


@codec.register()
@dataclass(frozen=True)
class MemberAdded:
    """A user joined a group."""

    group_id: str
    user_id: str


@codec.register()
@dataclass(frozen=True)
class MemberRemoved:
    """A user left a group."""

    group_id: str
    user_id: str


AccountEvent = UserRegistered | EmailChanged | UserDeleted | GroupCreated | MemberAdded | MemberRemoved


@dataclass(frozen=True)
class User:
    """The state of one user stream."""

    user_id: str = ""
    email: str = ""
    name: str = ""
    exists: bool = False


@dataclass(frozen=True)
class Group:
    """The state of one group stream."""

    group_id: str = ""
    name: str = ""
    owner: str = ""
    members: frozenset[str] = field(default_factory=frozenset)


def user_stream(user_id: str) -> str:
    """The stream that holds a user's events."""
    return f"user-{user_id}"


def group_stream(group_id: str) -> str:
    """The stream that holds a group's events."""
    return f"group-{group_id}"


def evolve_user(state: User, event: object) -> User:
    """The user after one more event.

    >>> evolve_user(User(), UserRegistered("u1", "ada@example.com", "Ada")).email
    'ada@example.com'
    """
    match event:
        case UserRegistered(user_id, email, name):
            return User(user_id, email, name, exists=True)
        case EmailChanged(_, email):
            return replace(state, email=email)
        case UserDeleted():
            return replace(state, exists=False)
    return state


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
