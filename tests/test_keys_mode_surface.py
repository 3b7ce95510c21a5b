"""Keys mode's side surfaces (issue 9, item 7): docs and metrics need a key, artifacts never render on the
dashboard's origin, the session cookie is ``__Host-`` over TLS, and the saga staleness window is the
server's setting."""

from __future__ import annotations

import re

import httpx
import pytest

from saferun.api.server import create_app
from saferun.config import get_settings
from saferun.core.identity import IdentityService
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests.authz_world import build

DOC_PATHS = ("/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")


def client(orch: WorkflowOrchestrator, auth: str, base_url: str = "http://127.0.0.1") -> httpx.AsyncClient:
    app = create_app(orch, auth=auth, sweep=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


@pytest.fixture
def orch(db: Database) -> WorkflowOrchestrator:
    return WorkflowOrchestrator(database=db)


async def test_docs_and_metrics_need_a_key_in_keys_mode(orch: WorkflowOrchestrator) -> None:
    _, key = IdentityService(orch.db).create_identity_with_key("ops", roles=["executor"])
    auth = {"Authorization": f"Bearer {key.api_key}"}
    async with client(orch, "keys") as c:
        for path in DOC_PATHS:
            res = await c.get(path)
            assert res.status_code == 401, path
            assert res.json()["detail"]["error"] == "Unauthorized"
            assert (await c.get(path, headers={"Authorization": "Bearer sr_key_bad"})).status_code == 401
            assert (await c.get(path, headers=auth)).status_code == 200, path
        assert (await c.get("/api/health")).status_code == 200  # probes carry no key
        schema = (await c.get("/openapi.json", headers=auth)).json()
        assert "/api/workflows" in schema["paths"] and "SafeRunError" in schema["components"]["schemas"]
        assert "# TYPE" in (await c.get("/metrics", headers=auth)).text
    async with client(orch, "open") as c:  # local development: as before, no key
        for path in DOC_PATHS:
            assert (await c.get(path)).status_code == 200, path


async def test_public_docs_setting_opens_them(
    orch: WorkflowOrchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAFERUN_PUBLIC_DOCS", "true")  # Settings are read per request: no restart needed
    async with client(orch, "keys") as c:
        for path in DOC_PATHS:
            assert (await c.get(path)).status_code == 200, path
        assert (await c.get("/api/workflows")).status_code == 401  # only the docs became public


async def test_artifacts_are_attachments_never_sniffed(db: Database) -> None:
    world = await build(db)
    async with client(world.orch, "keys") as c:
        res = await c.get(f"/api/artifacts/{world.a.sha256}", headers=world.headers["exec_a"])
    assert res.status_code == 200
    assert res.headers["x-content-type-options"] == "nosniff"
    assert res.headers["content-disposition"] == f'attachment; filename="{world.a.sha256}"'


async def _sign_in(c: httpx.AsyncClient, key: str) -> httpx.Response:
    page = (await c.get("/login")).text
    token = re.search(r'name="login_token" value="([^"]+)"', page)
    assert token is not None
    origin = str(c.base_url).rstrip("/")
    return await c.post(
        "/login",
        data={"api_key": key, "next": "/approvals", "login_token": token.group(1)},
        headers={"Origin": origin},
    )


@pytest.mark.parametrize(
    ("base_url", "name", "secure"),
    [
        ("https://saferun.example", "__Host-saferun_session", True),
        ("http://127.0.0.1", "saferun_session", False),
    ],
)
async def test_session_cookie_is_host_prefixed_over_tls(
    orch: WorkflowOrchestrator, base_url: str, name: str, secure: bool
) -> None:
    _, key = IdentityService(orch.db).create_identity_with_key("rita", roles=["supervisor"])
    async with client(orch, "keys", base_url) as c:
        res = await _sign_in(c, key.api_key)
        assert res.status_code == 303, res.text
        cookie = next(x for x in res.headers.get_list("set-cookie") if "saferun_session=" in x)
        attributes = [part.strip().lower() for part in cookie.split(";")]
        assert cookie.startswith(f"{name}=")
        assert "path=/" in attributes and ("secure" in attributes) is secure
        assert not any(a.startswith("domain=") for a in attributes)  # __Host- forbids a Domain
        assert (await c.get("/approvals")).status_code == 200  # the cookie it set signs the browser in
        if secure:  # a plain-named cookie (tossed from a sibling or http page) is not honoured over TLS
            value = cookie.split(";", 1)[0].split("=", 1)[1]
            c.cookies.clear()
            c.cookies.set("saferun_session", value)
            assert (await c.get("/api/workflows")).status_code == 401


async def test_stale_claim_window_is_the_servers(db: Database) -> None:
    world = await build(db)
    url = f"/api/workflows/{world.a.workflow_id}/rollback/steps/{world.a.step_id}/claim"
    async with client(world.orch, "keys") as c:
        refused = await c.post(url, json={"owner": "x", "stale_claim_seconds": 0.001},
                               headers=world.headers["exec_a"])
        assert refused.status_code == 422 and refused.json()["detail"]["field"] == "stale_claim_seconds"
    assert get_settings().stale_claim_seconds == 300.0


@pytest.mark.parametrize(
    ("peer", "name", "secure"),
    [
        ("10.0.0.5", "__Host-saferun_session", True),  # the TLS-terminating proxy named in the setting
        ("198.51.100.9", "saferun_session", False),  # anyone else: their X-Forwarded-Proto is ignored
    ],
)
async def test_forwarded_proto_from_a_trusted_proxy_makes_the_cookie_host_prefixed(
    orch: WorkflowOrchestrator, monkeypatch: pytest.MonkeyPatch, peer: str, name: str, secure: bool
) -> None:
    """A proxy terminates TLS and talks plain http to SafeRun: the browser is on https, so the session
    cookie must be ``__Host-`` and Secure. Only a peer in SAFERUN_TRUSTED_PROXIES can say so."""
    monkeypatch.setenv("SAFERUN_TRUSTED_PROXIES", "10.0.0.5")
    _, key = IdentityService(orch.db).create_identity_with_key("rita", roles=["supervisor"])
    app = create_app(orch, auth="keys", sweep=False)
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://saferun.example", headers=proxied
    ) as c:
        # the browser is on https: it sends Secure cookies back, which httpx on a plain-http base URL
        # does not, so the cookies travel by hand
        form = await c.get("/login")
        token = re.search(r'name="login_token" value="([^"]+)"', form.text)
        assert token is not None
        login_cookie = "; ".join(x.split(";", 1)[0] for x in form.headers.get_list("set-cookie"))
        c.cookies.clear()
        res = await c.post(
            "/login",
            data={"api_key": key.api_key, "next": "/approvals", "login_token": token.group(1)},
            headers={"Origin": "https://saferun.example", "Cookie": login_cookie},
        )
        assert res.status_code == 303, res.text
        cookies = [x for x in res.headers.get_list("set-cookie") if "saferun_session=" in x]
        [cookie] = cookies
        attributes = [part.strip().lower() for part in cookie.split(";")]
        assert cookie.startswith(f"{name}=")
        assert ("secure" in attributes) is secure and "path=/" in attributes
        assert not any(a.startswith("domain=") for a in attributes)
        value = cookie.split(";", 1)[0].split("=", 1)[1]
        c.cookies.clear()
        signed_in = await c.get("/api/workflows", headers={"Cookie": f"{name}={value}"})
        assert signed_in.status_code == 200, signed_in.text
        other = "saferun_session" if secure else "__Host-saferun_session"
        assert (await c.get("/api/workflows", headers={"Cookie": f"{other}={value}"})).status_code == 401
