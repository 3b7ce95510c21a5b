"""Which platforms may lock escrow from a poster's funding account: ``/api/platform-grants``.

A platform identity (another SafeRun using this server as its x402 platform) names the poster of the jobs
it creates; naming is not consent. ``lock`` through ``/x402`` draws on a poster's funding account only for
a platform that poster allowed here (``saferun.domain.platform_policy.check_poster_grant``). The poster
manages its own grants with its key; an admin may do it for a poster (``poster_id`` in the body or query).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field

from saferun.api.deps import CallerDep, OrchestratorDep, enforce
from saferun.api.one_hop import OneHopRoute
from saferun.api.schemas import Strict
from saferun.domain.platform_policy import may_grant
from saferun.domain.policy import Caller, Role
from saferun.errors import InvalidInput, NotFound
from saferun.platform import scope
from saferun.storage import identities as id_store

router = APIRouter(prefix="/api/platform-grants", tags=["x402 platform"], route_class=OneHopRoute)

Id = Annotated[str, Field(min_length=1, max_length=200)]


class Grant(Strict):
    platform_id: Id
    poster_id: Id | None = Field(default=None, description="an admin granting for a poster; default: caller")


def _poster(caller: Caller, poster_id: str | None) -> str:
    poster = poster_id or caller.identity_id
    if not poster:
        raise InvalidInput("poster_id", "name the poster (open mode has no caller identity)")
    enforce(may_grant(caller, poster))
    return poster


@router.get("")
def list_grants(
    orch: OrchestratorDep, caller: CallerDep, poster_id: str | None = Query(None, max_length=200)
) -> dict[str, Any]:
    """The platforms the poster allowed to lock escrow from its funding account."""
    poster = _poster(caller, poster_id)
    with orch.db.read() as conn:
        return {"poster_id": poster, "platforms": sorted(scope.grants_of(conn, poster))}


@router.post("")
def grant(body: Grant, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """Allow a platform identity to lock escrow from the poster's funding account (idempotent)."""
    poster = _poster(caller, body.poster_id)
    with orch.db.transaction() as conn:
        for who, field, role in (
            (poster, "poster_id", Role.POSTER),
            (body.platform_id, "platform_id", Role.PLATFORM),
        ):
            row = id_store.find_identity(conn, who)
            if row is None:
                raise NotFound(f"{field}: identity {who!r} does not exist", field=field, identity_id=who)
            if role not in id_store.roles_of(row):
                raise InvalidInput(field, f"identity {who!r} does not have the {role.value} role")
        added = scope.grant(conn, poster, body.platform_id, caller.identity_id or poster)
        platforms = sorted(scope.grants_of(conn, poster))
    return {"poster_id": poster, "platform_id": body.platform_id, "granted": added, "platforms": platforms}


@router.delete("/{platform_id}")
def revoke(
    platform_id: str,
    orch: OrchestratorDep,
    caller: CallerDep,
    poster_id: str | None = Query(None, max_length=200),
) -> dict[str, Any]:
    """Stop a platform locking escrow from the poster's funding (escrow already locked stays locked)."""
    poster = _poster(caller, poster_id)
    with orch.db.transaction() as conn:
        removed = scope.revoke(conn, poster, platform_id)
        platforms = sorted(scope.grants_of(conn, poster))
    return {"poster_id": poster, "platform_id": platform_id, "revoked": removed, "platforms": platforms}
