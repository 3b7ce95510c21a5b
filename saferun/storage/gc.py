"""Garbage collection of the artifact store: delete the blobs and artifacts nothing refers to any more.

Blobs are content-addressed and shared (``storage.artifacts``), so deleting a snapshot's or a LangGraph
checkpoint's row never deletes its blobs: another artifact may use the same chunks. ``collect`` is a
mark-and-sweep over everything that can refer to an artifact:

* **roots**: ``snapshots.artifact_uri`` (a workflow's checkpoints; forks share their source's),
  ``lg_blobs.artifact_uri`` (LangGraph channel values), ``workflows.result_uri`` (a settled workflow's
  result), ``platform_artifacts.uri`` (artifacts stored through the x402 platform API, which exports
  read back), and every artifact or blob younger than the grace period (an artifact stored through the
  platform API by a caller that will refer to it in a later call);
* **edges**: a manifest's parts, an index's chunks and a **delta's base** (``artifacts.references``):
  deleting a base would break every delta built on it, so a base is kept as long as any delta is.

**Safe beside writers, on both databases.** A writer relies on a stored blob without rewriting it (dedup,
or a delta's base) only after its transaction's probe found it (``ArtifactStore.put``). The sweep runs in
one write transaction that first shuts writers out of ``blobs``: on PostgreSQL ``LOCK TABLE blobs IN
ACCESS EXCLUSIVE MODE``, which waits for every transaction that has read ``blobs`` (a probe's lock lasts
until its commit) and holds off new probes until the sweep commits; on SQLite ``BEGIN IMMEDIATE``, which
already serializes writers. Inside it the roots are read again and anything that became reachable since
the mark (a re-referenced blob, a new delta's old base) is kept. So a writer either committed before the
sweep looked (its reference is seen) or probes after the sweep committed (it finds the blob gone and
stores it again). The expensive mark runs before, on a read snapshot, with no lock; the sweep's lock is
held only to re-read the roots and delete. A path that copies references without reading ``blobs``
(``SafeRunSaver.copy_thread``) reads the manifests it copies, for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, func, select

from saferun.errors import InvalidInput
from saferun.storage.artifact_blobs import references
from saferun.storage.artifacts import URI_PREFIX, make_uri
from saferun.storage.database import Database
from saferun.storage.schema import (
    artifacts,
    blobs,
    lg_blobs,
    platform_artifacts,
    snapshots,
    utcnow,
    workflows,
)

DEFAULT_GRACE = timedelta(hours=1)
_BATCH = 500  # keys per IN list, as in storage.artifacts


@dataclass(frozen=True)
class GcReport:
    """What one collection found and did (``deleted_*`` are what it would delete when ``dry_run``)."""

    blobs: int  # blobs stored when the mark ran
    roots: int  # distinct artifacts referenced (or young), whose blobs are kept
    deleted_blobs: int
    deleted_bytes: int  # stored (compressed) bytes of the deleted blobs
    deleted_artifacts: int
    revived: int  # unreferenced at the mark, referenced again by the sweep: kept
    dangling: int  # referenced artifacts whose manifest is not stored (nothing GC can do about them)
    dry_run: bool


def collect(
    db: Database, *, grace: timedelta = DEFAULT_GRACE, dry_run: bool = False, now: datetime | None = None
) -> GcReport:
    """Delete every blob no root reaches, and the ``artifacts`` rows of deleted manifests."""
    if not isinstance(grace, timedelta) or grace < timedelta(0):
        raise InvalidInput("grace", f"must be a non-negative duration, got {grace!r}")
    since = (now or utcnow()) - grace
    with db.read() as conn:
        sizes = {key: size for key, size in conn.execute(select(blobs.c.sha256, blobs.c.stored_size))}
        roots = _roots(conn, since)
        marked, dangling = _mark(conn, roots, lambda key: True)
    candidates = set(sizes) - marked
    revived: set[str] = set()
    deleted_artifacts = 0
    if candidates:
        with db.transaction() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("LOCK TABLE blobs IN ACCESS EXCLUSIVE MODE")
            # what the mark kept stays kept with everything under it; follow only what it did not see
            roots = _roots(conn, since)
            revived, _ = _mark(conn, roots, lambda key: key not in marked)
            candidates -= revived
            if candidates and not dry_run:
                deleted_artifacts = _delete(conn, candidates)
            elif candidates:
                deleted_artifacts = _count_artifacts(conn, candidates)
    return GcReport(
        blobs=len(sizes),
        roots=len(roots),
        deleted_blobs=len(candidates),
        deleted_bytes=sum(sizes[k] for k in candidates),
        deleted_artifacts=deleted_artifacts,
        revived=len(revived & set(sizes)),
        dangling=dangling,
        dry_run=dry_run,
    )


def _roots(conn: Connection, since: datetime) -> set[str]:
    """The blob keys everything else hangs from: the manifests of referenced or young artifacts, and
    young blobs themselves (stored by a transaction whose references may follow in the next one)."""
    uris: set[str] = set()
    for query in (
        select(snapshots.c.artifact_uri).distinct(),
        select(lg_blobs.c.artifact_uri).where(lg_blobs.c.artifact_uri.is_not(None)).distinct(),
        select(workflows.c.result_uri).where(workflows.c.result_uri.is_not(None)).distinct(),
        select(platform_artifacts.c.uri).distinct(),
        select(artifacts.c.uri).where(artifacts.c.created_at >= since),
    ):
        uris.update(conn.execute(query).scalars())
    keys = {uri[len(URI_PREFIX) :] for uri in uris if uri.startswith(URI_PREFIX)}
    keys.update(conn.execute(select(blobs.c.sha256).where(blobs.c.created_at >= since)).scalars())
    return keys


def _mark(conn: Connection, start: Iterable[str], follow: Callable[[str], bool]) -> tuple[set[str], int]:
    """Every stored key reachable from ``start`` through keys ``follow`` allows (a key it refuses is
    known to be kept with its whole closure), and how many start keys are not stored."""
    start = set(start)
    seen: set[str] = set()
    frontier = [k for k in start if follow(k)]
    seen.update(frontier)
    found: set[str] = set()
    missing_roots = 0
    while frontier:
        refs: dict[str, list[str]] = {}
        for i in range(0, len(frontier), _BATCH):
            refs.update(references(conn, frontier[i : i + _BATCH]))
        missing_roots += sum(1 for k in frontier if k not in refs and k in start)
        found.update(refs)
        nxt = []
        for children in refs.values():
            for child in children:
                if child not in seen and follow(child):
                    seen.add(child)
                    nxt.append(child)
        frontier = nxt
    return found, missing_roots


def _delete(conn: Connection, keys: Collection[str]) -> int:
    """Delete the blobs and the ``artifacts`` rows whose manifest is among them; how many artifacts."""
    ordered = sorted(keys)
    gone = 0
    for i in range(0, len(ordered), _BATCH):
        batch = ordered[i : i + _BATCH]
        conn.execute(delete(blobs).where(blobs.c.sha256.in_(batch)))
        uris = [make_uri(k) for k in batch]
        gone += conn.execute(delete(artifacts).where(artifacts.c.uri.in_(uris))).rowcount
    return gone


def _count_artifacts(conn: Connection, keys: Collection[str]) -> int:
    ordered = sorted(keys)
    total = 0
    for i in range(0, len(ordered), _BATCH):
        uris = [make_uri(k) for k in ordered[i : i + _BATCH]]
        total += conn.execute(select(func.count()).where(artifacts.c.uri.in_(uris))).scalar_one()
    return total
