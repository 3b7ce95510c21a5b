"""Identities, API keys and dashboard sessions as one service: what the server and the CLI call.

Every method is one unit of work (``db.transaction()`` for writes, ``db.read()`` for reads) over
``saferun.storage.identities``; the rules about who may do what live in ``saferun.domain.policy``.

Authenticating a key (``caller_for_key``) is a read: the server does it on every request, and on SQLite a
write transaction would take the database's write lock each time. The key's ``last_used_at`` is
refreshed in a separate small write only when it is older than ``LAST_USED_RESOLUTION`` (one minute),
so "last used" is accurate to the minute and a busy agent costs one write a minute, not one per call.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import RowMapping

from saferun.domain.policy import Caller, Role
from saferun.storage import identities as store
from saferun.storage import quorum as quorum_store
from saferun.storage.database import Database
from saferun.storage.schema import utcnow

LAST_USED_RESOLUTION = timedelta(minutes=1)
DEFAULT_SESSION_TTL_SECONDS = 8 * 3600


@dataclass(frozen=True)
class Identity:
    identity_id: str
    display_name: str
    roles: frozenset[Role]
    disabled: bool
    created_at: datetime
    team: str | None = None  # for a quorum's "different teams" rule (saferun/domain/quorum.py)
    groups: tuple[str, ...] = ()  # the groups whose quorum votes it may cast (on reads that load them)

    @classmethod
    def from_row(cls, row: RowMapping | dict[str, Any], groups: Iterable[str] = ()) -> Identity:
        return cls(
            identity_id=row["identity_id"],
            display_name=row["display_name"],
            roles=store.roles_of(row),
            disabled=bool(row["disabled"]),
            created_at=row["created_at"],
            team=row.get("team"),
            groups=tuple(groups),
        )

    def caller(self) -> Caller:
        """This identity as an authenticated caller."""
        return Caller(identity_id=self.identity_id, roles=self.roles, authenticated=True)


@dataclass(frozen=True)
class ApiKeyInfo:
    """A key as lists show it: never the secret, never its hash."""

    key_id: str
    identity_id: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: RowMapping) -> ApiKeyInfo:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class NewApiKey:
    """A key just created. ``api_key`` is the plaintext: show it once, it cannot be recovered."""

    key_id: str
    identity_id: str
    api_key: str


@dataclass(frozen=True)
class SessionInfo:
    """A live dashboard session: who it is, and the token its forms must carry."""

    caller: Caller
    display_name: str
    csrf_token: str
    expires_at: datetime
    key_id: str | None


@dataclass(frozen=True)
class DemoIdentity:
    identity_id: str
    display_name: str
    roles: frozenset[Role]
    key_id: str
    api_key: str


DEMO_IDENTITIES: tuple[tuple[str, str, Role], ...] = (
    ("demo_poster", "Demo poster", Role.POSTER),
    ("demo_executor", "Demo executor (agent)", Role.EXECUTOR),
    ("demo_supervisor", "Demo supervisor", Role.SUPERVISOR),
    ("demo_admin", "Demo admin", Role.ADMIN),
)


class IdentityService:
    """Identities and their credentials on one database. Cheap to create; all state lives in the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ identities
    def create_identity(
        self, identity_id: str | None, display_name: str = "", roles: Iterable[str] | None = None
    ) -> Identity:
        with self.db.transaction() as conn:
            return Identity.from_row(store.create_identity(conn, identity_id, display_name, roles or ()))

    def create_identity_with_key(
        self,
        identity_id: str | None,
        display_name: str = "",
        roles: Iterable[str] | None = None,
        *,
        key_label: str = "initial",
    ) -> tuple[Identity, NewApiKey]:
        """An identity and its first API key, in one transaction."""
        with self.db.transaction() as conn:
            row = store.create_identity(conn, identity_id, display_name, roles or ())
            key_id, plaintext = store.create_api_key(conn, row["identity_id"], key_label)
        return Identity.from_row(row), NewApiKey(key_id, row["identity_id"], plaintext)

    def get_identity(self, identity_id: str) -> Identity:
        with self.db.read() as conn:
            row = store.get_identity(conn, identity_id)
            return Identity.from_row(row, quorum_store.groups_of(conn, identity_id))

    def list_identities(self) -> list[Identity]:
        with self.db.read() as conn:
            groups = quorum_store.all_groups(conn)
            return [
                Identity.from_row(row, groups.get(row["identity_id"], ()))
                for row in store.list_identities(conn)
            ]

    def set_membership(
        self,
        identity_id: str,
        *,
        groups: Iterable[str] | None = None,
        team: str | None = None,
        set_team: bool = False,
    ) -> Identity:
        """Replace the identity's quorum groups (``groups`` not None) and/or its team (``set_team``; None
        or "" clears it). Names are checked before any write (422 naming ``group`` or ``team``)."""
        with self.db.transaction() as conn:
            row = quorum_store.set_membership(conn, identity_id, groups, team, set_team=set_team)
            return Identity.from_row(row, quorum_store.groups_of(conn, identity_id))

    def set_roles(self, identity_id: str, roles: Iterable[str]) -> Identity:
        with self.db.transaction() as conn:
            return Identity.from_row(store.set_roles(conn, identity_id, roles))

    def set_disabled(self, identity_id: str, disabled: bool) -> Identity:
        with self.db.transaction() as conn:
            return Identity.from_row(store.set_disabled(conn, identity_id, disabled))

    # ------------------------------------------------------------------ API keys
    def create_api_key(self, identity_id: str, label: str = "") -> NewApiKey:
        with self.db.transaction() as conn:
            key_id, plaintext = store.create_api_key(conn, identity_id, label)
        return NewApiKey(key_id, identity_id, plaintext)

    def list_api_keys(self, identity_id: str | None = None) -> list[ApiKeyInfo]:
        with self.db.read() as conn:
            return [ApiKeyInfo.from_row(row) for row in store.list_api_keys(conn, identity_id)]

    def revoke_api_key(self, key_id: str) -> ApiKeyInfo:
        with self.db.transaction() as conn:
            return ApiKeyInfo.from_row(store.revoke_api_key(conn, key_id))

    def authenticate_key(self, plaintext: Any) -> tuple[Identity, str] | None:
        """The identity a key belongs to and the key's id, or None (malformed, unknown, wrong secret,
        revoked, identity disabled)."""
        with self.db.read() as conn:
            row = store.verify_api_key(conn, plaintext, touch=False)
        if row is None:
            return None
        now = utcnow()
        last = row["key_last_used_at"]
        if last is None or now - last >= LAST_USED_RESOLUTION:
            with self.db.transaction() as conn:
                store.touch_api_key(conn, row["key_id"], now=now)
        return Identity.from_row(row), row["key_id"]

    def caller_for_key(self, plaintext: Any) -> Caller | None:
        """The authenticated caller a key stands for, or None when the key is not accepted."""
        found = self.authenticate_key(plaintext)
        return None if found is None else found[0].caller()

    # ------------------------------------------------------------------ dashboard sessions
    def create_session(
        self, identity_id: str, ttl_seconds: int = DEFAULT_SESSION_TTL_SECONDS, *, key_id: str | None = None
    ) -> tuple[str, str]:
        """``(cookie_value, csrf_token)`` for a new session; only the cookie's hash is stored."""
        with self.db.transaction() as conn:
            return store.create_session(conn, identity_id, ttl_seconds, key_id=key_id)

    def session(self, cookie_value: Any) -> SessionInfo | None:
        """The live session a cookie names, or None (unknown, expired, key revoked, identity disabled)."""
        with self.db.read() as conn:
            row = store.get_session(conn, cookie_value)
        if row is None:
            return None
        caller = Caller(identity_id=row["identity_id"], roles=store.roles_of(row), authenticated=True)
        return SessionInfo(
            caller=caller,
            display_name=row["display_name"],
            csrf_token=row["csrf_token"],
            expires_at=row["expires_at"],
            key_id=row["key_id"],
        )

    def delete_session(self, cookie_value: Any) -> bool:
        with self.db.transaction() as conn:
            return store.delete_session(conn, cookie_value)

    def delete_expired_sessions(self) -> int:
        with self.db.transaction() as conn:
            return store.delete_expired_sessions(conn)


def ensure_demo_identities(db: Database) -> list[DemoIdentity]:
    """On a database with no identities at all, create one demo identity per role (poster, executor,
    supervisor, admin), each with one API key, and return them with their plaintext keys so
    ``saferun serve`` can print them once. Where any identity exists, create nothing and return ``[]``.

    Safe when several replicas start at once: the check and the inserts are one transaction, serialized
    by BEGIN IMMEDIATE on SQLite and an advisory lock on PostgreSQL, so exactly one process creates them.
    """
    with db.transaction() as conn:
        store.lock_identities(conn)
        if store.count_identities(conn) > 0:
            return []
        created = []
        for identity_id, name, role in DEMO_IDENTITIES:
            store.create_identity(conn, identity_id, name, [role])
            key_id, plaintext = store.create_api_key(conn, identity_id, "demo")
            created.append(DemoIdentity(identity_id, name, frozenset({role}), key_id, plaintext))
    return created
