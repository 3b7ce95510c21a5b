"""Rows of ``identity_groups`` (who votes in which group), identities' ``team``, and ``approval_votes``.

Like every storage module, each function takes a ``Connection`` and never commits. A vote is inserted by
``saferun.core.quorum.cast`` under the workflow's lock, in the transaction that appends its ``vote``
event; the unique (request_id, voter) key is the second guard against a double vote.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, delete, insert, select, update

from saferun.domain.quorum import GROUP_PATTERN
from saferun.errors import InvalidInput
from saferun.storage.identities import get_identity
from saferun.storage.schema import approval_votes, identities, identity_groups

_GROUP_RE = re.compile(GROUP_PATTERN)
_TEAM_RE = re.compile(GROUP_PATTERN)

_MEMBERS = (
    select(
        identities.c.identity_id,
        identities.c.roles,
        identities.c.disabled,
        identities.c.team,
    )
    .select_from(identity_groups.join(identities, identities.c.identity_id == identity_groups.c.identity_id))
    .where(identity_groups.c.group_name == bindparam("b_group"))
    .order_by(identities.c.identity_id)
)
_VOTES = (
    select(approval_votes)
    .where(approval_votes.c.request_id == bindparam("b_req"))
    .order_by(approval_votes.c.created_at, approval_votes.c.vote_id)
)


def check_group(value: Any, field: str = "group") -> str:
    if not isinstance(value, str) or not _GROUP_RE.fullmatch(value):
        raise InvalidInput(field, f"{value!r} is not a group name (letters, digits, _ . -; at most 100)")
    return value


def check_team(value: Any, field: str = "team") -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _TEAM_RE.fullmatch(value):
        raise InvalidInput(field, f"{value!r} is not a team name (letters, digits, _ . -; at most 100)")
    return value


def members(conn: Connection, group: str) -> list[RowMapping]:
    """The group's identities (id, roles, disabled, team), one indexed range read."""
    return list(conn.execute(_MEMBERS, {"b_group": group}).mappings())


def groups_of(conn: Connection, identity_id: str) -> list[str]:
    rows = conn.execute(
        select(identity_groups.c.group_name)
        .where(identity_groups.c.identity_id == identity_id)
        .order_by(identity_groups.c.group_name)
    )
    return [r[0] for r in rows]


def all_groups(conn: Connection) -> dict[str, list[str]]:
    """identity id -> its groups, for lists."""
    out: dict[str, list[str]] = {}
    query = select(identity_groups).order_by(identity_groups.c.identity_id, identity_groups.c.group_name)
    for row in conn.execute(query).mappings():
        out.setdefault(row["identity_id"], []).append(row["group_name"])
    return out


def set_membership(
    conn: Connection, identity_id: str, groups: Iterable[str] | None, team: str | None, *, set_team: bool
) -> RowMapping:
    """Replace the identity's groups (when ``groups`` is not None) and its team (when ``set_team``).
    Checked before any write: a bad name is a 422 naming ``group``/``team`` and nothing changes."""
    names = None if groups is None else sorted({check_group(g) for g in groups})
    team = check_team(team) if set_team else None
    get_identity(conn, identity_id)
    if names is not None:
        conn.execute(delete(identity_groups).where(identity_groups.c.identity_id == identity_id))
        if names:
            conn.execute(
                insert(identity_groups), [{"group_name": g, "identity_id": identity_id} for g in names]
            )
    if set_team:
        conn.execute(update(identities).where(identities.c.identity_id == identity_id).values(team=team))
    return get_identity(conn, identity_id)


def votes_for(conn: Connection, request_id: str) -> list[RowMapping]:
    return list(conn.execute(_VOTES, {"b_req": request_id}).mappings())


def votes_for_workflow(conn: Connection, workflow_id: str) -> list[RowMapping]:
    query = (
        select(approval_votes)
        .where(approval_votes.c.workflow_id == workflow_id)
        .order_by(approval_votes.c.created_at, approval_votes.c.vote_id)
    )
    return list(conn.execute(query).mappings())


def votes_for_requests(conn: Connection, request_ids: list[str]) -> dict[str, list[RowMapping]]:
    """Votes of several requests in one statement (the queue's progress column)."""
    if not request_ids:
        return {}
    out: dict[str, list[RowMapping]] = {r: [] for r in request_ids}
    query = (
        select(approval_votes)
        .where(approval_votes.c.request_id.in_(request_ids))
        .order_by(approval_votes.c.created_at, approval_votes.c.vote_id)
    )
    for row in conn.execute(query).mappings():
        out[row["request_id"]].append(row)
    return out


def insert_vote(conn: Connection, **values: Any) -> None:
    conn.execute(insert(approval_votes), values)
