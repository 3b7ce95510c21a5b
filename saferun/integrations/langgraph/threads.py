"""Thread maintenance for ``SafeRunSaver``: delete, copy and prune threads, and free what they stored.

LangGraph's extended capabilities (``delete_for_runs``, ``copy_thread``, ``prune``), which neither of its
own SQLite and in-memory savers offers, plus ``collect_garbage``. They change rows only; the artifacts the
rows pointed at are content-addressed and may be shared, so freeing them is the store's garbage
collection (``saferun.storage.gc``), run here on demand or by ``saferun gc``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, select

from saferun.errors import ArtifactNotFound, InvalidInput
from saferun.integrations.langgraph.statements import decode_checkpoint
from saferun.storage import gc
from saferun.storage.artifacts import parse_uri
from saferun.storage.database import Database
from saferun.storage.schema import blobs, lg_blobs, lg_checkpoints, lg_writes


class ThreadMaintenance:
    """Mixed into ``SafeRunSaver`` ahead of LangGraph's base class, so these methods are the ones that run
    (the base class only declares them, for savers that have them)."""

    db: Database
    serde: Any
    _write_lock: contextlib.AbstractContextManager[Any]
    _slots: Any  # statements.SlotCache: this process's remembered blob rows, dropped for changed threads

    def delete_thread(self, thread_id: str) -> None:
        """Drop the thread's checkpoints, writes and channel-version rows. The artifacts they pointed at
        are content-addressed and may be shared: ``collect_garbage`` (or ``saferun gc``) frees the ones
        nothing refers to any more."""
        with self._write_lock, self.db.transaction() as conn:
            for table in (lg_writes, lg_blobs, lg_checkpoints):
                conn.execute(delete(table).where(table.c.thread_id == str(thread_id)))
        self._slots.forget({str(thread_id)})

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        run_ids = [str(r) for r in run_ids]
        if not run_ids:
            return
        with self._write_lock, self.db.transaction() as conn:
            doomed = conn.execute(
                select(
                    lg_checkpoints.c.thread_id, lg_checkpoints.c.checkpoint_ns, lg_checkpoints.c.checkpoint_id
                ).where(lg_checkpoints.c.run_id.in_(run_ids))
            ).all()
            self._delete_checkpoints(conn, [tuple(r) for r in doomed])
            self._drop_unreferenced_blobs(conn, {t for t, _, _ in doomed})
        self._slots.forget({t for t, _, _ in doomed})

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        source, target = str(source_thread_id), str(target_thread_id)
        with self._write_lock, self.db.transaction() as conn:
            for table in (lg_checkpoints, lg_blobs, lg_writes):
                rows = conn.execute(select(table).where(table.c.thread_id == source)).mappings().all()
                if table is lg_blobs:
                    _hold_artifacts(conn, {r["artifact_uri"] for r in rows if r["artifact_uri"]})
                copied = []
                for row in rows:
                    new = dict(row)
                    new["thread_id"] = target
                    if table is lg_checkpoints:
                        metadata = self.serde.loads_typed((row["metadata_type"], row["metadata"]))
                        if "thread_id" in metadata:
                            metadata["thread_id"] = target
                            new["metadata_type"], new["metadata"] = self.serde.dumps_typed(metadata)
                    copied.append(new)
                if copied:
                    conn.execute(delete(table).where(table.c.thread_id == target))
                    conn.execute(insert(table), copied)
        self._slots.forget({target})

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only each namespace's latest checkpoint of the threads (``keep_latest``) or delete them
        (``delete``). Rows only, as ``delete_thread``: storage is freed by ``collect_garbage``."""
        thread_ids = [str(t) for t in thread_ids]
        if strategy not in ("keep_latest", "delete"):
            raise InvalidInput("strategy", f"{strategy!r} is not one of 'keep_latest', 'delete'")
        if not thread_ids:
            return
        if strategy == "delete":
            for thread_id in thread_ids:
                self.delete_thread(thread_id)
            return
        with self._write_lock, self.db.transaction() as conn:
            rows = conn.execute(
                select(
                    lg_checkpoints.c.thread_id, lg_checkpoints.c.checkpoint_ns, lg_checkpoints.c.checkpoint_id
                )
                .where(lg_checkpoints.c.thread_id.in_(thread_ids))
                .order_by(lg_checkpoints.c.checkpoint_id.desc())
            ).all()
            latest: set[tuple[str, str]] = set()
            doomed = []
            for thread_id, ns, checkpoint_id in rows:
                if (thread_id, ns) in latest:
                    doomed.append((thread_id, ns, checkpoint_id))
                else:
                    latest.add((thread_id, ns))
            self._delete_checkpoints(conn, doomed)
            self._drop_unreferenced_blobs(conn, set(thread_ids))
        self._slots.forget(set(thread_ids))

    def collect_garbage(self, *, grace: timedelta = gc.DEFAULT_GRACE, dry_run: bool = False) -> gc.GcReport:
        """Delete the blobs and artifacts nothing refers to any more (after ``prune``, ``delete_thread``,
        ``delete_for_runs``), in the whole store: safe while other threads and processes write
        (``saferun.storage.gc``). Blobs younger than ``grace`` are kept."""
        return gc.collect(self.db, grace=grace, dry_run=dry_run)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)

    async def acollect_garbage(
        self, *, grace: timedelta = gc.DEFAULT_GRACE, dry_run: bool = False
    ) -> gc.GcReport:
        return await asyncio.to_thread(lambda: self.collect_garbage(grace=grace, dry_run=dry_run))

    def _delete_checkpoints(self, conn: Connection, keys: list[tuple[str, str, str]]) -> None:
        for thread_id, ns, checkpoint_id in keys:
            for table in (lg_writes, lg_checkpoints):
                conn.execute(
                    delete(table).where(
                        table.c.thread_id == thread_id,
                        table.c.checkpoint_ns == ns,
                        table.c.checkpoint_id == checkpoint_id,
                    )
                )

    def _drop_unreferenced_blobs(self, conn: Connection, thread_ids: set[str]) -> None:
        """Channel versions no remaining checkpoint of the thread refers to (the artifacts stay: they are
        content-addressed and may be shared)."""
        for thread_id in thread_ids:
            referenced: set[tuple[str, str, str]] = set()
            for row in conn.execute(
                select(
                    lg_checkpoints.c.checkpoint_ns,
                    lg_checkpoints.c.checkpoint_type,
                    lg_checkpoints.c.checkpoint,
                    lg_checkpoints.c.channel_versions,
                ).where(lg_checkpoints.c.thread_id == thread_id)
            ).mappings():
                ns = row["checkpoint_ns"]
                checkpoint = decode_checkpoint(self.serde, row, row["channel_versions"])
                for channel, version in checkpoint.get("channel_versions", {}).items():
                    referenced.add((ns, channel, str(version)))
            for ns, channel, version in conn.execute(
                select(lg_blobs.c.checkpoint_ns, lg_blobs.c.channel, lg_blobs.c.version).where(
                    lg_blobs.c.thread_id == thread_id
                )
            ).all():
                if (ns, channel, version) not in referenced:
                    conn.execute(
                        delete(lg_blobs).where(
                            and_(
                                lg_blobs.c.thread_id == thread_id,
                                lg_blobs.c.checkpoint_ns == ns,
                                lg_blobs.c.channel == channel,
                                lg_blobs.c.version == version,
                            )
                        )
                    )


def _hold_artifacts(conn: Connection, uris: set[str]) -> None:
    """Read the manifests of artifacts about to be referenced by rows copied without storing anything: a
    garbage collection sweeping at the same time then either waits for this transaction or has already
    deleted them, which is refused here rather than left as a dangling reference."""
    keys = {parse_uri(uri) for uri in uris}
    if not keys:
        return
    present = set(conn.execute(select(blobs.c.sha256).where(blobs.c.sha256.in_(sorted(keys)))).scalars())
    for uri in sorted(uris):
        if parse_uri(uri) not in present:
            raise ArtifactNotFound(uri)
