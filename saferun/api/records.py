"""Signed decision records over HTTP: a workflow's bundle for whoever may see it, and the public keys.

The keys endpoint is public on purpose (like a JWKS document): a third party who receives a bundle must
be able to fetch the keys to check it without being a SafeRun user. It publishes public halves only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from saferun.api.deps import CallerDep, OrchestratorDep, visible
from saferun.api.one_hop import OneHopRoute
from saferun.config import get_settings
from saferun.core.bundles import FORMAT, export_bundle
from saferun.core.signing import KeyRing

router = APIRouter(tags=["records"], route_class=OneHopRoute)


def _keys(orch: Any) -> KeyRing:
    return KeyRing(orch.db, key_file=get_settings().signing_key_file)


@router.get(
    "/api/workflows/{workflow_id}/export",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": f"a signed {FORMAT} bundle"}},
)
def export(workflow_id: str, orch: OrchestratorDep, caller: CallerDep) -> Response:
    """The workflow's signed decision record (`saferun verify FILE` checks it offline). Refused with 409
    when the workflow's own audit chain does not verify: the server never signs a forged record."""
    visible(orch, caller, workflow_id)
    bundle = export_bundle(orch.db, _keys(orch), workflow_id)
    return Response(
        bundle,
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="saferun-{workflow_id}.bundle.json"',
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/api/signing-keys")
def signing_keys(orch: OrchestratorDep) -> dict[str, Any]:
    """Every public key that ever signed a bundle here, retired ones included; save this answer and pass
    it to `saferun verify --keys FILE` to check bundles with no connection to this server."""
    return {"algorithm": "Ed25519", "keys": [k.as_dict() for k in _keys(orch).public_keys()]}
