"""Rows of ``identities``, ``api_keys`` and ``sessions``: who may call the server, and how they prove it.

Like every storage module, each function takes a ``Connection`` and never commits; the caller owns the
transaction (``saferun.core.identity.IdentityService`` wraps them).

**API keys** look like ``sr_key_<16 hex>_<64 hex>``: a public key id (to find the row, to revoke it, to
show in lists) and a secret of 32 random bytes. Only the SHA-256 of the secret is stored, and the
plaintext is returned once, by ``create_api_key``. A fast hash is the right choice here, not a password
hash (bcrypt, scrypt, Argon2): those are slow on purpose to make guessing a *low-entropy* password
expensive, but a 256-bit random secret cannot be guessed at any speed, so slowness would buy no security
and would cost every authenticated request tens of milliseconds of CPU (and hand attackers a cheap way to
load the server). No salt is needed either: every secret is unique and random, so precomputed tables are
useless. Hashes are compared with ``hmac.compare_digest``.

**Sessions** (the dashboard's cookie) are stored the same way: the row is keyed by the SHA-256 of the
cookie value, so a copy of the table opens no session. A session expires at ``expires_at``, ends when the
key it was signed in with is revoked, and stops working while its identity is disabled.

**Identity ids** are chosen by the admin (``human_789``) or generated (``id_<hex>``). They are the same ids
workflows name as poster, executor and supervisor, so they are kept to letters, digits and ``_ . @ -``
(starting with a letter or digit, at most 200 characters): no spaces, no control characters, and no ``:``,
which SafeRun's own actors use (``saferun:timeout``) and which nobody may therefore impersonate.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from saferun.domain.ids import new_id
from saferun.domain.policy import Role, parse_roles
from saferun.errors import Conflict, InvalidInput, NotFound
from saferun.storage.schema import api_keys, identities, sessions, utcnow

KEY_PREFIX = "sr_"
_KEY_RE = re.compile(r"sr_(key_[0-9a-f]{16})_([0-9a-f]{64})")
IDENTITY_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}"  # also stated in the OpenAPI schema
_ID_RE = re.compile(IDENTITY_ID_PATTERN)
MAX_NAME = 500
MAX_LABEL = 200
MAX_COOKIE = 200  # a cookie value is 43 characters; anything much longer is not one of ours

# the advisory-lock key that serializes "create the demo identities if there are none" across replicas
_IDENTITIES_LOCK = 4021990012


# --- ids, names, hashes ----------------------------------------------------------------------------------


def validate_identity_id(value: Any, field: str = "identity_id") -> str:
    """``value`` if it is a well-formed identity id, else ``InvalidInput`` naming ``field``."""
    if not isinstance(value, str) or value == "":
        raise InvalidInput(field, "must be a non-empty string")
    if not _ID_RE.fullmatch(value):
        raise InvalidInput(
            field,
            f"{value!r} is not a valid identity id (letters, digits and _ . @ -, starting with a letter or "
            "digit, at most 200 characters)",
        )
    return value


def _text(value: Any, field: str, max_len: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string, got {type(value).__name__}")
    value = value.strip()
    if len(value) > max_len:
        raise InvalidInput(field, f"must be at most {max_len} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidInput(field, "must not contain control characters")
    return value


def _role_list(roles: Iterable[str | Role]) -> list[str]:
    return sorted(role.value for role in parse_roles(roles))


def roles_of(row: RowMapping | dict[str, Any]) -> frozenset[Role]:
    """The roles stored on an identity row; names this version does not know are ignored."""
    known = {r.value for r in Role}
    return frozenset(Role(name) for name in row["roles"] or [] if name in known)


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of a key secret or cookie value (see the module docstring for why a fast hash)."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def parse_api_key(plaintext: Any) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key string, or None for anything else."""
    if not isinstance(plaintext, str):
        return None
    match = _KEY_RE.fullmatch(plaintext.strip())
    return (match.group(1), match.group(2)) if match else None


# --- identities -------------------------------------------------------------------------------------------


