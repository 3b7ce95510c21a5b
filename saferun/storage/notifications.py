"""Rows of ``notifications``, ``notification_deliveries``, ``decision_links`` and ``identity_emails``.

Like every storage module, each function takes a ``Connection`` and never commits; the caller owns the
transaction. A request's notices are written with the change they announce, so a notice exists exactly
when the change does: the database writes ``waiting`` with a pending request's row and the new status when
the row leaves ``pending`` (decided, expired, cancelled, closed; revision 0024's triggers), and ``record``
writes the others (an escalation rung's) inside the engine's transaction. Everything else is the
dispatcher's and the decision links' (``saferun.notifications``).

Claims are conditional UPDATEs, as elsewhere: ``claim_notice`` lets one process fan a notice out, and
``claim_delivery`` takes a delivery for a lease (``next_attempt_at`` moves to the lease's end, so a
process that dies mid-send simply lets the lease run out and another one retries).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping, delete, insert, select, update

from saferun.storage import leased
from saferun.storage.schema import (
    decision_links,
    identity_emails,
    notification_deliveries,
    notifications,
    utcnow,
)

WAITING = "waiting"
ESCALATED = "escalated"  # "escalated:<rung>": an escalation ladder's reminder or reassignment


def awaits_decision(kind: str) -> bool:
    """Whether a notice asks its recipient to decide (with a decision link to their own channel): the
    first "waiting" notice and every escalation rung's ("escalated:<n>", one per rung)."""
    return kind == WAITING or kind.startswith(ESCALATED + ":")
# closed: an item of a checkpoint that asked several things at once, closed by a sibling's rejection
KINDS = ("waiting", "decided", "expired", "cancelled", "closed")

PENDING = leased.PENDING
DELIVERED = "delivered"
FAILED = "failed"
SKIPPED = "skipped"  # a "waiting" notice whose request was decided before it could be sent


# --- notices (written in the engine's transactions) ------------------------------------------------------


def record(conn: Connection, kind: str, request_id: str, workflow_id: str) -> None:
    """Write the notice that ``request_id`` is ``kind``, in the caller's transaction (for a kind that is
    not a status change of the request: those the database writes with the change).

    Written whether or not this process has channels configured: the process that opened or decided a
    request (an embedded agent, a CLI) is often not the server that delivers notices. It never refuses
    (a kind outside ``KINDS`` is stored as given): a notice must not be able to fail the decision it
    announces.
    """
    conn.execute(
        _INSERT_NOTICE,
        {"kind": kind, "request_id": request_id, "workflow_id": workflow_id, "created_at": utcnow()},
    )


_INSERT_NOTICE = insert(notifications).values(dispatched_at=None)  # built once: every request writes it


def undispatched(conn: Connection, limit: int) -> list[RowMapping]:
    query = (
        select(notifications)
        .where(notifications.c.dispatched_at.is_(None))
        .order_by(notifications.c.id)
        .limit(limit)
    )
    return list(conn.execute(query).mappings())


def claim_notice(conn: Connection, notice_id: int, now: datetime) -> bool:
    """Mark a notice dispatched; True for the one process that did (it then writes the deliveries)."""
    result = conn.execute(
        update(notifications)
        .where(notifications.c.id == notice_id, notifications.c.dispatched_at.is_(None))
        .values(dispatched_at=now)
    )
    return result.rowcount == 1


def claim_notices(conn: Connection, notice_ids: list[int], now: datetime) -> set[int]:
    """Mark a batch of notices dispatched in one statement; the ids this process won (RETURNING: a notice
    another replica claimed first is not in the answer, so each is fanned out once)."""
    if not notice_ids:
        return set()
    result = conn.execute(
        update(notifications)
        .where(notifications.c.id.in_(notice_ids), notifications.c.dispatched_at.is_(None))
        .values(dispatched_at=now)
        .returning(notifications.c.id)
    )
    return {row[0] for row in result}


def get_notice(conn: Connection, notice_id: int) -> RowMapping:
    return conn.execute(select(notifications).where(notifications.c.id == notice_id)).mappings().one()


def notices_for(conn: Connection, request_id: str) -> list[RowMapping]:
    query = select(notifications).where(notifications.c.request_id == request_id).order_by(notifications.c.id)
    return list(conn.execute(query).mappings())


# --- deliveries ----------------------------------------------------------------------------------------


