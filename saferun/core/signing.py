"""The server's Ed25519 keys, which sign exported decision records (``saferun export``).

Why keys live in the database by default: every replica behind one database must sign with a key a
third party can check against one published list, with no setup on a fresh machine. Teams that keep
private keys out of the database set ``SAFERUN_SIGNING_KEY_FILE`` (a PKCS#8 PEM file, e.g. a Kubernetes
Secret): that key signs and only its public half is stored. Rotation adds a key and retires the old
one; retired keys stay published so bundles signed with them still verify.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, select, update

from saferun.errors import InvalidInput
from saferun.storage.database import Database
from saferun.storage.schema import signing_keys, utcnow

ALGORITHM = "Ed25519"


def key_id_of(public_raw: bytes) -> str:
    """A key's id: the first 32 hex characters of the sha256 of its raw 32-byte public key."""
    return hashlib.sha256(public_raw).hexdigest()[:32]


@dataclass(frozen=True)
class PublicKey:
    key_id: str
    public_key: bytes  # raw 32 bytes
    created_at: datetime | None = None
    retired_at: datetime | None = None

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "algorithm": ALGORITHM,
            "public_key": self.public_key.hex(),
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "retired_at": self.retired_at.isoformat() if self.retired_at else None,
        }


@dataclass(frozen=True)
class Signer:
    key_id: str
    private: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def public_keys_from(doc: Any) -> dict[str, PublicKey]:
    """Trusted keys from what ``GET /api/signing-keys`` answers (or a list of its ``keys``), so a third
    party can save that answer once and verify bundles offline with it."""
    items = doc.get("keys") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise InvalidInput("keys", "expected {'keys': [...]} as GET /api/signing-keys answers")
    out: dict[str, PublicKey] = {}
    for i, item in enumerate(items):
        try:
            raw = bytes.fromhex(item["public_key"])
        except (TypeError, KeyError, ValueError):
            raise InvalidInput(f"keys[{i}].public_key", "expected 64 hex characters") from None
        if len(raw) != 32 or item.get("key_id") != key_id_of(raw):
            raise InvalidInput(f"keys[{i}]", "key_id is not the hash of public_key")
        out[item["key_id"]] = PublicKey(item["key_id"], raw)
    return out


class KeyRing:
    """The signing key of this deployment and every public key it ever published."""

    def __init__(self, db: Database, key_file: Path | None = None) -> None:
        self.db = db
        self.key_file = key_file

    def signer(self) -> Signer:
        """The key that signs now: the key file's, else the newest unretired key in the database (one is
        made on first use)."""
        if self.key_file is not None:
            private = _load_pem(self.key_file)
            signer = Signer(key_id_of(_raw_public(private)), private)
            with self.db.transaction() as conn:
                _publish(conn, signer.key_id, signer.public_key, None)
            return signer
        with self.db.transaction() as conn:
            row = _active(conn)
            if row is None:
                return _create(conn)
        private = serialization.load_pem_private_key(row.private_key.encode(), password=None)
        assert isinstance(private, Ed25519PrivateKey)
        return Signer(row.key_id, private)

    def rotate(self) -> PublicKey:
        """A new database key signs from now on; every older key is retired but stays published."""
        if self.key_file is not None:
            raise InvalidInput(
                "SAFERUN_SIGNING_KEY_FILE", "the key comes from a file: replace the file to rotate"
            )
        with self.db.transaction() as conn:
            now = utcnow()
            conn.execute(
                update(signing_keys).where(signing_keys.c.retired_at.is_(None)).values(retired_at=now)
            )
            signer = _create(conn)
        return PublicKey(signer.key_id, signer.public_key, now)

    def public_keys(self) -> list[PublicKey]:
        with self.db.transaction() as conn:
            rows = conn.execute(
                select(signing_keys).order_by(signing_keys.c.created_at, signing_keys.c.key_id)
            )
            return [
                PublicKey(r.key_id, bytes.fromhex(r.public_key), r.created_at, r.retired_at) for r in rows
            ]


def _active(conn: Connection) -> Any:
    return conn.execute(
        select(signing_keys)
        .where(signing_keys.c.retired_at.is_(None), signing_keys.c.private_key.is_not(None))
        .order_by(signing_keys.c.created_at.desc(), signing_keys.c.key_id)
        .limit(1)
    ).first()


def _create(conn: Connection) -> Signer:
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    signer = Signer(key_id_of(_raw_public(private)), private)
    _publish(conn, signer.key_id, signer.public_key, pem)
    return signer


def _publish(conn: Connection, key_id: str, public_raw: bytes, pem: str | None) -> None:
    exists = conn.execute(select(signing_keys.c.key_id).where(signing_keys.c.key_id == key_id)).first()
    if exists is None:
        conn.execute(
            signing_keys.insert().values(
                key_id=key_id,
                algorithm=ALGORITHM,
                public_key=public_raw.hex(),
                private_key=pem,
                created_at=utcnow(),
            )
        )


def _raw_public(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _load_pem(path: Path) -> Ed25519PrivateKey:
    try:
        private = serialization.load_pem_private_key(path.expanduser().read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidInput(
            "SAFERUN_SIGNING_KEY_FILE", f"cannot load a PEM private key from {path}: {exc}"
        ) from None
    if not isinstance(private, Ed25519PrivateKey):
        raise InvalidInput(
            "SAFERUN_SIGNING_KEY_FILE", f"{path} holds a {type(private).__name__}, not an Ed25519 key"
        )
    return private