def create_identity(
    conn: Connection,
    identity_id: str | None = None,
    display_name: str = "",
    roles: Iterable[str | Role] = (),
    *,
    disabled: bool = False,
) -> RowMapping:
    """Insert an identity; ``identity_id=None`` generates ``id_<hex>``. An existing id is a ``Conflict``."""
    identity_id = new_id("id") if identity_id is None else validate_identity_id(identity_id)
    name = _text(display_name, "display_name", MAX_NAME) or identity_id
    role_names = _role_list(roles)
    if find_identity(conn, identity_id) is not None:
        raise Conflict(f"identity {identity_id!r} already exists", identity_id=identity_id)
    try:
        conn.execute(
            insert(identities).values(
                identity_id=identity_id,
                display_name=name,
                roles=role_names,
                disabled=bool(disabled),
                created_at=utcnow(),
            )
        )
    except IntegrityError:  # created concurrently between the check and the insert
        raise Conflict(f"identity {identity_id!r} already exists", identity_id=identity_id) from None
    return get_identity(conn, identity_id)


_FIND = select(identities).where(identities.c.identity_id == bindparam("b_id"))  # built once: a hot read


def find_identity(conn: Connection, identity_id: str) -> RowMapping | None:
    return conn.execute(_FIND, {"b_id": identity_id}).mappings().first()


def get_identity(conn: Connection, identity_id: str) -> RowMapping:
    row = find_identity(conn, identity_id) if isinstance(identity_id, str) else None
    if row is None:
        raise NotFound(f"identity {identity_id!r} does not exist", identity_id=identity_id)
    return row


def list_identities(conn: Connection) -> list[RowMapping]:
    """Every identity, oldest first."""
    query = select(identities).order_by(identities.c.created_at, identities.c.identity_id)
    return list(conn.execute(query).mappings())


def count_identities(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(identities)).scalar_one())


def set_roles(conn: Connection, identity_id: str, roles: Iterable[str | Role]) -> RowMapping:
    """Replace the identity's roles."""
    role_names = _role_list(roles)
    get_identity(conn, identity_id)
    conn.execute(update(identities).where(identities.c.identity_id == identity_id).values(roles=role_names))
    return get_identity(conn, identity_id)


def set_disabled(conn: Connection, identity_id: str, disabled: bool) -> RowMapping:
    """Disable (or enable again) an identity: while disabled, none of its keys or sessions is accepted."""
    get_identity(conn, identity_id)
    conn.execute(
        update(identities).where(identities.c.identity_id == identity_id).values(disabled=bool(disabled))
    )
    return get_identity(conn, identity_id)


def lock_identities(conn: Connection) -> None:
    """Serialize identity bootstrapping across processes. SQLite's BEGIN IMMEDIATE already does."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_IDENTITIES_LOCK})")


# --- API keys ---------------------------------------------------------------------------------------------

_KEY_COLUMNS = (
    api_keys.c.key_id,
    api_keys.c.identity_id,
    api_keys.c.label,
    api_keys.c.created_at,
    api_keys.c.last_used_at,
    api_keys.c.revoked_at,
)


def create_api_key(conn: Connection, identity_id: str, label: str = "") -> tuple[str, str]:
    """A new key for an existing identity: ``(key_id, plaintext)``. The plaintext is not stored anywhere."""
    label = _text(label, "label", MAX_LABEL)
    get_identity(conn, identity_id)
    key_id = new_id("key")
    secret = secrets.token_hex(32)
    conn.execute(
        insert(api_keys).values(
            key_id=key_id,
            identity_id=identity_id,
            key_hash=hash_secret(secret),
            label=label,
            created_at=utcnow(),
            last_used_at=None,
            revoked_at=None,
        )
    )
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}"


def verify_api_key(
    conn: Connection, plaintext: Any, *, touch: bool = True, now: datetime | None = None
) -> dict[str, Any] | None:
    """The identity a key belongs to, or None when the key is malformed, unknown, wrong, revoked, or its
    identity is disabled.

    The answer is the identity's row plus ``key_id`` and ``key_last_used_at`` (the key's previous use).
    ``touch`` records this use as ``last_used_at`` (a write); pass ``touch=False`` inside a read.
    """
    parsed = parse_api_key(plaintext)
    if parsed is None:
        return None
    key_id, secret = parsed
    query = (
        select(
            identities,
            api_keys.c.key_id,
            api_keys.c.key_hash,
            api_keys.c.revoked_at,
            api_keys.c.last_used_at.label("key_last_used_at"),
        )
        .join_from(api_keys, identities, api_keys.c.identity_id == identities.c.identity_id)
        .where(api_keys.c.key_id == key_id)
    )
    row = conn.execute(query).mappings().first()
    if row is None:
        return None
    if not hmac.compare_digest(row["key_hash"], hash_secret(secret)):
        return None
    if row["revoked_at"] is not None or row["disabled"]:
        return None
    if touch:
        touch_api_key(conn, key_id, now=now)
    return {k: v for k, v in row.items() if k not in ("key_hash", "revoked_at")}


def touch_api_key(conn: Connection, key_id: str, *, now: datetime | None = None) -> None:
    conn.execute(update(api_keys).where(api_keys.c.key_id == key_id).values(last_used_at=now or utcnow()))


def get_api_key(conn: Connection, key_id: str) -> RowMapping:
    """A key's row without its hash; ``NotFound`` for an unknown key id."""
    row = conn.execute(select(*_KEY_COLUMNS).where(api_keys.c.key_id == key_id)).mappings().first()
    if row is None:
        raise NotFound(f"API key {key_id!r} does not exist", key_id=key_id)
    return row


