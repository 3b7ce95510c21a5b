"""The charts' aggregate queries: each answers with a few grouped rows, however many workflows are stored.

Every function takes a ``Scope`` (the workflows a caller may see, or one workflow) and returns counts or
sums per bucket; nothing here fetches the rows of ``approval_requests``, ``approval_responses`` or the
ledger (issue 14 item 5: the store may hold 100,000 workflows). Bucket edges and time axes come from
``saferun.domain.series``; the bucketing itself is a SQL ``CASE`` or an integer division on epoch seconds,
grouped by its output column's name (PostgreSQL binds each literal separately, so grouping by a repeated
expression would not match the selected one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    Connection,
    Integer,
    Select,
    and_,
    case,
    cast,
    false,
    func,
    literal_column,
    select,
)
from sqlalchemy.sql.elements import ColumnElement

from saferun.domain.ledger import ESCROW_PREFIX, KIND_LOCK, KIND_REFUND, KIND_RELEASE, escrow_account
from saferun.domain.series import TimeBuckets
from saferun.storage.schema import approval_requests, approval_responses, ledger_legs, ledger_transactions

REQ = approval_requests.c
RESP = approval_responses.c
TIMEOUT = "TIMEOUT"
MONEY_KINDS = (KIND_LOCK, KIND_RELEASE, KIND_REFUND)


@dataclass(frozen=True, slots=True)
class Scope:
    """Which workflows a chart counts: those in ``visible`` (a sub-select of ids; None = all), or the one
    ``workflow_id``."""

    visible: Select[tuple[str]] | None = None
    workflow_id: str | None = None

    def where(self, column: ColumnElement[str]) -> ColumnElement[bool]:
        terms: list[ColumnElement[bool]] = []
        if self.workflow_id is not None:
            terms.append(column == self.workflow_id)
        if self.visible is not None:
            terms.append(column.in_(self.visible))
        return and_(*terms) if terms else column.is_not(None)


def epoch(conn: Connection, column: ColumnElement[datetime]) -> ColumnElement[float]:
    """Seconds since 1970 of a stored UTC timestamp, in the dialect's own arithmetic."""
    if conn.dialect.name == "sqlite":
        return (func.julianday(column) - 2440587.5) * 86400.0
    return func.extract("epoch", column)


def _bucket_of(value: ColumnElement[float], edges: Sequence[float]) -> ColumnElement[int]:
    return case(*[(value < edge, i) for i, edge in enumerate(edges)], else_=len(edges)).label("bucket")


def _time_index(conn: Connection, column: ColumnElement[datetime], axis: TimeBuckets) -> ColumnElement[int]:
    offset = (epoch(conn, column) - float(axis.start)) / float(axis.width)
    if conn.dialect.name == "sqlite":
        return cast(offset, Integer).label("slot")  # truncation is floor: the offset is never negative
    return cast(func.floor(offset), Integer).label("slot")


def _human_latency(conn: Connection) -> ColumnElement[float]:
    return epoch(conn, RESP.created_at) - epoch(conn, REQ.created_at)


def _human_decisions(scope: Scope) -> Select[tuple[int]]:
    return (
        select(func.count())
        .select_from(approval_responses.join(approval_requests, REQ.request_id == RESP.request_id))
        .where(RESP.automatic == false(), scope.where(RESP.workflow_id))
    )


def latency_histogram(conn: Connection, scope: Scope, edges: Sequence[float]) -> dict[int, int]:
    """How long people took to decide (request created → response), counted per bucket of ``edges``.

    Automatic decisions (a timeout's policy) are left out: nobody decided, and they show as ``TIMEOUT``
    in :func:`decisions_over_time`.
    """
    bucket = _bucket_of(_human_latency(conn), edges)
    stmt = _human_decisions(scope).with_only_columns(bucket, func.count()).group_by(literal_column("bucket"))
    return {int(b): int(n) for b, n in conn.execute(stmt)}


def latency_at_ranks(conn: Connection, scope: Scope, ranks: Sequence[int]) -> list[float]:
    """The human decision latencies at the given 0-based ranks (sorted ascending), exact observed values:
    the database sorts once (``ROW_NUMBER() OVER (ORDER BY latency)``) and returns only those rows."""
    latency = _human_latency(conn)
    ordered = (
        _human_decisions(scope)
        .with_only_columns(latency.label("latency"), func.row_number().over(order_by=latency).label("rn"))
        .subquery()
    )
    wanted = sorted({rank + 1 for rank in ranks})
    rows = dict(conn.execute(select(ordered.c.rn, ordered.c.latency).where(ordered.c.rn.in_(wanted))).all())
    return [float(rows[rank + 1]) for rank in ranks]


