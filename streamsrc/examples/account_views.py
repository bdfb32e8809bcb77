"""Read models of the account example: user search, group membership, and one added later.

Each is a :class:`~streamsrc.projections.Projection` whose handler writes
SQLite tables of a :class:`~streamsrc.projections.sqlite.SqliteReadModel`, plus a
small query class. The write side (:mod:`streamsrc.examples.accounts`) knows
nothing of them: they are folds of its events, kept up to date by a
projector, and can be thrown away and rebuilt from the log at any time.

* :data:`user_search` — users by email and by name prefix;
* :data:`group_members` — the members of a group, the groups of a user;
* :data:`email_domains` — users per email domain: the query nobody planned
  for. It needs no migration of anything: a new projection replays the log
  into its own fresh table (``streamsrc demo`` does it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from streamsrc.events import RecordedEvent
from streamsrc.examples.accounts import (
    EmailChanged,
    GroupCreated,
    MemberAdded,
    MemberRemoved,
    NameChanged,
    UserDeleted,
    UsernameChanged,
    UserRegistered,
    UserRestored,
    codec,
)
from streamsrc.projections import Projection
from streamsrc.projections.sqlite import SqliteHandler, SqliteReadModel

__all__ = [
    "EMAIL_DOMAINS_SCHEMA",
    "GROUP_MEMBERS_SCHEMA",
    "USER_SEARCH_SCHEMA",
    "EmailDomains",
    "GroupMembers",
    "UserRow",
    "UserSearch",
    "email_domains",
    "group_members",
    "user_search",
]

_USER_EVENTS = {
    t.__name__
    for t in (UserRegistered, UsernameChanged, NameChanged, EmailChanged, UserDeleted, UserRestored)
}
_GROUP_EVENTS = {t.__name__ for t in (GroupCreated, MemberAdded, MemberRemoved)}

# ---------------------------------------------------------------------------- user search

USER_SEARCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,       -- lower-cased name, for prefix search
    email TEXT NOT NULL,
    email_key TEXT NOT NULL,      -- lower-cased email
    deleted INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS users_email ON users (email_key);
CREATE INDEX IF NOT EXISTS users_name ON users (name_key);
"""


