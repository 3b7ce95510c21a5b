"""Create many paused workflows fast: initialize -> start -> pause for each, many per transaction.

One workflow through the public calls costs three transactions (three fsync'd commits) and a validated
model read back after each: 36-43 workflows/s on SQLite, 22-28/s on PostgreSQL (issue 12). Loading a
queue for a migration, a demo or a benchmark does not need a commit per step, so this writes each
workflow with **the engine's own writes** (``WorkflowOrchestrator._initialize_in``, ``_start_in``,
``_capture`` and ``_open_request``: the workflow row, its main job, the escrow lock on the ledger, the
audit chain and its anchor, transitions, the snapshot and its artifact, the approval sub-job, the request
and its "waiting" notice), ``per_transaction`` workflows to a commit. No row differs from what the three
calls would have written (``tests/test_bulk_create.py`` compares them table by table).

Everything is checked before the first write (configs, states, reviews, duplicate ids), so bad input is an
``InvalidInput`` naming the item and field with nothing written. Transactions commit in order; if the
database fails mid-way, the transactions already committed stay (each is whole), the failing one leaves
nothing, and :class:`BulkError` says how many were created.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from saferun.core import bulk_rows, parties
from saferun.core.state_machine.models import ExecutionState, WorkflowConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.core.state_machine.pause_input import Review, parts_of
from saferun.domain.canonical import check_json
from saferun.domain.money import to_micro
from saferun.domain.monitor_rules import MonitorConfig
from saferun.domain.states import WorkflowState
from saferun.errors import InvalidInput, SafeRunError
from saferun.storage import workflows as wf_store
from saferun.storage.schema import artifacts, blobs

log = logging.getLogger(__name__)

DEFAULT_PER_TRANSACTION = 500
MAX_PER_TRANSACTION = 5000
BULK_CACHE_KIB = 256 * 1024  # SQLite page cache while loading (see _bulk_cache)
ANALYZE_AFTER = 1000  # PostgreSQL: loads this large refresh the planner's statistics (see _analyze)


@dataclass(frozen=True)
class PausedWorkflow:
    """One workflow to create and pause at ``state.checkpoint_id`` (a checkpoint that requires approval),
    with what the reviewer is shown: the same arguments as ``initialize_workflow`` + ``pause``."""

    config: WorkflowConfig
    state: ExecutionState
    summary: str
    context: dict[str, Any] | None = None
    review: dict[str, Any] = field(default_factory=dict)  # decision_needed, recommendation, risk, ...


@dataclass(frozen=True)
class Created:
    workflow_id: str
    request_id: str


class BulkError(SafeRunError):
    """A failure part-way (a conflict, a refused party, the database): the ``created`` workflows (whole
    transactions) were committed before it; the failing transaction wrote nothing."""

    def __init__(self, created: list[Created], cause: Exception) -> None:
        super().__init__(
            f"bulk creation stopped after {len(created)} workflows: {cause}", created=len(created)
        )
        self.created = created
        self.cause = cause
        self.http_status = cause.http_status if isinstance(cause, SafeRunError) else 500


@dataclass(frozen=True)
class _Checked:
    item: PausedWorkflow
    cfg: dict[str, Any]
    amount: int
    parts: dict[str, bytes]
    review: Review


def _check(index: int, item: PausedWorkflow) -> _Checked:
    """Every check the three calls make before writing, for one item; errors name ``items[i].field``."""
    try:
        config = item.config
        cp = config.checkpoint(item.state.checkpoint_id)
        if cp is None or not cp.requires_approval:
            raise InvalidInput(
                "state.checkpoint_id",
                f"{item.state.checkpoint_id!r} is not a configured checkpoint that requires approval",
            )
        amount = to_micro(config.escrow_amount, "escrow_amount")
        if config.funding != "ledger" and amount > 0:
            raise InvalidInput("config.funding", "a bulk-created workflow must be ledger-funded to start")
        cfg = config.model_dump(mode="json")
        check_json(cfg, "config")
        MonitorConfig.from_metadata(config.metadata.get("monitor"))
        parts = parts_of(item.state)
        review = Review.checked(item.summary, item.context, **item.review)
    except InvalidInput as exc:
        raise InvalidInput(f"items[{index}].{exc.field}", exc.message.split(": ", 1)[-1]) from None
    except TypeError as exc:  # an unknown review keyword
        raise InvalidInput(f"items[{index}].review", str(exc)) from None
    return _Checked(item, cfg, amount, parts, review)


def _chunks(items: list[_Checked], size: int) -> Iterator[list[_Checked]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def create_paused(
    orch: WorkflowOrchestrator,
    items: Iterable[PausedWorkflow],
    *,
    per_transaction: int = DEFAULT_PER_TRANSACTION,
    actor: str | None = None,
) -> list[Created]:
    """Create and pause every item, ``per_transaction`` to a commit; returns each workflow's request."""
    if isinstance(per_transaction, bool) or not 1 <= per_transaction <= MAX_PER_TRANSACTION:
        raise InvalidInput(
            "per_transaction", f"must be from 1 to {MAX_PER_TRANSACTION}, got {per_transaction}"
        )
    checked = [_check(i, item) for i, item in enumerate(items)]
    seen: set[str] = set()
    for i, c in enumerate(checked):
        if c.item.config.workflow_id in seen:
            raise InvalidInput(f"items[{i}].config.workflow_id", "appears twice in this batch")
        seen.add(c.item.config.workflow_id)
    created: list[Created] = []
    with orch.db.connection() as conn, _bulk_cache(conn):
        for chunk in _chunks(checked, per_transaction):
            try:
                with conn.begin():
                    done = _chunk(orch, conn, chunk, actor)
            except Exception as exc:  # this chunk wrote nothing; say what the chunks before it committed
                raise BulkError(created, exc) from exc
            created.extend(done)
    orch.compact_counters()  # PostgreSQL's count deltas from this load, folded before anyone reads them
    if len(created) >= ANALYZE_AFTER and orch.db.dialect == "postgresql":
        _analyze(orch)
    return created


