"""SafeRun as a LangGraph checkpointer: ``graph.compile(checkpointer=SafeRunSaver())``.

The checkpoint model is LangGraph's own (threads, namespaces, parent ids, pending writes, channel
versions); what SafeRun adds is where channel values live. Each (channel, version) LangGraph hands to
``put`` is serialized with the saver's serde and stored as a SafeRun artifact (chunked, zstd-compressed,
content-addressed, verified on every read). LangGraph only passes the channels that changed, so an
unchanged 1 MB channel costs nothing per checkpoint, and an append-only message list re-stores only the
chunks that are new. A flipped byte in a stored chunk is ``ArtifactCorrupted`` on read, never a wrong value.

One class serves both the sync and the async API: the async methods run the same code in a worker
thread (``asyncio.to_thread``), so a graph on an event loop never blocks it on a database call.
``AsyncSafeRunSaver`` is the same class under the name LangGraph users look for. Deleting, copying and
pruning threads, and freeing the storage they leave behind (``collect_garbage``), are in ``threads``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, select

from saferun.errors import ArtifactCorrupted, ArtifactNotFound, InvalidInput
from saferun.integrations.langgraph.statements import (
    CP_COLUMN_NAMES,
    CP_COLUMNS,
    INSERT_BLOBS,
    INSERT_WRITES,
    UPSERT_CHECKPOINT,
    UPSERT_WRITES,
    FirstReads,
    SlotCache,
    decode_checkpoint,
    statement,
    write_lock,
)
from saferun.integrations.langgraph.threads import ThreadMaintenance
from saferun.storage.artifact_blobs import BlobRow
from saferun.storage.artifacts import ArtifactInput
from saferun.storage.bare_reads import bare_read, placeholder
from saferun.storage.bare_writes import BareConnection, bare_transaction
from saferun.storage.database import Database, get_database
from saferun.storage.schema import lg_checkpoints

try:
    from langgraph.checkpoint.base import (
        WRITES_IDX_MAP,
        BaseCheckpointSaver,
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
        get_checkpoint_id,
        get_checkpoint_metadata,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol
except ImportError as exc:  # pragma: no cover - exercised by the optional-extra probe test
    from saferun.integrations.langgraph import INSTALL_HINT

    raise ImportError(INSTALL_HINT) from exc

ARTIFACT_TYPE = "langgraph.channel"
_EMPTY = "empty"


class SafeRunSaver(ThreadMaintenance, BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on SafeRun's store (SQLite by default, PostgreSQL for replicas).

    ``database`` is a ``Database`` or a URL; by default the configured SafeRun database, so the graph's
    checkpoints sit next to the workflows, approvals and audit chain that supervise it.
    """

    def __init__(
        self, database: Database | str | None = None, *, serde: SerializerProtocol | None = None
    ) -> None:
        super().__init__(serde=serde)
        if isinstance(database, Database):
            self.db = database
        else:
            self.db = get_database(database)
        # LangGraph writes a step's checkpoint and the next step's writes from different threads; on
        # SQLite two writers of one process would meet at the database lock and back off in busy-timeout
        # sleeps (milliseconds each), so this process's writers queue here instead
        self._write_lock = write_lock(self.db) if self.db.is_sqlite else contextlib.nullcontext()
        self._slots = SlotCache()
        self._cold = FirstReads()  # threads this saver has not read yet (PostgreSQL's cold read)
        self._sql = _BareSQL(placeholder(self.db))
        # PostgreSQL: a checkpoint, its channels' rows and its writes in one statement (one round trip);
        # SQLite runs statements in-process, where three small ones cost less than one with JSON joins
        self._one_statement_reads = not self.db.is_sqlite

    # ------------------------------------------------------------------------------------------ reads
    def get_tuple(self, config: dict[str, Any]) -> CheckpointTuple | None:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)  # type: ignore[arg-type]
        fast = self._fast_tuple(thread_id, ns, checkpoint_id)
        if fast is not _MISS:
            return fast  # type: ignore[return-value]
        params = {"thread_id": thread_id, "ns": ns}
        with self.db.read() as conn:
            if checkpoint_id:
                query = statement(conn, "checkpoint")
                params["checkpoint_id"] = checkpoint_id
            else:
                query = statement(conn, "latest")
            row = conn.execute(query, params).mappings().first()
            if row is None:
                return None
            return self._tuple(conn, row)

    def _fast_tuple(self, thread_id: str, ns: str, checkpoint_id: str | None) -> Any:
        """``get_state`` on a bare driver cursor (SQLAlchemy's execution path costs more than SQLite's
        indexed lookups); ``_MISS`` sends the caller to the full path, which reads in one transaction.

        On SQLite, warm, this is two SELECTs, as in LangGraph's ``SqliteSaver``: the checkpoint row and
        its pending writes. Which artifact holds a (channel, version) never changes once written (the row
        is insert-only), so the lookup of those rows is remembered per thread (``_slots``) after one read.
        On PostgreSQL, where each statement is a round trip, it is one SELECT, as in LangGraph's
        ``PostgresSaver``: the row with its channels' rows and its writes (``_BareSQL.joined_*``; a row
        written before migration 0022 has no versions column and is read the SQLite way). Cold, the
        artifacts are fetched and verified on the same cursor (``_parts``)."""
        sql = self._sql

        def read(cur: Any) -> Any:
            joined = self._one_statement_reads
            cold = joined and self._cold.first(thread_id, ns)
            if checkpoint_id:
                query = (sql.cold_checkpoint if cold else sql.joined_checkpoint) if joined else sql.checkpoint
                cur.execute(query, (thread_id, ns, checkpoint_id))
            else:
                query = (sql.cold_latest if cold else sql.joined_latest) if joined else sql.latest
                cur.execute(query, (thread_id, ns))
            found = cur.fetchone()
            if found is None:
                return None
            fetched: dict[str, BlobRow] = {}
            if cold:  # the parts' blob rows came along: a level the verified read need not fetch
                ks, kinds, codecs, raws, storeds, datas = found[-_COLD_WIDTH:]
                for key, kind, codec, raw, size, data in zip(
                    ks or (), kinds or (), codecs or (), raws or (), storeds or (), datas or (), strict=True
                ):
                    fetched[key] = BlobRow(key, kind, codec, raw, size, bytes(data))
                found = found[:-_COLD_WIDTH]
            row = dict(zip(CP_COLUMN_NAMES, found, strict=False))
            stored_versions = found[len(CP_COLUMN_NAMES)] if joined else None
            checkpoint = decode_checkpoint(self.serde, row, stored_versions)
            versions = checkpoint.get("channel_versions", {})
            values: dict[str, Any] = {}
            writes: Any = None
            slots: Any = None
            if stored_versions is not None:  # the row has its versions column: the rest came with it
                slots, (task_ids, channels, types, data) = found[-5], found[-4:]
                writes = list(zip(task_ids, channels, types, data, strict=True)) if task_ids else []
            if versions:
                # the stored (channel, value_type, uri) of each version: with the row, or remembered
                # after one read of lg_blobs
                if slots is not None:
                    stored = [tuple(s) for s in slots if s[1] != _EMPTY and s[2] is not None]
                elif (stored := self._slots.lookup(thread_id, ns, versions)) is None:
                    cur.execute(
                        sql.slots(len(versions)),
                        (thread_id, ns, *[x for c, v in versions.items() for x in (c, str(v))]),
                    )
                    slots = cur.fetchall()
                    stored = [
                        (c, t, uri, key) for c, _, t, uri, key in slots if t != _EMPTY and uri is not None
                    ]
                    if len(slots) == len(versions):  # remember only a complete answer
                        self._slots.remember(thread_id, ns, versions, stored)
                parts = self._parts(cur, stored, fetched)
                if parts is None:
                    return _MISS
                for channel, value_type, _, _ in stored:
                    if channel not in parts:
                        return _MISS
                    values[channel] = self.serde.loads_typed((value_type, parts[channel]))
            if writes is None:
                cur.execute(sql.writes, (thread_id, ns, row["checkpoint_id"]))
                writes = cur.fetchall()
            metadata = self.serde.loads_typed((row["metadata_type"], bytes(row["metadata"])))
            return self._make_tuple(row, checkpoint, metadata, values, writes)

        return bare_read(self.db, read)

    def _parts(self, cur: Any, stored: list[Any], fetched: dict[str, BlobRow]) -> dict[str, bytes] | None:
        """Each stored channel's bytes, verified on the bare cursor (without SQLAlchemy's ~50 µs per
        statement): by its part key where the row has one (from the verified cache, or fetched, with the
        blob rows the cold read brought along (``fetched``), and checked against the key: no manifest),
        else through its artifact (channels changed together share one; all artifacts together, one
        statement per tree level, not per artifact).

        The cursor reads committed rows statement by statement, not one snapshot, so a thread deleted or
        pruned meanwhile can make a row vanish between two reads: then None, and the caller takes the full
        path, which reads in one transaction and raises if the bytes really are wrong."""
        bare = BareConnection(self.db.engine.dialect, cur)
        by_key = {channel: key for channel, _, _, key in stored if key is not None}
        through: dict[str, dict[str, bytes]] = {}  # artifact uri -> its parts, for rows without a key
        unverified: list[str] = []
        for _, _, uri, key in stored:
            if key is None and uri not in through and uri not in unverified:
                cached = self.db.artifacts.get_cached(uri)
                if cached is None:
                    unverified.append(uri)
                else:
                    through[uri] = cached
        try:
            by_sha = self.db.artifacts.get_parts(bare, by_key.values(), fetched) if by_key else {}  # type: ignore[arg-type]
            if unverified:
                through.update(self.db.artifacts.get_many(bare, unverified))  # type: ignore[arg-type]
        except (ArtifactNotFound, ArtifactCorrupted):
            return None
        out = {channel: by_sha[key] for channel, key in by_key.items()}
        for channel, _, uri, key in stored:
            if key is None and channel in through[uri]:
                out[channel] = through[uri][channel]
        return out

    def list(
        self,
        config: dict[str, Any] | None,
        *,
        filter: dict[str, Any] | None = None,
        before: dict[str, Any] | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        query = select(lg_checkpoints)
        if config is not None:
            conf = config["configurable"]
            query = query.where(lg_checkpoints.c.thread_id == str(conf["thread_id"]))
            if conf.get("checkpoint_ns") is not None:
                query = query.where(lg_checkpoints.c.checkpoint_ns == conf["checkpoint_ns"])
            if checkpoint_id := get_checkpoint_id(config):  # type: ignore[arg-type]
                query = query.where(lg_checkpoints.c.checkpoint_id == checkpoint_id)
        if before is not None and (before_id := get_checkpoint_id(before)):  # type: ignore[arg-type]
            query = query.where(lg_checkpoints.c.checkpoint_id < before_id)
        if filter and set(filter) == {"run_id"}:
            query = query.where(lg_checkpoints.c.run_id == str(filter["run_id"]))
        query = query.order_by(lg_checkpoints.c.checkpoint_id.desc())
        if limit is not None and not filter:
            query = query.limit(max(limit, 0))
        # the tuples are built inside one read, then yielded: a caller consuming slowly holds no snapshot
        out: list[CheckpointTuple] = []
        with self.db.read() as conn:
            for row in conn.execute(query).mappings():
                if limit is not None and len(out) >= limit:
                    break
                if filter:
                    metadata = self.serde.loads_typed((row["metadata_type"], row["metadata"]))
                    if not all(metadata.get(k) == v for k, v in filter.items()):
                        continue
                out.append(self._tuple(conn, row))
        yield from out

    def _tuple(self, conn: Connection, row: Any) -> CheckpointTuple:
        thread_id, ns, checkpoint_id = row["thread_id"], row["checkpoint_ns"], row["checkpoint_id"]
        checkpoint = decode_checkpoint(self.serde, row, row["channel_versions"])
        metadata = self.serde.loads_typed((row["metadata_type"], row["metadata"]))
        values = self._load_values(conn, thread_id, ns, checkpoint.get("channel_versions", {}))
        writes = conn.execute(
            statement(conn, "writes"), {"thread_id": thread_id, "ns": ns, "checkpoint_id": checkpoint_id}
        ).all()
        return self._make_tuple(row, checkpoint, metadata, values, writes)

    def _make_tuple(
        self, row: Any, checkpoint: Any, metadata: Any, values: dict[str, Any], writes: Any
    ) -> CheckpointTuple:
        thread_id, ns, checkpoint_id = row["thread_id"], row["checkpoint_ns"], row["checkpoint_id"]
        parent = row["parent_checkpoint_id"]
        return CheckpointTuple(
            config={
                "configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}
            },
            checkpoint={**checkpoint, "channel_values": values},
            metadata=metadata,
            parent_config=(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": parent}}
                if parent
                else None
            ),
            pending_writes=[(t, c, self.serde.loads_typed((vt, bytes(v)))) for t, c, vt, v in writes],
        )

    def _load_values(
        self, conn: Connection, thread_id: str, ns: str, versions: dict[str, Any]
    ) -> dict[str, Any]:
        """The channel values a checkpoint's versions name: one verified (usually cached) read per
        artifact, and an artifact holds every channel its checkpoint changed."""
        if not versions:
            return {}
        pairs = [(channel, str(version)) for channel, version in versions.items()]
        rows = conn.execute(
            statement(conn, "blobs"), {"thread_id": thread_id, "ns": ns, "pairs": pairs}
        ).all()
        by_uri: dict[str, list[tuple[str, str]]] = {}
        for channel, value_type, uri in rows:
            if value_type != _EMPTY and uri is not None:
                by_uri.setdefault(uri, []).append((channel, value_type))
        values: dict[str, Any] = {}
        # all parts, so the verified-parts cache can serve the next read of each artifact on its own
        stored = self.db.artifacts.get_many(conn, list(by_uri)) if by_uri else {}
        for uri, channels in by_uri.items():
            for channel, value_type in channels:
                values[channel] = self.serde.loads_typed((value_type, stored[uri][channel]))
        return values

    # ----------------------------------------------------------------------------------------- writes
    def put(
        self,
        config: dict[str, Any],
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> dict[str, Any]:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns", "")
        parent_id = conf.get("checkpoint_id")
        copy = checkpoint.copy()
        values: dict[str, Any] = copy.pop("channel_values", {})  # type: ignore[misc]
        # serialize everything before opening the transaction: an unserializable value writes nothing
        blobs: list[tuple[str, str, str, bytes | None]] = []
        for channel, version in new_versions.items():
            if channel in values:
                value_type, data = self._dumps(values[channel], f"channel_values.{channel}")
                blobs.append((channel, str(version), value_type, data))
            else:
                blobs.append((channel, str(version), _EMPTY, None))
        versions_column = None
        kinds = {type(v) for v in copy["channel_versions"].values()}
        if self._one_statement_reads and kinds <= {str, int}:
            # kept once, in the JSON column a PostgreSQL read joins on, not also in the serialized bytes
            # (str and int only: their JSON text is what lg_blobs.version holds, and they read back as
            # they were; another kind of version stays in the bytes, and the read takes the old way)
            versions_column = copy.pop("channel_versions")  # type: ignore[misc]
        checkpoint_type, checkpoint_bytes = self._dumps(copy, "checkpoint")
        full_metadata = get_checkpoint_metadata(config, metadata)  # type: ignore[arg-type]
        metadata_type, metadata_bytes = self._dumps(full_metadata, "metadata")
        run_id = full_metadata.get("run_id")
        # on PostgreSQL the INSERTs go as one statement, without BEGIN/COMMIT, unless a large value's
        # probe opens a transaction first (``combine``)
        with self._write_lock, bare_transaction(self.db, combine=True) as conn:
            # every channel this checkpoint changed goes into one artifact (a part per channel): at most one
            # probe and one insert however many changed, and chunks already stored are not stored again
            parts = {channel: data for channel, _, _, data in blobs if data is not None}
            uri = stored = None
            if parts:
                stored = self.db.artifacts.put_many(
                    conn,
                    [ArtifactInput(parts, {}, f"lg\0{thread_id}\0{ns}")],
                    artifact_type=ARTIFACT_TYPE,
                    count_new=False,
                )[0]
                uri = stored.uri
            # each part's key too, so a read fetches the part without the manifest (migration 0025)
            part_keys = {name: sha for name, sha, _ in stored.entries} if stored is not None else {}
            rows = [
                {
                    "thread_id": thread_id,
                    "checkpoint_ns": ns,
                    "channel": channel,
                    "version": version,
                    "value_type": value_type,
                    "artifact_uri": uri if data is not None else None,
                    "part_key": part_keys.get(channel) if data is not None else None,
                }
                for channel, version, value_type, data in blobs
            ]
            if rows:
                INSERT_BLOBS.execute(conn, rows)
            UPSERT_CHECKPOINT.execute(
                conn,
                [
                    {
                        "thread_id": thread_id,
                        "checkpoint_ns": ns,
                        "checkpoint_id": checkpoint["id"],
                        "parent_checkpoint_id": parent_id,
                        "run_id": None if run_id is None else str(run_id),
                        "checkpoint_type": checkpoint_type,
                        "checkpoint": checkpoint_bytes,
                        "metadata_type": metadata_type,
                        "metadata": metadata_bytes,
                        # PostgreSQL reads a checkpoint in one statement by these (migration 0022)
                        "channel_versions": versions_column,
                    }
                ],
            )
        if stored is not None:  # committed: a read of this state in this process fetches nothing
            self.db.artifacts.remember(stored, parts)
        return {
            "configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}
        }

    def put_writes(
        self,
        config: dict[str, Any],
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns", "")
        checkpoint_id = conf["checkpoint_id"]
        rows = []
        for idx, (channel, value) in enumerate(writes):
            value_type, data = self._dumps(value, f"writes.{channel}")
            rows.append(
                {
                    "thread_id": thread_id,
                    "checkpoint_ns": ns,
                    "checkpoint_id": checkpoint_id,
                    "task_id": task_id,
                    "idx": WRITES_IDX_MAP.get(channel, idx),
                    "channel": channel,
                    "value_type": value_type,
                    "value": data,
                    "task_path": task_path,
                }
            )
        # special channels (errors, interrupts, resume) replace; ordinary writes are kept once
        replace = [r for r in rows if r["idx"] < 0]
        keep = [r for r in rows if r["idx"] >= 0]
        if not rows:
            return
        # on PostgreSQL the INSERTs go as one statement, without BEGIN/COMMIT (``combine``)
        with self._write_lock, bare_transaction(self.db, combine=True) as conn:
            if replace:
                UPSERT_WRITES.execute(conn, replace)
            if keep:
                INSERT_WRITES.execute(conn, keep)

    # ------------------------------------------------------------------------------------------ async
    async def aget_tuple(self, config: dict[str, Any]) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: dict[str, Any] | None,
        *,
        filter: dict[str, Any] | None = None,
        before: dict[str, Any] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        tuples = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for item in tuples:
            yield item

    async def aput(
        self,
        config: dict[str, Any],
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: dict[str, Any], writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    # ---------------------------------------------------------------------------------------- helpers
    def get_next_version(self, current: str | None, channel: None) -> str:
        """Versions as ``<counter>.<random>`` strings, like LangGraph's SQL savers: ordered by counter."""
        import random

        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(str(current).split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    def _dumps(self, value: Any, field: str) -> tuple[str, bytes]:
        try:
            return self.serde.dumps_typed(value)
        except Exception as exc:
            raise InvalidInput(_culprit(self.serde, value, field), f"cannot be serialized: {exc}") from exc


def _culprit(serde: SerializerProtocol, value: Any, field: str) -> str:
    """The deepest key of ``value`` that alone fails to serialize (the graph's input reaches ``put`` as
    one ``__start__`` dict, so naming only the channel would not say which state key was at fault)."""
    if isinstance(value, dict):
        for key, item in value.items():
            try:
                serde.dumps_typed(item)
            except Exception:
                return _culprit(serde, item, f"{field}.{key}")
    return field


_MISS = object()
AsyncSafeRunSaver = SafeRunSaver

__all__ = ["ARTIFACT_TYPE", "AsyncSafeRunSaver", "SafeRunSaver"]


_COLD_COLUMNS = "x.ks, x.kinds, x.codecs, x.raws, x.storeds, x.datas"
_COLD_WIDTH = 6  # the cold read's extra columns: the parts' blob rows as parallel arrays


class _BareSQL:
    """The warm read's statements as driver SQL, written once per saver (not per ``get_state``)."""

    def __init__(self, ph: str) -> None:
        where = f"thread_id = {ph} and checkpoint_ns = {ph}"
        self.ph, self.where = ph, where
        self.checkpoint = f"select {CP_COLUMNS} from lg_checkpoints where {where} and checkpoint_id = {ph}"
        self.latest = (
            f"select {CP_COLUMNS} from lg_checkpoints where {where} order by checkpoint_id desc limit 1"
        )
        self.writes = (
            f"select task_id, channel, value_type, value from lg_writes where {where} "
            f"and checkpoint_id = {ph} order by task_path, task_id, idx"
        )
        self._slots: dict[int, str] = {}
        # PostgreSQL: the row, its channel versions (NULL for a row written before migration 0022), the
        # lg_blobs rows of those versions and the pending writes as parallel arrays, in one statement (as
        # LangGraph's PostgresSaver reads)
        order = "order by w.task_path, w.task_id, w.idx"
        columns = (
            f"select {', '.join('c.' + n for n in CP_COLUMN_NAMES)}, c.channel_versions, "
            # a key lookup per version (a scalar subquery cannot become a hash join over every row the
            # thread ever stored); a version with no row gives NULL, left out
            "array(select r from (select (select array[b.channel, b.value_type, b.artifact_uri, b.part_key] "
            "from lg_blobs b where b.thread_id = c.thread_id and b.checkpoint_ns = c.checkpoint_ns "
            "and b.version = v.value and b.channel = v.key) r "
            "from jsonb_each_text(c.channel_versions) v) s where r is not null), "
            "w.task_ids, w.channels, w.value_types, w.vals"
        )
        source = (
            " from lg_checkpoints c left join lateral ("
            f"select array_agg(w.task_id {order}) task_ids, array_agg(w.channel {order}) channels, "
            f"array_agg(w.value_type {order}) value_types, array_agg(w.value {order}) vals "
            "from lg_writes w where w.thread_id = c.thread_id and w.checkpoint_ns = c.checkpoint_ns "
            "and w.checkpoint_id = c.checkpoint_id) w on true "
        )
        # a thread this saver has not read yet (its parts are likely not verified in this process): also
        # the blobs its versions' part keys name (migration 0025), so a cold read is one round trip too;
        # per version its part key, then that blob, each a key lookup (LIMIT 1 keeps PostgreSQL from
        # flattening them into a hash join over the whole blobs table)
        blobs_source = (
            "left join lateral (select array_agg(y.sha256) ks, array_agg(y.kind) kinds, "
            "array_agg(y.codec) codecs, array_agg(y.raw_size) raws, array_agg(y.stored_size) storeds, "
            "array_agg(y.data) datas from jsonb_each_text(c.channel_versions) v "
            "cross join lateral (select b.part_key from lg_blobs b where b.thread_id = c.thread_id "
            "and b.checkpoint_ns = c.checkpoint_ns and b.version = v.value and b.channel = v.key "
            "limit 1) p cross join lateral (select bl.sha256, bl.kind, bl.codec, bl.raw_size, "
            "bl.stored_size, bl.data from blobs bl where bl.sha256 = p.part_key limit 1) y) x on true "
        )
        row_where = f"where c.thread_id = {ph} and c.checkpoint_ns = {ph}"
        joined = f"{columns}{source}{row_where}"
        cold = f"{columns}, {_COLD_COLUMNS}{source}{blobs_source}{row_where}"
        self.joined_checkpoint = f"{joined} and c.checkpoint_id = {ph}"
        self.joined_latest = f"{joined} order by c.checkpoint_id desc limit 1"
        self.cold_checkpoint = f"{cold} and c.checkpoint_id = {ph}"
        self.cold_latest = f"{cold} order by c.checkpoint_id desc limit 1"

    def slots(self, n: int) -> str:
        """The ``lg_blobs`` rows of ``n`` (channel, version) pairs."""
        query = self._slots.get(n)
        if query is None:
            ors = " or ".join([f"(channel = {self.ph} and version = {self.ph})"] * n)
            query = (
                "select channel, version, value_type, artifact_uri, part_key from lg_blobs "
                f"where {self.where} and ({ors})"
            )
            self._slots[n] = query
        return query