def list_api_keys(conn: Connection, identity_id: str | None = None) -> list[RowMapping]:
    """Keys (never their hashes), oldest first; only ``identity_id``'s when given."""
    query = select(*_KEY_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.key_id)
    if identity_id is not None:
        get_identity(conn, identity_id)
        query = query.where(api_keys.c.identity_id == identity_id)
    return list(conn.execute(query).mappings())


def revoke_api_key(conn: Connection, key_id: str, *, now: datetime | None = None) -> RowMapping:
    """Revoke a key for good and end the sessions signed in with it. Revoking twice changes nothing."""
    row = get_api_key(conn, key_id)
    if row["revoked_at"] is None:
        conn.execute(
            update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now or utcnow())
        )
    conn.execute(delete(sessions).where(sessions.c.key_id == key_id))
    return get_api_key(conn, key_id)


# --- sessions ---------------------------------------------------------------------------------------------


def create_session(
    conn: Connection,
    identity_id: str,
    ttl_seconds: int,
    *,
    key_id: str | None = None,
    now: datetime | None = None,
) -> tuple[str, str]:
    """A dashboard session: ``(cookie_value, csrf_token)``. Only the cookie's hash is stored."""
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
        raise InvalidInput("ttl_seconds", f"must be a positive number of seconds, got {ttl_seconds!r}")
    get_identity(conn, identity_id)
    if key_id is not None:
        key = get_api_key(conn, key_id)
        if key["identity_id"] != identity_id:
            raise InvalidInput("key_id", f"key {key_id!r} does not belong to identity {identity_id!r}")
    now = now or utcnow()
    cookie_value = secrets.token_urlsafe(32)
    csrf_token = secrets.token_urlsafe(32)
    conn.execute(
        insert(sessions).values(
            session_id_hash=hash_secret(cookie_value),
            identity_id=identity_id,
            key_id=key_id,
            csrf_token=csrf_token,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
    )
    return cookie_value, csrf_token


def get_session(conn: Connection, cookie_value: Any, *, now: datetime | None = None) -> RowMapping | None:
    """The live session a cookie names, or None (unknown, expired, key revoked, identity disabled).

    The row has the session's columns plus the identity's ``display_name``, ``roles`` and ``disabled``.
    """
    if not isinstance(cookie_value, str) or not cookie_value or len(cookie_value) > MAX_COOKIE:
        return None
    try:
        session_hash = hash_secret(cookie_value)
    except UnicodeEncodeError:  # not one of ours
        return None
    query = (
        select(
            sessions,
            identities.c.display_name,
            identities.c.roles,
            identities.c.disabled,
            api_keys.c.revoked_at.label("key_revoked_at"),
        )
        .join_from(sessions, identities, sessions.c.identity_id == identities.c.identity_id)
        .outerjoin(api_keys, sessions.c.key_id == api_keys.c.key_id)
        .where(sessions.c.session_id_hash == session_hash)
    )
    row = conn.execute(query).mappings().first()
    if row is None or row["disabled"] or row["key_revoked_at"] is not None:
        return None
    if row["expires_at"] <= (now or utcnow()):
        return None
    return row


def delete_session(conn: Connection, cookie_value: Any) -> bool:
    """End a session (sign out); True when there was one."""
    if not isinstance(cookie_value, str) or not cookie_value or len(cookie_value) > MAX_COOKIE:
        return False
    try:
        session_hash = hash_secret(cookie_value)
    except UnicodeEncodeError:
        return False
    result = conn.execute(delete(sessions).where(sessions.c.session_id_hash == session_hash))
    return bool(result.rowcount)


def delete_expired_sessions(conn: Connection, *, now: datetime | None = None) -> int:
    """Remove sessions past their expiry (for the maintenance sweep); how many were removed."""
    result = conn.execute(delete(sessions).where(sessions.c.expires_at <= (now or utcnow())))
    return int(result.rowcount or 0)