def _analyze(orch: WorkflowOrchestrator) -> None:
    """Refresh PostgreSQL's statistics of the tables a large load filled. Until autovacuum gets to them
    the planner believes they are as small as before the load and reads a whole index range and sorts it
    instead of walking the index in order: the queue's first page took 326 ms at 20,000 freshly loaded
    requests and 1 ms after ``ANALYZE`` (benchmarks/README.md).

    One table per transaction, so this never holds one table's lock while waiting for another's (a
    database-wide ``ANALYZE`` in someone's open transaction deadlocked with a list of tables); and only
    best effort: the workflows are committed by now, and autovacuum refreshes the statistics later anyway.
    """
    for table in (*bulk_rows.ORDER, blobs, artifacts):
        try:
            with orch.db.transaction() as conn:
                conn.exec_driver_sql(f"ANALYZE {table.name}")
        except Exception as exc:  # statistics only: never fail a load that committed
            log.warning("ANALYZE %s after a bulk load failed (autovacuum will do it): %s", table.name, exc)


@contextmanager
def _bulk_cache(conn: Connection) -> Iterator[None]:
    """On SQLite, a larger page cache on the loading connection: each chunk inserts into a dozen indexes
    keyed by random ids and hashes, and with the default ~2 MB cache a store of a few hundred MB reads
    most of those index pages back from disk (the rate fell by half between 10,000 and 100,000
    workflows). The connection's own setting is put back before it returns to the pool."""
    if conn.dialect.name != "sqlite":
        yield
        return
    before = int(conn.exec_driver_sql("PRAGMA cache_size").scalar_one())
    conn.commit()
    conn.exec_driver_sql(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
    conn.commit()
    try:
        yield
    finally:
        if conn.in_transaction():
            conn.rollback()
        conn.exec_driver_sql(f"PRAGMA cache_size={before}")
        conn.commit()


def _chunk(orch: WorkflowOrchestrator, conn: Any, chunk: list[_Checked], actor: str | None) -> list[Created]:
    """One transaction's workflows: the common shape as rows built in memory and written with one
    multi-row INSERT per table (``bulk_rows``), any other through the engine's calls (``_one``)."""
    fast = [c for c in chunk if bulk_rows.fits(orch, c)]
    if fast:
        bulk_rows.check_new(conn, [c.item.config.workflow_id for c in fast])
        # the parties' roles, checked once per distinct party (the engine checks them per call)
        for poster, executor, supervisor in {
            (c.item.config.poster_id, c.item.config.executor_id, c.item.config.supervisor_id) for c in fast
        }:
            parties.check_config_parties(conn, poster, executor, supervisor, orch.identity_checks)
            parties.require_role(
                conn, executor, parties.Role.EXECUTOR, orch.identity_checks, "start the workflow"
            )
    tables: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    stored = iter(bulk_rows.store_states(orch, conn, fast))
    done = []
    for c in chunk:
        if bulk_rows.fits(orch, c):
            rows, request_id = bulk_rows.build(orch, conn, c, actor, next(stored))
            for table, values in rows.items():
                tables[table].extend(values)
            done.append(Created(c.item.config.workflow_id, request_id))
        else:
            done.append(_one(orch, conn, c, actor))
    bulk_rows.write(conn, tables)
    return done


def _one(orch: WorkflowOrchestrator, conn: Any, c: _Checked, actor: str | None) -> Created:
    config = c.item.config
    workflow_id = config.workflow_id
    orch._initialize_in(conn, config, c.cfg, c.amount, actor or config.poster_id)
    # the row was inserted by this transaction, so no other writer can hold or take its lock
    orch._start_in(conn, wf_store.get(conn, workflow_id), None)
    row = wf_store.get(conn, workflow_id)
    # what ``pause`` does, inside this transaction
    snapshot = orch._capture(conn, row, c.item.state, c.parts)
    snap_row = {"snapshot_id": snapshot.snapshot_id, "checkpoint_id": snapshot.checkpoint_id}
    executing = {**row, "state": WorkflowState.EXECUTING.value}
    request = orch._open_request(conn, executing, snap_row, c.review, dict(c.item.state.parameters))
    return Created(workflow_id, request.request_id)