def decision_span(conn: Connection, scope: Scope) -> tuple[datetime, datetime] | None:
    """When the first and the last decision in scope were recorded (None: no decision yet)."""
    row = conn.execute(
        select(func.min(RESP.created_at), func.max(RESP.created_at)).where(scope.where(RESP.workflow_id))
    ).one()
    return None if row[0] is None else (_aware(row[0]), _aware(row[1]))


def decisions_over_time(conn: Connection, scope: Scope, axis: TimeBuckets) -> dict[tuple[int, str], int]:
    """Decisions per time bucket and kind: APPROVED / MODIFIED / REJECTED, or TIMEOUT when automatic."""
    kind = case((RESP.automatic == false(), RESP.decision), else_=TIMEOUT).label("kind")
    slot = _time_index(conn, RESP.created_at, axis)
    stmt = (
        select(slot, kind, func.count())
        .where(scope.where(RESP.workflow_id))
        .group_by(literal_column("slot"), literal_column("kind"))
    )
    return {(int(s), str(k)): int(n) for s, k, n in conn.execute(stmt)}


def pending_age(conn: Connection, scope: Scope, now: datetime, edges: Sequence[float]) -> dict[int, int]:
    """Pending requests counted by how long they have waited (``now`` − created), per bucket of ``edges``."""
    now_epoch = now.timestamp()
    bucket = _bucket_of(now_epoch - epoch(conn, REQ.created_at), edges)
    stmt = (
        select(bucket, func.count())
        .where(REQ.status == "pending", scope.where(REQ.workflow_id))
        .group_by(literal_column("bucket"))
    )
    return {int(b): int(n) for b, n in conn.execute(stmt)}


def _escrow_legs(scope: Scope) -> ColumnElement[bool]:
    if scope.workflow_id is not None:
        account = ledger_legs.c.account == escrow_account(scope.workflow_id)
    else:
        account = ledger_legs.c.account.startswith(ESCROW_PREFIX)
    return and_(
        account, ledger_transactions.c.kind.in_(MONEY_KINDS), scope.where(ledger_transactions.c.workflow_id)
    )


def money_span(conn: Connection, scope: Scope) -> tuple[datetime, datetime] | None:
    """When the first and last escrow posting in scope were made (None: no money moved yet). Every lock,
    release and refund moves escrow, so the postings' own table answers without joining their legs."""
    txn = ledger_transactions.c
    row = conn.execute(
        select(func.min(txn.created_at), func.max(txn.created_at)).where(
            txn.kind.in_(MONEY_KINDS), scope.where(txn.workflow_id)
        )
    ).one()
    return None if row[0] is None else (_aware(row[0]), _aware(row[1]))


def money_over_time(conn: Connection, scope: Scope, axis: TimeBuckets) -> dict[tuple[int, str], int]:
    """Micro-units moved into (lock) and out of (release, refund) escrow per time bucket, as positive sums."""
    slot = _time_index(conn, ledger_transactions.c.created_at, axis)
    kind = ledger_transactions.c.kind.label("kind")
    stmt = (
        select(slot, kind, func.sum(ledger_legs.c.amount_micro))
        .select_from(
            ledger_legs.join(ledger_transactions, ledger_transactions.c.txn_id == ledger_legs.c.txn_id)
        )
        .where(_escrow_legs(scope))
        .group_by(literal_column("slot"), literal_column("kind"))
    )
    return {(int(s), str(k)): abs(int(total)) for s, k, total in conn.execute(stmt)}


def decided_by(conn: Connection, scope: Scope, limit: int) -> list[tuple[str, int, float]]:
    """The people who decided most: (who, decisions, mean seconds taken), busiest first, at most ``limit``."""
    latency = _human_latency(conn)
    stmt = (
        _human_decisions(scope)
        .with_only_columns(RESP.approved_by.label("who"), func.count().label("n"), func.avg(latency))
        .group_by(literal_column("who"))
        .order_by(literal_column("n").desc(), literal_column("who"))
        .limit(limit)
    )
    return [(str(w), int(n), float(avg or 0.0)) for w, n, avg in conn.execute(stmt)]


def pending_by_supervisor(conn: Connection, scope: Scope, limit: int) -> list[tuple[str | None, int]]:
    """Pending requests per assigned supervisor (None: not assigned, any eligible supervisor may decide)."""
    stmt = (
        select(REQ.supervisor_id.label("who"), func.count().label("n"))
        .where(REQ.status == "pending", scope.where(REQ.workflow_id))
        .group_by(literal_column("who"))
        .order_by(literal_column("n").desc(), literal_column("who"))
        .limit(limit)
    )
    return [(None if w is None else str(w), int(n)) for w, n in conn.execute(stmt)]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