def add_delivery(
    conn: Connection, notice_id: int, channel: str, target: str, fmt: str, now: datetime
) -> None:
    conn.execute(
        insert(notification_deliveries).values(
            notification_id=notice_id,
            channel=channel,
            target=target,
            format=fmt,
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


def due_deliveries(conn: Connection, now: datetime, limit: int) -> list[RowMapping]:
    return leased.due(conn, notification_deliveries, now, limit)


def claim_delivery(conn: Connection, row: RowMapping, lease: timedelta, now: datetime) -> bool:
    """Take ``row`` for ``lease``: one sender at a time, and a crashed sender's lease simply runs out."""
    return leased.claim(conn, notification_deliveries, row, lease, now)


def finish_delivery(
    conn: Connection,
    delivery_id: int,
    status: str,
    *,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
    now: datetime | None = None,
) -> None:
    """Record an attempt's outcome: ``delivered``, ``skipped``, ``failed``, or ``pending`` again (retry)."""
    values: dict[str, Any] = {"status": status, "last_error": None if error is None else error[:2000]}
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    if status == DELIVERED:
        values["delivered_at"] = now or utcnow()
    conn.execute(
        update(notification_deliveries).where(notification_deliveries.c.id == delivery_id).values(**values)
    )


def get_delivery(conn: Connection, delivery_id: int) -> RowMapping | None:
    query = select(notification_deliveries).where(notification_deliveries.c.id == delivery_id)
    return conn.execute(query).mappings().first()


def deliveries(conn: Connection, request_id: str | None = None) -> list[RowMapping]:
    """Deliveries (with their notice's ``kind`` and ``request_id``), oldest first."""
    query = (
        select(notification_deliveries, notifications.c.kind, notifications.c.request_id)
        .join_from(
            notification_deliveries,
            notifications,
            notification_deliveries.c.notification_id == notifications.c.id,
        )
        .order_by(notification_deliveries.c.id)
    )
    if request_id is not None:
        query = query.where(notifications.c.request_id == request_id)
    return list(conn.execute(query).mappings())


def requeue_failed(conn: Connection, now: datetime, request_id: str | None = None) -> int:
    """Send failed deliveries again (after the receiver or the SMTP settings were fixed)."""
    where = []
    if request_id is not None:
        notices = select(notifications.c.id).where(notifications.c.request_id == request_id)
        where.append(notification_deliveries.c.notification_id.in_(notices))
    return leased.requeue_failed(conn, notification_deliveries, now, *where)


# --- decision links --------------------------------------------------------------------------------------


def hash_token(token: str) -> str:
    """Hex SHA-256 of a link token. A fast hash suffices for 256 random bits (see storage/identities)."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def add_link(
    conn: Connection,
    token_hash: str,
    request_id: str,
    supervisor_id: str,
    expires_at: datetime,
    delivery_id: int | None,
    now: datetime,
) -> None:
    conn.execute(
        insert(decision_links).values(
            token_hash=token_hash,
            request_id=request_id,
            supervisor_id=supervisor_id,
            delivery_id=delivery_id,
            created_at=now,
            expires_at=expires_at,
            used_at=None,
            decision=None,
        )
    )


def find_link(conn: Connection, token_hash: str) -> RowMapping | None:
    query = select(decision_links).where(decision_links.c.token_hash == token_hash)
    return conn.execute(query).mappings().first()


def use_link(conn: Connection, token_hash: str, decision: str, now: datetime) -> bool:
    """Spend a link: True for the one caller whose UPDATE found it unused and unexpired."""
    result = conn.execute(
        update(decision_links)
        .where(
            decision_links.c.token_hash == token_hash,
            decision_links.c.used_at.is_(None),
            decision_links.c.expires_at > now,
        )
        .values(used_at=now, decision=decision)
    )
    return result.rowcount == 1


def revoke_unused_links(conn: Connection, delivery_id: int) -> int:
    """Delete a delivery's unused links (minted for an attempt that did not get through)."""
    result = conn.execute(
        delete(decision_links).where(
            decision_links.c.delivery_id == delivery_id, decision_links.c.used_at.is_(None)
        )
    )
    return int(result.rowcount or 0)


def links_for(conn: Connection, request_id: str) -> list[RowMapping]:
    query = (
        select(decision_links)
        .where(decision_links.c.request_id == request_id)
        .order_by(decision_links.c.created_at)
    )
    return list(conn.execute(query).mappings())


# --- e-mail addresses ------------------------------------------------------------------------------------


def email_of(conn: Connection, identity_id: str) -> str | None:
    query = select(identity_emails.c.email).where(identity_emails.c.identity_id == identity_id)
    return conn.execute(query).scalar()


def set_email(conn: Connection, identity_id: str, email: str | None) -> None:
    """Store (or with None remove) an identity's address; the caller checked both are well formed."""
    conn.execute(delete(identity_emails).where(identity_emails.c.identity_id == identity_id))
    if email is not None:
        conn.execute(
            insert(identity_emails).values(identity_id=identity_id, email=email, updated_at=utcnow())
        )
