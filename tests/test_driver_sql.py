"""``storage.driver_sql`` writes what a Core INSERT writes: the same stored values (JSON, UTC timestamps,
bytes) on both databases, the same conflict behaviour, and the statements stay visible to the engine's
listeners (the hot path's statement counts rely on them)."""

from __future__ import annotations

from sqlalchemy import event, insert, select

from saferun.storage.database import Database
from saferun.storage.driver_sql import Insert, KeyLookup
from saferun.storage.schema import artifacts, blobs, lg_checkpoints, utcnow


def test_rows_are_stored_as_core_stores_them(db: Database) -> None:
    now = utcnow()
    row = {
        "artifact_type": "report",
        "metadata": {"a": [1, "é", None], "b": {"c": 1.5}},
        "raw_size": 10,
        "compressed_size": 5,
        "created_at": now,
    }
    with db.transaction() as conn:
        conn.execute(insert(artifacts), {"uri": "sr://core", **row})
        Insert(artifacts, ["uri"]).execute(conn, [{"uri": "sr://text", **row}])
    with db.read() as conn:
        core, text = conn.execute(select(artifacts).order_by(artifacts.c.uri)).mappings().all()
        raw = conn.exec_driver_sql("select metadata, created_at from artifacts order by uri").all()
    assert {k: v for k, v in core.items() if k != "uri"} == {k: v for k, v in text.items() if k != "uri"}
    assert text["created_at"] == now
    assert raw[0] == raw[1]  # the same stored representation, not only the same value read back


def test_conflicts_returning_and_lookups(db: Database) -> None:
    def blob(key: str, data: bytes) -> dict[str, object]:
        size = len(data)
        sizes = {"raw_size": size, "stored_size": size}
        return {"sha256": key, "kind": "chunk", "codec": "raw", **sizes, "data": data, "created_at": utcnow()}

    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    inserter = Insert(blobs, ["sha256"], returning="sha256")
    with db.transaction() as conn:
        assert sorted(inserter.execute(conn, [blob("k1", b"x"), blob("k2", b"y")])) == ["k1", "k2"]
        assert inserter.execute(conn, [blob("k1", b"other"), blob("k3", b"z")]) == ["k3"]  # k1 kept
        many = [blob(f"m{i:03}", bytes([i % 256])) for i in range(250)]  # more than one RETURNING batch
        assert len(inserter.execute(conn, many)) == 250
    with db.read() as conn:
        found = KeyLookup("blobs", "sha256", ["sha256", "data"]).rows(conn, ["k1", "k3", "nope"] * 400)
    assert sorted((k, bytes(d)) for k, d in found) == [("k1", b"x"), ("k3", b"z")]
    assert any(s.startswith("INSERT INTO blobs") for s in statements)
    assert any(s.startswith("SELECT sha256, data FROM blobs") for s in statements)


def test_an_upsert_replaces_every_column_but_the_key(db: Database) -> None:
    upsert = Insert(lg_checkpoints, ("thread_id", "checkpoint_ns", "checkpoint_id"), update=True)
    base = {
        "thread_id": "t",
        "checkpoint_ns": "",
        "checkpoint_id": "c1",
        "parent_checkpoint_id": None,
        "run_id": "r1",
        "checkpoint_type": "msgpack",
        "metadata_type": "msgpack",
        "metadata": b"m",
    }
    with db.transaction() as conn:
        upsert.execute(conn, [{**base, "checkpoint": b"first"}])
        upsert.execute(conn, [{**base, "checkpoint": b"second", "run_id": "r2"}])
    with db.read() as conn:
        rows = conn.execute(select(lg_checkpoints.c.checkpoint, lg_checkpoints.c.run_id)).all()
    assert [(bytes(c), r) for c, r in rows] == [(b"second", "r2")]
