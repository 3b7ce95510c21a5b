"""Rows of the supervisor marketplace: profiles, ratings, approval quality and workflow assignments.

Reputation is never stored: like ledger balances it is derived from the history (ratings and approval
quality) whenever it is read (``saferun.domain.reputation``), so there is no second copy to drift.
Every function takes the caller's ``Connection`` and never commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, RowMapping, func, insert, select, update

from saferun.domain.reputation import reputation
from saferun.storage.schema import (
    approval_quality,
    approval_requests,
    approval_responses,
    supervisor_assignments,
    supervisor_profiles,
    supervisor_ratings,
    utcnow,
)

# --- profiles --------------------------------------------------------------------------------------------


def get_profile(conn: Connection, supervisor_id: str) -> RowMapping | None:
    query = select(supervisor_profiles).where(supervisor_profiles.c.supervisor_id == supervisor_id)
    return conn.execute(query).mappings().first()


def upsert_profile(
    conn: Connection,
    supervisor_id: str,
    *,
    specialties: list[str],
    available: bool,
    price_per_approval_micro: int,
) -> RowMapping:
    now = utcnow()
    values: dict[str, Any] = {
        "specialties": sorted(set(specialties)),
        "available": bool(available),
        "price_per_approval_micro": price_per_approval_micro,
        "updated_at": now,
    }
    if get_profile(conn, supervisor_id) is None:
        conn.execute(
            insert(supervisor_profiles).values(supervisor_id=supervisor_id, created_at=now, **values)
        )
    else:
        conn.execute(
            update(supervisor_profiles)
            .where(supervisor_profiles.c.supervisor_id == supervisor_id)
            .values(**values)
        )
    profile = get_profile(conn, supervisor_id)
    assert profile is not None
    return profile


def list_profiles(conn: Connection) -> list[RowMapping]:
    query = select(supervisor_profiles).order_by(supervisor_profiles.c.supervisor_id)
    return list(conn.execute(query).mappings())


# --- ratings and approval quality -----------------------------------------------------------------------


def get_rating(conn: Connection, supervisor_id: str, workflow_id: str) -> RowMapping | None:
    query = select(supervisor_ratings).where(
        supervisor_ratings.c.supervisor_id == supervisor_id, supervisor_ratings.c.workflow_id == workflow_id
    )
    return conn.execute(query).mappings().first()


def add_rating(conn: Connection, supervisor_id: str, workflow_id: str, rating: int, review: str) -> None:
    conn.execute(
        insert(supervisor_ratings).values(
            supervisor_id=supervisor_id,
            workflow_id=workflow_id,
            rating=rating,
            review=review,
            created_at=utcnow(),
        )
    )


def get_quality(conn: Connection, supervisor_id: str, workflow_id: str) -> RowMapping | None:
    query = select(approval_quality).where(
        approval_quality.c.supervisor_id == supervisor_id, approval_quality.c.workflow_id == workflow_id
    )
    return conn.execute(query).mappings().first()


def add_quality(conn: Connection, supervisor_id: str, workflow_id: str, quality_score: float) -> None:
    conn.execute(
        insert(approval_quality).values(
            supervisor_id=supervisor_id,
            workflow_id=workflow_id,
            quality_score=quality_score,
            created_at=utcnow(),
        )
    )


def reputations(conn: Connection, supervisor_ids: Iterable[str]) -> dict[str, float]:
    """Each supervisor's derived reputation (0.5 for one with no history)."""
    ids = sorted(set(supervisor_ids))
    ratings: dict[str, list[int]] = defaultdict(list)
    qualities: dict[str, list[float]] = defaultdict(list)
    if ids:
        for sid, rating in conn.execute(
            select(supervisor_ratings.c.supervisor_id, supervisor_ratings.c.rating).where(
                supervisor_ratings.c.supervisor_id.in_(ids)
            )
        ):
            ratings[sid].append(int(rating))
        for sid, score in conn.execute(
            select(approval_quality.c.supervisor_id, approval_quality.c.quality_score).where(
                approval_quality.c.supervisor_id.in_(ids)
            )
        ):
            qualities[sid].append(float(score))
    return {sid: reputation(ratings[sid], qualities[sid]) for sid in ids}


def rating_count(conn: Connection, supervisor_id: str) -> int:
    query = select(supervisor_ratings.c.rating).where(supervisor_ratings.c.supervisor_id == supervisor_id)
    return len(conn.execute(query).all())


# --- assignments ----------------------------------------------------------------------------------------


def get_assignment(conn: Connection, workflow_id: str) -> RowMapping | None:
    query = select(supervisor_assignments).where(supervisor_assignments.c.workflow_id == workflow_id)
    return conn.execute(query).mappings().first()


def assign(conn: Connection, workflow_id: str, supervisor_id: str) -> None:
    conn.execute(
        insert(supervisor_assignments).values(
            workflow_id=workflow_id, supervisor_id=supervisor_id, assigned_at=utcnow()
        )
    )


def decided_on(conn: Connection, supervisor_id: str, workflow_id: str) -> bool:
    """Whether ``supervisor_id`` made a (human, not timed-out) decision on one of the workflow's requests."""
    query = (
        select(approval_responses.c.response_id)
        .where(
            approval_responses.c.workflow_id == workflow_id,
            approval_responses.c.approved_by == supervisor_id,
            approval_responses.c.automatic.is_(False),
        )
        .limit(1)
    )
    return conn.execute(query).first() is not None


def decision_counts(conn: Connection, supervisor_id: str, workflow_id: str) -> tuple[int, int]:
    """``(requests the workflow opened, of them decided by supervisor_id in person)``."""
    opened = conn.execute(
        select(func.count())
        .select_from(approval_requests)
        .where(approval_requests.c.workflow_id == workflow_id)
    ).scalar_one()
    decided = conn.execute(
        select(func.count())
        .select_from(approval_responses)
        .where(
            approval_responses.c.workflow_id == workflow_id,
            approval_responses.c.approved_by == supervisor_id,
            approval_responses.c.automatic.is_(False),
        )
    ).scalar_one()
    return int(opened), int(decided)
