"""Identities, API keys and sessions on both stores, and the ``saferun identities`` command."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from saferun.cli.main import app
from saferun.core.identity import DEMO_IDENTITIES, IdentityService, ensure_demo_identities
from saferun.domain.policy import Caller, Role
from saferun.errors import Conflict, InvalidInput, NotFound
from saferun.storage import identities as store
from saferun.storage.database import Database
from saferun.storage.schema import api_keys, identities, sessions, utcnow

runner = CliRunner()


def all_cells(db: Database) -> str:
    """Every value of the identity tables, as one string to search."""
    with db.read() as conn:
        rows = [dict(r) for t in (identities, api_keys, sessions) for r in conn.execute(select(t)).mappings()]
    return json.dumps(rows, default=str)


def test_create_get_list_and_set_roles(db: Database) -> None:
    svc = IdentityService(db)
    alice = svc.create_identity("human_789", "Alice", ["supervisor", "verifier"])
    assert alice.identity_id == "human_789" and alice.display_name == "Alice"
    assert alice.roles == {Role.SUPERVISOR, Role.VERIFIER} and not alice.disabled
    assert alice.created_at.tzinfo is not None
    generated = svc.create_identity(None, roles=[Role.POSTER])
    assert generated.identity_id.startswith("id_") and generated.display_name == generated.identity_id
    assert [i.identity_id for i in svc.list_identities()] == ["human_789", generated.identity_id]
    assert svc.get_identity("human_789") == alice
    assert svc.set_roles("human_789", ["admin"]).roles == {Role.ADMIN}
    assert svc.get_identity("human_789").roles == {Role.ADMIN}
    with db.read() as conn:  # stored as a sorted list of names
        assert conn.execute(
            select(identities.c.roles).where(identities.c.identity_id == "human_789")
        ).scalar() == ["admin"]


def test_bad_input_names_the_field(db: Database) -> None:
    svc = IdentityService(db)
    svc.create_identity("bob")
    cases: list[tuple[Any, str]] = [
        (lambda: svc.create_identity("", "x"), "identity_id"),
        (lambda: svc.create_identity("has space"), "identity_id"),
        (lambda: svc.create_identity("saferun:timeout"), "identity_id"),
        (lambda: svc.create_identity("x" * 201), "identity_id"),
        (lambda: svc.create_identity("carol", roles=["king"]), "roles"),
        (lambda: svc.create_identity("carol", "a\x00b"), "display_name"),
        (lambda: svc.create_identity("carol", "n" * 501), "display_name"),
        (lambda: svc.set_roles("bob", ["supervisor", "boss"]), "roles"),
        (lambda: svc.create_api_key("bob", "l" * 201), "label"),
        (lambda: svc.create_session("bob", 0), "ttl_seconds"),
        (lambda: svc.create_session("bob", -5), "ttl_seconds"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidInput) as err:
            call()
        assert err.value.field == field
    assert [i.identity_id for i in svc.list_identities()] == ["bob"]  # nothing half-written
    with pytest.raises(Conflict):
        svc.create_identity("bob")
    for call in (
        lambda: svc.get_identity("nobody"),
        lambda: svc.set_roles("nobody", []),
        lambda: svc.create_api_key("nobody"),
        lambda: svc.revoke_api_key("key_0000000000000000"),
        lambda: svc.create_session("nobody", 60),
    ):
        with pytest.raises(NotFound) as nf:
            call()
        assert "does not exist" in nf.value.message


def test_keys_are_stored_hashed_and_verified(db: Database) -> None:
    svc = IdentityService(db)
    _, key = svc.create_identity_with_key("alice", "Alice", ["supervisor"])
    plaintext = key.api_key
    prefix, _, secret = plaintext.rpartition("_")
    assert prefix == f"sr_{key.key_id}" and len(secret) == 64
    # the plaintext and the secret appear nowhere; only the secret's SHA-256 does
    cells = all_cells(db)
    assert plaintext not in cells and secret not in cells
    assert store.hash_secret(secret) in cells

    caller = svc.caller_for_key(plaintext)
    assert caller == Caller("alice", frozenset({Role.SUPERVISOR}), authenticated=True)
    assert svc.caller_for_key(f"  {plaintext}\n") == caller  # pasted with whitespace

    wrong_secret = f"sr_{key.key_id}_{'0' * 64}"
    unknown_id = f"sr_key_{'0' * 16}_{secret}"
    malformed = [
        "",
        "sr_",
        secret,
        plaintext[:-1],
        plaintext + "0",
        plaintext.upper(),
        plaintext.replace("sr_", "xx_"),
        f"Bearer {plaintext}",
        "sr_key_zz_" + secret,
        "sr_key_ünïcödé_" + secret,
        None,
        12,
        b"bytes",
    ]
    for bad in (wrong_secret, unknown_id, *malformed):
        assert svc.caller_for_key(bad) is None, bad


def test_last_used_is_recorded(db: Database) -> None:
    svc = IdentityService(db)
    _, key = svc.create_identity_with_key("alice", roles=["supervisor"])
    assert svc.list_api_keys("alice")[0].last_used_at is None
    assert svc.caller_for_key(key.api_key) is not None
    first = svc.list_api_keys("alice")[0].last_used_at
    assert first is not None
    svc.caller_for_key(key.api_key)  # within a minute: no write
    assert svc.list_api_keys("alice")[0].last_used_at == first
    with db.transaction() as conn:  # the storage function records every use when asked to
        later = utcnow() + timedelta(minutes=5)
        row = store.verify_api_key(conn, key.api_key, now=later)
        assert row is not None and row["identity_id"] == "alice" and "key_hash" not in row
    assert svc.list_api_keys("alice")[0].last_used_at == later


def test_revoked_keys_and_disabled_identities_are_refused(db: Database) -> None:
    svc = IdentityService(db)
    _, first = svc.create_identity_with_key("alice", roles=["supervisor"])
    second = svc.create_api_key("alice", "laptop")
    assert svc.caller_for_key(first.api_key) and svc.caller_for_key(second.api_key)

    revoked = svc.revoke_api_key(first.key_id)
    assert revoked.revoked_at is not None and not revoked.active
    assert svc.caller_for_key(first.api_key) is None
    assert svc.caller_for_key(second.api_key) is not None  # other keys keep working
    assert svc.revoke_api_key(first.key_id).revoked_at == revoked.revoked_at  # revoking twice: no change

    svc.set_disabled("alice", True)
    assert svc.caller_for_key(second.api_key) is None
    svc.set_disabled("alice", False)
    assert svc.caller_for_key(second.api_key) is not None
    assert svc.caller_for_key(first.api_key) is None  # enabling does not bring revoked keys back
    assert [(k.key_id, k.label, k.active) for k in svc.list_api_keys("alice")] == [
        (first.key_id, "initial", False),
        (second.key_id, "laptop", True),
    ]


def test_sessions_are_hashed_expire_and_end(db: Database) -> None:
    svc = IdentityService(db)
    _, key = svc.create_identity_with_key("alice", roles=["supervisor"])
    cookie, csrf = svc.create_session("alice", 3600, key_id=key.key_id)
    assert cookie != csrf and len(cookie) >= 40 and len(csrf) >= 40
    cells = all_cells(db)
    assert cookie not in cells and store.hash_secret(cookie) in cells

    info = svc.session(cookie)
    assert info is not None
    assert info.caller == Caller("alice", frozenset({Role.SUPERVISOR}), authenticated=True)
    assert info.csrf_token == csrf and info.key_id == key.key_id
    assert info.expires_at - utcnow() <= timedelta(seconds=3600)
    for bad in ("", "nope", csrf, cookie + "x", "é" * 10, "x" * 5000, None, 3):
        assert svc.session(bad) is None

    with db.read() as conn:  # expiry: alive just before, gone at expires_at
        assert store.get_session(conn, cookie, now=info.expires_at - timedelta(seconds=1)) is not None
        assert store.get_session(conn, cookie, now=info.expires_at) is None
    with db.transaction() as conn:
        assert store.delete_expired_sessions(conn, now=info.expires_at - timedelta(seconds=1)) == 0
    short, _ = svc.create_session("alice", 1)
    with db.transaction() as conn:
        assert store.delete_expired_sessions(conn, now=utcnow() + timedelta(seconds=2)) == 1
    assert svc.session(short) is None and svc.session(cookie) is not None

    svc.set_disabled("alice", True)  # a disabled identity's sessions stop working
    assert svc.session(cookie) is None
    svc.set_disabled("alice", False)
    assert svc.session(cookie) is not None

    assert svc.delete_session(cookie) is True  # sign out
    assert svc.session(cookie) is None and svc.delete_session(cookie) is False


def test_revoking_a_key_ends_its_sessions(db: Database) -> None:
    svc = IdentityService(db)
    _, key = svc.create_identity_with_key("alice", roles=["supervisor"])
    other = svc.create_api_key("alice")
    by_key, _ = svc.create_session("alice", 3600, key_id=key.key_id)
    by_other, _ = svc.create_session("alice", 3600, key_id=other.key_id)
    svc.revoke_api_key(key.key_id)
    assert svc.session(by_key) is None and svc.session(by_other) is not None
    svc.create_identity("bob")
    with pytest.raises(InvalidInput) as err:
        svc.create_session("bob", 60, key_id=other.key_id)
    assert err.value.field == "key_id"


def test_demo_identities_are_created_once(db: Database) -> None:
    demo = ensure_demo_identities(db)
    assert [d.identity_id for d in demo] == ["demo_poster", "demo_executor", "demo_supervisor", "demo_admin"]
    assert [set(d.roles) for d in demo] == [{role} for _, _, role in DEMO_IDENTITIES]
    svc = IdentityService(db)
    for d in demo:
        caller = svc.caller_for_key(d.api_key)
        assert caller is not None and caller.identity_id == d.identity_id and caller.roles == d.roles
    assert ensure_demo_identities(db) == []
    assert len(svc.list_identities()) == 4 and len(svc.list_api_keys()) == 4


def test_demo_identities_once_across_concurrent_starts(db: Database) -> None:
    """Replicas starting together on a fresh database: exactly one creates the demo identities."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: ensure_demo_identities(db), range(4)))
    assert sorted(len(r) for r in results) == [0, 0, 0, 4]
    assert len(IdentityService(db).list_identities()) == 4