def _write_users(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
    for recorded in events:
        match codec.decode(recorded):
            case UserRegistered(user_id, username, name, email):
                conn.execute(
                    "INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?, ?, ?, 0)",
                    (user_id, username, name, name.casefold(), email, email.casefold()),
                )
            case UsernameChanged(user_id, username):
                conn.execute("UPDATE users SET username = ? WHERE user_id = ?", (username, user_id))
            case NameChanged(user_id, name):
                conn.execute(
                    "UPDATE users SET name = ?, name_key = ? WHERE user_id = ?",
                    (name, name.casefold(), user_id),
                )
            case EmailChanged(user_id, email):
                conn.execute(
                    "UPDATE users SET email = ?, email_key = ? WHERE user_id = ?",
                    (email, email.casefold(), user_id),
                )
            case UserDeleted(user_id):
                conn.execute("UPDATE users SET deleted = 1 WHERE user_id = ?", (user_id,))
            case UserRestored(user_id):
                conn.execute("UPDATE users SET deleted = 0 WHERE user_id = ?", (user_id,))


user_search: Projection[SqliteHandler] = Projection(
    "account-user-search", _write_users, types=_USER_EVENTS, stream_prefix="user-"
)
"""Users by email and name prefix (tables: :data:`USER_SEARCH_SCHEMA`)."""


@dataclass(frozen=True)
class UserRow:
    """A user as the search read model holds it.

    >>> import os, tempfile
    >>> import anyio
    >>> from streamsrc.examples.accounts import Accounts
    >>> from streamsrc.projections import Projector
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main(folder: str) -> None:
    ...     store = MemoryStore()
    ...     accounts = Accounts(store)
    ...     await accounts.register("u1", "ada", "Ada Lovelace", "ada@example.com", by="admin")
    ...     await accounts.register("u2", "bob", "Bob", "bob@example.com", by="admin")
    ...     async with SqliteReadModel(os.path.join(folder, "views.db"), USER_SEARCH_SCHEMA) as model:
    ...         await Projector(store, user_search, model).catch_up()
    ...         for row in await UserSearch(model).by_name_prefix("ad"):
    ...             print(row.user_id, row.username, row.name)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     anyio.run(main, folder)
    u1 ada Ada Lovelace
    """

    user_id: str
    username: str
    name: str
    email: str


def _prefix_range(prefix: str) -> tuple[str, str]:
    key = prefix.casefold()
    return key, key + "\U0010ffff"


class UserSearch:
    """Queries on the user-search read model (deleted users are not found).

    >>> import os, tempfile
    >>> import anyio
    >>> from streamsrc.examples.accounts import Accounts
    >>> from streamsrc.projections import Projector
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main(folder: str) -> None:
    ...     store = MemoryStore()
    ...     await Accounts(store).register("u1", "ada", "Ada Lovelace", "Ada@Example.com", by="admin")
    ...     async with SqliteReadModel(os.path.join(folder, "views.db"), USER_SEARCH_SCHEMA) as model:
    ...         await Projector(store, user_search, model).catch_up()
    ...         print(await UserSearch(model).by_email("ada@example.com"))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     anyio.run(main, folder)
    [UserRow(user_id='u1', username='ada', name='Ada Lovelace', email='Ada@Example.com')]
    """

    def __init__(self, model: SqliteReadModel) -> None:
        self.model = model

    async def by_email(self, email: str) -> list[UserRow]:
        """Users with this email address (case-insensitive)."""
        rows = await self.model.query(
            "SELECT user_id, username, name, email FROM users "
            "WHERE email_key = ? AND deleted = 0 ORDER BY user_id",
            (email.casefold(),),
        )
        return [UserRow(*row) for row in rows]

    async def by_name_prefix(self, prefix: str, limit: int = 20) -> list[UserRow]:
        """Users whose name starts with ``prefix`` (case-insensitive), by name."""
        low, high = _prefix_range(prefix)
        rows = await self.model.query(
            "SELECT user_id, username, name, email FROM users "
            "WHERE name_key >= ? AND name_key < ? AND deleted = 0 ORDER BY name_key, user_id LIMIT ?",
            (low, high, limit),
        )
        return [UserRow(*row) for row in rows]


# ---------------------------------------------------------------------------- group membership

GROUP_MEMBERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    group_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    group_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_user ON members (user_id, group_id);
"""


def _write_members(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
    for recorded in events:
        match codec.decode(recorded):
            case GroupCreated(group_id, name, owner):
                conn.execute("INSERT OR REPLACE INTO groups VALUES (?, ?, ?)", (group_id, name, owner))
                conn.execute("INSERT OR IGNORE INTO members VALUES (?, ?)", (group_id, owner))
            case MemberAdded(group_id, user_id):
                conn.execute("INSERT OR IGNORE INTO members VALUES (?, ?)", (group_id, user_id))
            case MemberRemoved(group_id, user_id):
                conn.execute("DELETE FROM members WHERE group_id = ? AND user_id = ?", (group_id, user_id))


group_members: Projection[SqliteHandler] = Projection(
    "account-group-members", _write_members, types=_GROUP_EVENTS, stream_prefix="group-"
)
"""Members of groups (tables: :data:`GROUP_MEMBERS_SCHEMA`)."""


class GroupMembers:
    """Queries on the group-membership read model.

    >>> import os, tempfile
    >>> import anyio
    >>> from streamsrc.examples.accounts import Accounts
    >>> from streamsrc.projections import Projector
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main(folder: str) -> None:
    ...     store = MemoryStore()
    ...     accounts = Accounts(store)
    ...     await accounts.register("u1", "ada", "Ada", "ada@example.com", by="admin")
    ...     await accounts.register("u2", "bob", "Bob", "bob@example.com", by="admin")
    ...     await accounts.create_group("g1", "chess", owner="u1", by="u1")
    ...     await accounts.add_member("g1", "u2", by="u1")
    ...     async with SqliteReadModel(os.path.join(folder, "views.db"), GROUP_MEMBERS_SCHEMA) as model:
    ...         await Projector(store, group_members, model).catch_up()
    ...         print(await GroupMembers(model).members("g1"), await GroupMembers(model).groups_of("u2"))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     anyio.run(main, folder)
    ['u1', 'u2'] ['g1']
    """

    def __init__(self, model: SqliteReadModel) -> None:
        self.model = model

    async def members(self, group_id: str) -> list[str]:
        """The user ids in a group, sorted."""
        rows = await self.model.query(
            "SELECT user_id FROM members WHERE group_id = ? ORDER BY user_id", (group_id,)
        )
        return [r[0] for r in rows]

    async def groups_of(self, user_id: str) -> list[str]:
        """The group ids a user belongs to, sorted."""
        rows = await self.model.query(
            "SELECT group_id FROM members WHERE user_id = ? ORDER BY group_id", (user_id,)
        )
        return [r[0] for r in rows]


# ---------------------------------------------------------------------------- added later: email domains

EMAIL_DOMAINS_SCHEMA = """
CREATE TABLE IF NOT EXISTS user_domains (
    user_id TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS user_domains_domain ON user_domains (domain);
"""


def _domain(email: str) -> str:
    return email.rpartition("@")[2].casefold()


def _write_domains(conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
    for recorded in events:
        match codec.decode(recorded):
            case UserRegistered(user_id=user_id, email=email):
                row = (user_id, _domain(email))
                conn.execute("INSERT OR REPLACE INTO user_domains VALUES (?, ?, 0)", row)
            case EmailChanged(user_id, email):
                row = (_domain(email), user_id)
                conn.execute("UPDATE user_domains SET domain = ? WHERE user_id = ?", row)
            case UserDeleted(user_id):
                conn.execute("UPDATE user_domains SET deleted = 1 WHERE user_id = ?", (user_id,))
            case UserRestored(user_id):
                conn.execute("UPDATE user_domains SET deleted = 0 WHERE user_id = ?", (user_id,))


email_domains: Projection[SqliteHandler] = Projection(
    "account-email-domains",
    _write_domains,
    types={"UserRegistered", "EmailChanged", "UserDeleted", "UserRestored"},
    stream_prefix="user-",
)
"""Users per email domain (table: :data:`EMAIL_DOMAINS_SCHEMA`): the read model added later."""


class EmailDomains:
    """Queries on the email-domain read model.

    >>> import os, tempfile
    >>> import anyio
    >>> from streamsrc.examples.accounts import Accounts
    >>> from streamsrc.projections import Projector
    >>> from streamsrc.store.memory import MemoryStore
    >>> async def main(folder: str) -> None:
    ...     store = MemoryStore()
    ...     accounts = Accounts(store)
    ...     await accounts.register("u1", "ada", "Ada", "ada@example.com", by="admin")
    ...     await accounts.register("u2", "bob", "Bob", "bob@example.org", by="admin")
    ...     await accounts.register("u3", "cy", "Cy", "cy@example.org", by="admin")
    ...     async with SqliteReadModel(os.path.join(folder, "views.db"), EMAIL_DOMAINS_SCHEMA) as model:
    ...         await Projector(store, email_domains, model).catch_up()
    ...         print(await EmailDomains(model).counts())
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     anyio.run(main, folder)
    {'example.com': 1, 'example.org': 2}
    """

    def __init__(self, model: SqliteReadModel) -> None:
        self.model = model

    async def counts(self) -> dict[str, int]:
        """Number of (not deleted) users per email domain."""
        rows = await self.model.query(
            "SELECT domain, count(*) FROM user_domains WHERE deleted = 0 GROUP BY domain ORDER BY domain"
        )
        return {str(domain): int(n) for domain, n in rows}
