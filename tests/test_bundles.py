"""Signed decision records (issue 16, item 5): export a workflow, verify it offline, find every altered byte.

Exports run on SQLite and PostgreSQL; verification always runs on a scratch SQLite store, so a bundle
exported from PostgreSQL is checked by the same code as one from SQLite.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update

from saferun.core.bundles import BundleError, export_bundle, verify_bundle
from saferun.core.signing import KeyRing, public_keys_from
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.canonical import canonical_bytes, canonical_loads
from saferun.errors import AuditChainBroken, InvalidInput, WorkflowNotFound
from saferun.storage.database import Database
from saferun.storage.schema import approval_responses
from tests.helpers import decide, pause, started


async def _workflow(orch: WorkflowOrchestrator) -> str:
    wf = started(orch)
    orch.register_step(wf, "order", "cancel_order", {"id": 1})
    decide(
        orch,
        await pause(orch, wf, "cp1", {"n": 857}, agent_memory={"notes": ["a"] * 50}),
        "MODIFIED",
        modifications={"n": 10},
    )
    decide(orch, await pause(orch, wf, "cp2", agent_memory={"notes": ["a"] * 51}), "APPROVED")
    orch.settle_workflow(wf, {"done": True})
    orch.complete_workflow(wf)
    return wf


def _trusted(keys: KeyRing) -> dict:  # type: ignore[type-arg]
    return {k.key_id: k for k in keys.public_keys()}


async def test_an_exported_workflow_verifies_offline_and_says_what_it_holds(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = await _workflow(orch)
    keys = KeyRing(db)
    bundle = export_bundle(db, keys, wf)
    report = verify_bundle(bundle, _trusted(keys))
    assert (report.workflow_id, report.decisions, report.artifacts) == (wf, 2, 3)
    assert report.events == len(orch.audit_events(wf)) and report.postings >= 3
    decisions = report.summary["decisions"]
    assert [d["decision"] for d in decisions] == ["MODIFIED", "APPROVED"]
    assert all(d["approved_by"] == "reviewer" and d["response_sha256"] and d["decided_at"] for d in decisions)
    assert report.summary["audit"]["head_hash"] == report.summary["audit"]["anchor_hash"]
    # the same keys as a third party gets them from GET /api/signing-keys
    published = {"keys": [k.as_dict() for k in keys.public_keys()]}
    assert verify_bundle(bundle, public_keys_from(published)).workflow_id == wf


async def test_every_flipped_byte_of_a_bundle_is_detected(sqlite_db: Database) -> None:
    """Each byte flipped in turn (a stride through the file in CI; every byte with BUNDLE_FLIP_ALL=1)."""
    orch = WorkflowOrchestrator(database=sqlite_db)
    wf = started(orch)
    decide(orch, await pause(orch, wf, "cp1"), "APPROVED")
    keys = KeyRing(sqlite_db)
    bundle = export_bundle(sqlite_db, keys, wf)
    trusted = _trusted(keys)
    verify_bundle(bundle, trusted)
    stride = 1 if os.environ.get("BUNDLE_FLIP_ALL") else 13
    signature_at = bundle.index(b'"signature"')
    positions = sorted(set(range(0, len(bundle), stride)) | set(range(signature_at, len(bundle))))
    for i in positions:
        flipped = bytearray(bundle)
        flipped[i] ^= 0x01
        with pytest.raises(BundleError):
            verify_bundle(bytes(flipped), trusted)


async def test_a_forged_store_is_not_signed_and_a_forgery_signed_with_the_real_key_is_caught(
    sqlite_db: Database,
) -> None:
    orch = WorkflowOrchestrator(database=sqlite_db)
    wf = await _workflow(orch)
    keys = KeyRing(sqlite_db)
    bundle = export_bundle(sqlite_db, keys, wf)
    trusted = _trusted(keys)
    # whoever holds the signing key still cannot make forged rows verify: the chain and bindings catch them
    doc = canonical_loads(bundle)
    doc["body"]["tables"]["approval_responses"][0]["modifications"] = {"n": 11}
    doc["signature"]["value"] = base64.b64encode(keys.signer().sign(canonical_bytes(doc["body"]))).decode()
    with pytest.raises(BundleError, match="audit chain broken"):
        verify_bundle(canonical_bytes(doc), trusted)
    # a forged decision in the store: the server refuses to sign it at all
    with sqlite_db.transaction() as conn:
        conn.execute(
            update(approval_responses)
            .values(rationale="forged")
            .where(approval_responses.c.decision == "MODIFIED")
        )
    with pytest.raises(AuditChainBroken):
        export_bundle(sqlite_db, keys, wf)


async def test_a_bundle_signed_by_an_unknown_key_is_refused(sqlite_db: Database, tmp_path: Path) -> None:
    orch = WorkflowOrchestrator(database=sqlite_db)
    await _workflow(orch)
    keys = KeyRing(sqlite_db)
    keys.signer()
    other = Database(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        wf2 = await _workflow(WorkflowOrchestrator(database=other))
        with pytest.raises(BundleError, match="unknown key"):
            verify_bundle(export_bundle(other, KeyRing(other), wf2), _trusted(keys))
    finally:
        other.dispose()


async def test_changed_rows_re_signed_by_an_attacker_with_their_own_key_name_the_key(
    sqlite_db: Database,
) -> None:
    orch = WorkflowOrchestrator(database=sqlite_db)
    wf = await _workflow(orch)
    keys = KeyRing(sqlite_db)
    doc = canonical_loads(export_bundle(sqlite_db, keys, wf))
    doc["body"]["tables"]["approval_responses"][0]["rationale"] = "forged"
    attacker = Ed25519PrivateKey.generate()
    doc["signature"]["value"] = base64.b64encode(attacker.sign(canonical_bytes(doc["body"]))).decode()
    with pytest.raises(BundleError, match="signature does not match"):
        verify_bundle(canonical_bytes(doc), _trusted(keys))


async def test_rotation_keeps_old_bundles_verifiable(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = await _workflow(orch)
    keys = KeyRing(db)
    before = export_bundle(db, keys, wf)
    old_id = keys.signer().key_id
    new = keys.rotate()
    assert new.key_id != old_id and keys.signer().key_id == new.key_id
    after = export_bundle(db, keys, wf)
    trusted = _trusted(keys)
    assert [k.retired_at is not None for k in keys.public_keys()] == [True, False]
    assert verify_bundle(before, trusted).key_id == old_id
    assert verify_bundle(after, trusted).key_id == new.key_id


async def test_a_key_file_signs_and_only_its_public_half_is_stored(
    sqlite_db: Database, tmp_path: Path
) -> None:
    private = Ed25519PrivateKey.generate()
    pem = tmp_path / "signing.pem"
    pem.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    orch = WorkflowOrchestrator(database=sqlite_db)
    wf = await _workflow(orch)
    keys = KeyRing(sqlite_db, key_file=pem)
    bundle = export_bundle(sqlite_db, keys, wf)
    assert verify_bundle(bundle, _trusted(keys)).key_id == keys.signer().key_id
    with sqlite_db.transaction() as conn:
        assert conn.exec_driver_sql("SELECT private_key FROM signing_keys").scalar_one() is None
    with pytest.raises(InvalidInput, match="SAFERUN_SIGNING_KEY_FILE"):
        keys.rotate()
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(InvalidInput, match="SAFERUN_SIGNING_KEY_FILE"):
        KeyRing(sqlite_db, key_file=tmp_path / "bad.pem").signer()


def test_unknown_workflow_and_malformed_trusted_keys_are_clear_errors(sqlite_db: Database) -> None:
    with pytest.raises(WorkflowNotFound):
        export_bundle(sqlite_db, KeyRing(sqlite_db), "wf_missing")
    with pytest.raises(InvalidInput, match="keys"):
        public_keys_from({"nope": 1})
    with pytest.raises(InvalidInput, match=r"keys\[0\]"):
        public_keys_from({"keys": [{"key_id": "x", "public_key": "00" * 32}]})
    for junk in (b"", b"{}", b"[1,2]", b'{"body":{},"signature":{}}'):
        with pytest.raises(BundleError):
            verify_bundle(junk, {})


async def test_over_http_a_visible_caller_exports_and_a_third_party_verifies_with_the_published_keys(
    db: Database, tmp_path: Path
) -> None:
    """The Python SDK against a real server: export, fetch the public keys, verify with nothing else; the
    CLI's `saferun verify --keys` does the same from files."""
    from typer.testing import CliRunner

    from saferun.cli.main import app as cli
    from saferun.client import SafeRunClient
    from tests.test_client import serving

    orch = WorkflowOrchestrator(database=db)
    wf = await _workflow(orch)
    with serving(db, auth="open") as url, SafeRunClient(url) as client:
        bundle = client.export_bundle(wf)
        published = client.signing_keys()
        missing = httpx.get(f"{url}/api/workflows/wf_never/export")
    assert missing.status_code == 404
    assert verify_bundle(bundle, public_keys_from(published)).workflow_id == wf
    (tmp_path / "b.json").write_bytes(bundle)
    (tmp_path / "keys.json").write_text(__import__("json").dumps(published))
    runner = CliRunner()
    ok = runner.invoke(cli, ["verify", str(tmp_path / "b.json"), "--keys", str(tmp_path / "keys.json")])
    assert ok.exit_code == 0 and f"OK: {tmp_path / 'b.json'} is workflow {wf}" in ok.output.replace("\n", "")
    flipped = bytearray(bundle)
    flipped[len(flipped) // 2] ^= 0x01
    (tmp_path / "bad.json").write_bytes(bytes(flipped))
    bad = runner.invoke(cli, ["verify", str(tmp_path / "bad.json"), "--keys", str(tmp_path / "keys.json")])
    assert bad.exit_code == 1 and "INVALID" in bad.output


def test_the_cli_exports_lists_and_rotates_keys(sqlite_db: Database, tmp_path: Path) -> None:
    import asyncio

    from typer.testing import CliRunner

    from saferun.cli.main import app as cli

    orch = WorkflowOrchestrator(database=sqlite_db)
    wf = asyncio.run(_workflow(orch))
    url = sqlite_db.engine.url.render_as_string(hide_password=False)
    runner = CliRunner()
    out = tmp_path / "wf.bundle.json"
    exported = runner.invoke(cli, ["--database-url", url, "export", wf, "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    verified = runner.invoke(cli, ["--database-url", url, "verify", str(out)])
    assert verified.exit_code == 0 and "OK:" in verified.output, verified.output
    assert runner.invoke(cli, ["--database-url", url, "keys", "rotate"]).exit_code == 0
    listed = runner.invoke(cli, ["--database-url", url, "keys", "list"])
    assert listed.output.count("retired") == 1 and listed.output.count("active") == 1
    assert (
        runner.invoke(cli, ["--database-url", url, "verify", str(out)]).exit_code == 0
    )  # old key still trusted
    unknown = runner.invoke(cli, ["--database-url", url, "export", "wf_never"])
    assert unknown.exit_code == 1 and "wf_never" in unknown.output