def test_no_demo_identities_once_anyone_exists(db: Database) -> None:
    IdentityService(db).create_identity("human_789", roles=["admin"])
    assert ensure_demo_identities(db) == []
    assert [i.identity_id for i in IdentityService(db).list_identities()] == ["human_789"]


# --- the CLI ------------------------------------------------------------------------------------------------


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def test_cli_create_list_key_revoke(database_env: Database) -> None:
    svc = IdentityService(database_env)
    out = cli(
        "identities",
        "create",
        "human_789",
        "--name",
        "Alice Reviewer",
        "--role",
        "supervisor",
        "--role",
        "verifier",
    )
    assert out.exit_code == 0, out.output
    assert "human_789" in out.output and "not be shown again" in out.output
    first_key = next(word for word in out.output.split() if word.startswith("sr_key_"))
    assert svc.caller_for_key(first_key) == Caller(
        "human_789", frozenset({Role.SUPERVISOR, Role.VERIFIER}), authenticated=True
    )

    listed = cli("identities", "list")
    assert listed.exit_code == 0, listed.output
    assert (
        "human_789" in listed.output and "Alice Reviewer" in listed.output and "supervisor" in listed.output
    )
    assert "sr_key_" not in listed.output and first_key not in listed.output

    second = cli("identities", "key", "human_789", "--label", "ci agent", "--json")
    assert second.exit_code == 0, second.output
    doc = json.loads(second.output)
    assert doc["identity_id"] == "human_789" and doc["api_key"].startswith(f"sr_{doc['key_id']}_")
    assert svc.caller_for_key(doc["api_key"]) is not None

    keys = cli("identities", "keys", "human_789")
    assert keys.exit_code == 0 and doc["key_id"] in keys.output and "ci agent" in keys.output
    assert first_key not in keys.output and doc["api_key"] not in keys.output

    revoked = cli("identities", "revoke", doc["key_id"])
    assert revoked.exit_code == 0 and "Revoked" in revoked.output
    assert svc.caller_for_key(doc["api_key"]) is None
    assert svc.caller_for_key(first_key) is not None

    listed = json.loads(cli("identities", "list", "--json").output)
    assert listed == [
        {
            "identity_id": "human_789",
            "display_name": "Alice Reviewer",
            "roles": ["supervisor", "verifier"],
            "groups": [],  # quorum groups and team (docs/quorum.md): none set
            "team": None,
            "disabled": False,
            "active_keys": 1,
            "created_at": listed[0]["created_at"],
        }
    ]

    assert cli("identities", "disable", "human_789").exit_code == 0
    assert svc.caller_for_key(first_key) is None
    assert cli("identities", "enable", "human_789").exit_code == 0
    assert cli("identities", "roles", "human_789", "--role", "admin").exit_code == 0
    assert svc.caller_for_key(first_key) == Caller("human_789", frozenset({Role.ADMIN}), authenticated=True)


def test_cli_generates_ids_and_reports_errors_cleanly(database_env: Database) -> None:
    out = cli("identities", "create", "--role", "poster", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["identity_id"].startswith("id_")
    assert cli("identities", "list").exit_code == 0
    for args, expected in (
        (("identities", "create", json.loads(out.output)["identity_id"]), "already exists"),
        (("identities", "create", "bad id"), "identity_id"),
        (("identities", "key", "nobody"), "does not exist"),
        (("identities", "revoke", "key_nope"), "does not exist"),
    ):
        res = cli(*args)
        assert res.exit_code == 1, (args, res.output)
        assert expected in res.output and "Traceback" not in res.output, args
    assert cli("identities", "create", "carol", "--role", "king").exit_code == 2  # a usage error


def test_cli_list_when_empty(database_env: Database) -> None:
    out = cli("identities", "list")
    assert out.exit_code == 0 and "No identities yet" in out.output
