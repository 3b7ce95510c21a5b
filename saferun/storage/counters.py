"""Counts the database keeps (the ``counters`` table, triggers of revision 0017): O(1) totals at any size.

Triggers on ``workflows``, ``approval_requests`` and ``approval_responses`` add to the counts in the same
transaction as the change, so a count is exact after every commit and never sees a rolled-back change,
whoever wrote the rows. :func:`read` sums them in one statement; :func:`recount` computes the same numbers
from the rows (what tests compare after a randomized mix of operations, on both databases).

The counts cover everything, so they answer only for a caller who sees everything (open mode, an admin:
``visibility.restricted`` is False). Anyone else's totals are the indexed ``COUNT`` over what they may see:
per-party counters cannot express the visibility rule (a party may be poster and executor of one
workflow; a supervisor also sees the unassigned pool), and a restricted caller's set is their own work.

PostgreSQL appends a delta row per change (no lock to queue on); :func:`compact` folds each (kind, key)
into one row and drops zeros. It is maintenance, never correctness: :func:`read` sums whatever is there.
The sweep asks :func:`needs_compaction` every pass, and the bulk path after each load. SQLite keeps one
row per count, which each trigger adds to with one UPSERT (revision 0023; a later migration that rebuilds
one of these tables must re-create that form).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import Connection, case, delete, func, insert, literal, literal_column, select, union_all

from saferun.storage.queue import QueueFilter
from saferun.storage.schema import approval_requests, approval_responses, counters, workflows

ENDED = ("completed", "failed")
PARTY_KINDS = ("executor", "supervisor")
# compact once the rows exceed the distinct counts by this many (a few minutes of steady PostgreSQL traffic)
COMPACT_SLACK = 500

_c = counters.c


@dataclass
class Counts:
    """Every count, by kind and key; party kinds hold only the parties with live (not ended) workflows."""

    by: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))

    def get(self, kind: str, key: str) -> int:
        return self.by.get(kind, {}).get(key, 0)

    def total(self, kind: str) -> int:
        return sum(self.by.get(kind, {}).values())

    def of(self, kind: str) -> dict[str, int]:
        return {k: n for k, n in self.by.get(kind, {}).items() if n}

    def comparable(self) -> dict[str, dict[str, int]]:
        """Non-zero counts only (a count at zero may or may not have a row)."""
        return {kind: self.of(kind) for kind in sorted(self.by) if self.of(kind)}


_SUMS = (
    select(_c.kind, _c.key, func.sum(_c.n).label("n")).group_by(_c.kind, _c.key).having(func.sum(_c.n) != 0)
)


def read(conn: Connection, kinds: tuple[str, ...] | None = None) -> Counts:
    """The counts (of ``kinds``, or all), one statement over a table of a few dozen rows (more on
    PostgreSQL between compactions, and one per party with live workflows)."""
    stmt = _SUMS if kinds is None else _SUMS.where(_c.kind.in_(kinds))
    out = Counts()
    for kind, key, n in conn.execute(stmt):
        out.by[kind][key] = int(n)
    return out


def recount(conn: Connection) -> Counts:
    """The same counts computed from the rows themselves (``COUNT(*) ... GROUP BY``): the truth the
    triggers must agree with. Scans every row; for tests and checks, never for a page."""
    w, r, resp = workflows.c, approval_requests.c, approval_responses.c
    live = w.state.notin_(ENDED)
    pending = r.status == "pending"
    # literal SQL text: PostgreSQL binds each parameter apart, so a bound '' would not match GROUP BY's
    unassigned = func.coalesce(r.supervisor_id, literal_column("''"))
    unrated = func.coalesce(r.risk_level, literal_column("'none'"))
    parts = [
        select(literal("workflows"), w.state, func.count()).group_by(w.state),
        select(literal("executor"), w.executor_id, func.count()).where(live).group_by(w.executor_id),
        select(literal("supervisor"), w.supervisor_id, func.count())
        .where(live, w.supervisor_id.is_not(None))
        .group_by(w.supervisor_id),
        select(literal("requests"), r.status, func.count()).group_by(r.status),
        select(literal("pending_supervisor"), unassigned, func.count()).where(pending).group_by(unassigned),
        select(literal("pending_risk"), unrated, func.count()).where(pending).group_by(unrated),
        select(literal("responses"), resp.decision, func.count()).group_by(resp.decision),
    ]
    out = Counts()
    for kind, key, n in conn.execute(union_all(*parts)):
        out.by[kind][key] = int(n)
    return out


def needs_compaction(conn: Connection) -> bool:
    """Whether delta rows (PostgreSQL) or zero rows (parties whose workflows all ended) outnumber the
    distinct counts by ``COMPACT_SLACK``: one read of the small table, so the sweep can ask every pass."""
    zero = func.sum(case((_c.n == 0, 1), else_=0))
    rows, groups, zeros = conn.execute(
        select(func.count(), func.count(func.distinct(_c.kind + literal("/") + _c.key)), zero)
    ).one()
    return int(rows) - int(groups) + int(zeros or 0) >= COMPACT_SLACK


def compact(conn: Connection) -> int:
    """Fold every (kind, key) into one row and drop the zeros, in the caller's transaction; returns how
    many rows it removed. Concurrent writers keep appending rows with higher ids, which this leaves alone
    (it folds only up to the highest id it saw); on PostgreSQL a second compactor waits on the first's
    row locks and then finds the rows gone, so nothing is counted twice."""
    top = conn.execute(select(func.max(_c.id))).scalar()
    if top is None:
        return 0
    if conn.dialect.name == "postgresql":
        # one statement: the rows folded are exactly the rows deleted (locked by the DELETE itself)
        moved = conn.exec_driver_sql(
            "WITH gone AS (DELETE FROM counters WHERE id <= %(top)s RETURNING kind, key, n), "
            "kept AS (INSERT INTO counters (kind, key, n) SELECT kind, key, SUM(n) FROM gone "
            "GROUP BY kind, key HAVING SUM(n) <> 0 RETURNING 1) "
            "SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM kept)",
            {"top": int(top)},
        ).scalar_one()
        return int(moved)
    # SQLite: this transaction holds the write lock, so read-then-rewrite is atomic
    sums = conn.execute(
        select(_c.kind, _c.key, func.sum(_c.n)).where(_c.id <= top).group_by(_c.kind, _c.key)
    ).all()
    removed = conn.execute(delete(counters).where(_c.id <= top)).rowcount
    keep = [{"kind": k, "key": key, "n": int(n)} for k, key, n in sums if n]
    if keep:
        conn.execute(insert(counters), keep)
    return int(removed) - len(keep)


def queue_count_key(flt: QueueFilter) -> tuple[str | None, str]:
    """The kept count that answers the pending queue's total under ``flt``, or (None, "") when none does
    (a workflow, age or expiry filter, or two filters at once: those are indexed ``COUNT``s)."""
    given = flt.as_dict()
    if not given:
        return "requests", "pending"
    if set(given) == {"assigned_to"}:
        return "pending_supervisor", str(flt.assigned_to)
    if set(given) == {"risk"}:
        return "pending_risk", str(flt.risk)
    return None, ""
