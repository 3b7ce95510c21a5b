"""Rebinding-proof open mode and forwarding headers (issue 9, finding 3), on real ASGI scopes: a server
bound to 127.0.0.1:8000 (httpx sets ``scope["server"]`` from the URL) reached with foreign ``Host`` and
forged/real forwarding headers."""

from __future__ import annotations

import re

import httpx
import pytest

from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests import ui_support as ui

BASE = "http://127.0.0.1:8000"


def client(orch: WorkflowOrchestrator, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    app = create_app(orch, auth="auto", sweep=False)  # auto on loopback: open mode
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    return httpx.AsyncClient(transport=transport, base_url=BASE)


@pytest.fixture
def orch(db: Database) -> WorkflowOrchestrator:
    return WorkflowOrchestrator(database=db)


async def test_a_rebinding_host_is_refused_and_nothing_is_decided(orch: WorkflowOrchestrator) -> None:
    wf, request_id = ui.data_workflow(orch)
    async with client(orch) as c:
        for host in ("evil.example:8000", "evil.example", "127.0.0.1.nip.io:8000", "localhost:9999"):
            res = await c.get(f"/approvals/{request_id}", headers={"Host": host})
            assert res.status_code == 421, host
            body = res.json()["detail"]
            assert body["field"] == "Host" and "SAFERUN_ALLOWED_HOSTS" in body["message"]
            posted = await c.post(
                f"/api/approvals/{request_id}/approve",
                json={"approved_by": orch.get_workflow(wf).supervisor_id, "rationale": "rebound"},
                headers={"Host": host},
            )
            assert posted.status_code == 421
        for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "app.localhost:8000"):
            assert (await c.get("/api/health", headers={"Host": host})).status_code == 200, host
    assert orch.get_approval_request(request_id).status.lower() == "pending"


async def test_allowed_hosts_setting_serves_a_named_host(
    orch: WorkflowOrchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAFERUN_ALLOWED_HOSTS", "saferun.internal")
    async with client(orch) as c:
        assert (await c.get("/api/workflows", headers={"Host": "saferun.internal"})).status_code == 200
        assert (await c.get("/api/workflows", headers={"Host": "other.internal"})).status_code == 421


async def test_forwarded_headers_do_not_make_a_remote_client_local(
    orch: WorkflowOrchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a same-host proxy (peer 127.0.0.1) forwarding a remote client: not trusted, so not known to be local
    async with client(orch) as c:
        for header in ({"X-Forwarded-For": "203.0.113.7"}, {"Forwarded": "for=203.0.113.7"},
                       {"X-Real-IP": "203.0.113.7"}, {"X-Forwarded-For": "127.0.0.1"}):
            res = await c.get("/api/workflows", headers=header)
            assert res.status_code == 401 and "SAFERUN_TRUSTED_PROXIES" in res.text, header
        assert (await c.get("/api/workflows")).status_code == 200  # the same client, no proxy: local
    monkeypatch.setenv("SAFERUN_TRUSTED_PROXIES", "127.0.0.1")
    async with client(orch) as c:
        # the trusted proxy says the client is remote: refused, even if the client forged a loopback entry
        forged = {"X-Forwarded-For": "127.0.0.1, 203.0.113.7"}
        assert (await c.get("/api/workflows", headers=forged)).status_code == 401
        # the trusted proxy says the client is local: open mode serves it
        assert (await c.get("/api/workflows", headers={"X-Forwarded-For": "127.0.0.1"})).status_code == 200
    async with client(orch, peer="198.51.100.9") as c:  # an untrusted peer cannot claim to be local
        res = await c.get("/api/workflows", headers={"X-Forwarded-For": "127.0.0.1"})
        assert res.status_code == 401


async def test_forged_forwarded_host_cannot_satisfy_the_origin_check(orch: WorkflowOrchestrator) -> None:
    """A dashboard form posted with ``Origin: http://evil.example`` and a forged ``X-Forwarded-Host`` to
    match it: X-Forwarded-Host is believed only from a trusted proxy, so the pair never passes."""
    _, request_id = ui.data_workflow(orch)
    async with client(orch) as c:
        page = await c.get(f"/approvals/{request_id}")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None
        fields = {"csrf_token": token.group(1), "decision": "APPROVED", "acting_as": "reviewer"}
        url = f"/ui/approvals/{request_id}/decision"
        forged = await c.post(url, data=fields,
                              headers={"Origin": "http://evil.example", "X-Forwarded-Host": "evil.example"})
        assert forged.status_code in (401, 403)
        cross = await c.post(url, data=fields, headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403 and "another site" in cross.text
        assert orch.get_approval_request(request_id).status.lower() == "pending"
        ok = await c.post(url, data=fields, headers={"Origin": BASE})
        assert ok.status_code in (200, 303), ok.text
    assert orch.get_approval_request(request_id).status.lower() == "decided"
