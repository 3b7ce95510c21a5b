"""The attacker's authorization matrix, generated from the app's own route table (issue 9).

Every route in ``app.routes`` x every caller of ``tests/authz_world.py`` is requested against workflow A,
and the answer must be the status written in ``EXPECTED``: one table, one row per route. A route the table
does not name fails the test, so a new endpoint cannot be added without deciding who may call it.
``ALLOWED`` means "got past authorization" (any status but 401/403/404): the matrix is about who is let in,
and a state conflict (409) or a refused amount (422) after that is another test's business.

Bodies must not leak either: B's callers (and everyone who may not see A) never find A's ids in any list,
dashboard queue or the SSE event stream, while A's own parties do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx

from saferun.api.server import create_app
from saferun.storage.database import Database
from tests.authz_world import CALLERS, World, build, params

ALLOWED = "allowed"  # not 401, 403 or 404: authorization let the caller through
NAMES = list(CALLERS)
A_SIDE = ("poster_a", "exec_a", "sup_a", "admin", "plat_a")  # who may see workflow A
FOREIGN = ("poster_b", "exec_b", "sup_b", "sup_free", "plat_b")  # authenticated, but A is not theirs


def row(default: int | str, **cells: int | str) -> dict[str, int | str]:
    """One route's expectations: ``default`` for every caller, then the named exceptions."""
    unknown = set(cells) - set(NAMES)
    assert not unknown, unknown
    return {name: cells.get(name, default) for name in NAMES}


def public(status: int | str = 200) -> dict[str, int | str]:
    """Anyone, with or without a key (a key is not even looked at)."""
    return row(status)


def keyed(status: int | str = 200) -> dict[str, int | str]:
    """Any valid key; no key or a bad one is 401."""
    return row(status, none=401, bad=401)


def reads_a(status: int | str = 200) -> dict[str, int | str]:
    """A detail of workflow A: its parties, admins and its platform; everyone else 404 (not revealed)."""
    return row(404, none=401, bad=401, **{n: status for n in A_SIDE})


def agent_of_a() -> dict[str, int | str]:
    """Driving A as its agent: its executor and admins; A's other parties 403; foreigners 404."""
    return row(404, none=401, bad=401, exec_a=ALLOWED, admin=ALLOWED, poster_a=403, sup_a=403, plat_a=403)


def poster_of_a() -> dict[str, int | str]:
    """The poster's acts (cancel, rate): its poster and admins; A's other parties 403; foreigners 404."""
    return row(404, none=401, bad=401, poster_a=ALLOWED, admin=ALLOWED, exec_a=403, sup_a=403, plat_a=403)


def page_a() -> dict[str, int | str]:
    """A dashboard page about A: no key is sent to sign in (303); a bad key is the 401 page."""
    return row(404, none=303, bad=401, **{n: 200 for n in A_SIDE})


def fragment_a() -> dict[str, int | str]:
    return row(404, none=401, bad=401, **{n: 200 for n in A_SIDE})


def platform_api(status: int | str = ALLOWED, admin: int | str | None = None) -> dict[str, int | str]:
    """A ``/x402`` call that names no workflow: any platform key; admin only where it reads or manages
    supervisor profiles (else 403 admin_moves_no_money); posters, executors, supervisors 403."""
    return row(403, none=401, bad=401, admin=status if admin is None else admin, plat_a=status, plat_b=status)


def platform_reads_a(status: int | str = 200) -> dict[str, int | str]:
    """Reading A through ``/x402``: A's platform and admins; the other platform 404 (like an unknown id)."""
    return row(403, none=401, bad=401, admin=status, plat_a=status, plat_b=404)


def platform_changes_a(plat_b: int = 404) -> dict[str, int | str]:
    """Changing A through ``/x402``: A is an engine workflow, so even its platform is refused
    (``engine_workflow``); the other platform 404; admin 403 (``admin_moves_no_money``)."""
    return row(403, none=401, bad=401, admin=403, plat_a=403, plat_b=plat_b)


W = "/api/workflows/{workflow_id}"
EXPECTED: dict[str, dict[str, int | str]] = {
    # --- docs and metrics need a key in keys mode (SAFERUN_PUBLIC_DOCS=false, the default); health is open
    "GET /openapi.json": keyed(),
    "GET /docs": keyed(),
    "GET /docs/oauth2-redirect": keyed(),
    "GET /docs/assets/{asset}": keyed(),
    "GET /redoc": keyed(),
    "GET /metrics": keyed(),
    "GET /api/health": public(),
    "GET /x402/health": public(),
    # --- lists: any key, filtered by the visibility rule (the leak test checks the bodies)
    "GET /api/workflows": keyed(),
    "GET /api/workflows/stuck": keyed(),  # filtered by the visibility rule like every list
    "GET /api/approvals/pending": keyed(),
    "GET /api/stats": keyed(),  # aggregate counts only, no ids
    "GET /api/events": keyed(),  # filtered stream: test_sse_stream_carries_only_visible_workflows
    "POST /api/workflows": row(403, none=401, bad=401, poster_a=201, poster_b=201, admin=201),
    # --- workflow A's details: the visibility rule
    f"GET {W}": reads_a(),
    f"GET {W}/snapshots": reads_a(),
    f"GET {W}/state": reads_a(),
    f"GET {W}/steps": reads_a(),
    f"GET {W}/audit": reads_a(),
    f"GET {W}/ledger": reads_a(),
    f"GET {W}/export": reads_a(),  # the signed decision record: whoever may see the workflow
    "GET /api/signing-keys": public(),  # public halves only, like a JWKS document
    "GET /api/policy": keyed(),  # the rules every party is bound by
    "POST /api/policy/evaluate": keyed(409),  # 409: no policy configured in the matrix's server
    f"GET {W}/escrow/payments": reads_a(),
    "GET /api/snapshots/{snapshot_id}": reads_a(),
    "GET /api/artifacts/{sha256}": reads_a(),
    "GET /api/approvals/{request_id}": reads_a(),
    "GET /api/approvals/{request_id}/items": reads_a(),  # the checkpoint's items: who may read the request
    # --- A's agent
    f"POST {W}/start": agent_of_a(),
    f"POST {W}/checkpoints": agent_of_a(),
    f"POST {W}/steps": agent_of_a(),
    f"GET {W}/rollback/steps": agent_of_a(),  # 409 for them: A is not rolling back
    f"POST {W}/rollback/steps/{{step_id}}/claim": agent_of_a(),
    f"POST {W}/rollback/steps/{{step_id}}/finish": agent_of_a(),
    f"POST {W}/rollback/complete": agent_of_a(),
    f"POST {W}/settle": agent_of_a(),
    f"POST {W}/complete": agent_of_a(),
    f"POST {W}/fail": agent_of_a(),
    "POST /api/approvals/{request_id}/alerts": agent_of_a(),
    # --- A's poster
    f"POST {W}/escrow/fund": row(404, none=401, bad=401, poster_a=ALLOWED, admin=ALLOWED, exec_a=403,
                                 sup_a=403, plat_a=403),
    f"POST {W}/cancel": poster_of_a(),
    f"POST {W}/fork": poster_of_a(),  # a fork locks a new escrow from A's poster
    f"POST {W}/rating": poster_of_a(),
    f"POST {W}/resolve": poster_of_a(),  # 409 for them: A is not stuck
    # --- deciding A: only its assigned supervisor (four eyes: poster/executor 403); admin is not it
    # a batch answers 200 to any key with one result per item: who may decide each item is checked per
    # item (tests/test_batch_decisions.py), so a refused or foreign item is a result, not a status
    "POST /api/approvals/batch": keyed(),
    "POST /api/approvals/submit": row(404, none=401, bad=401, sup_a=ALLOWED, poster_a=403, exec_a=403,
                                      admin=403, plat_a=403),
    # --- dashboard pages, fragments and forms
    "GET /": row(303),
    "GET /approvals": row(200, none=303, bad=401),
    "GET /workflows": row(200, none=303, bad=401),
    "GET /stats": row(200, none=303, bad=401),
    "GET /approvals/{request_id}": page_a(),
    "GET /workflows/{workflow_id}": page_a(),
    "GET /ui/fragments/pending": keyed(),
    "GET /ui/fragments/workflows": keyed(),
    "GET /ui/fragments/stats": keyed(),
    "GET /ui/fragments/nav": keyed(),
    "GET /ui/fragments/workflows/{workflow_id}": fragment_a(),
    "GET /ui/fragments/approvals/{request_id}/status": fragment_a(),
    "POST /ui/approvals/{request_id}/decision": row(404, none=401, bad=401, sup_a=ALLOWED, poster_a=403,
                                                   exec_a=403, admin=403, plat_a=403),
    # a batch from the queue: any signed-in caller; each item is then decided or reported by the API's rules
    # (an unknown id is a per-item not_found, so the page answers 200)
    "POST /ui/approvals/batch": keyed(),
    "POST /ui/workflows/{workflow_id}/resolve": poster_of_a(),  # the API's rule; 409 for them: not stuck
    "POST /ui/workflows/{workflow_id}/fork": poster_of_a(),  # the API's rule: poster or admin
    "GET /ui/static/{name}": row(200),
    "GET /login": row(200),
    "POST /login": row(403),  # no login CSRF token in the form: refused for everyone
    "GET /logout": row(303),  # nobody has a session here: back to the sign-in page
    "POST /logout": row(303),
    "GET /decide/{token}": row(404),  # a single-use link is its own credential; an unknown one is 404
    "POST /decide/{token}": row(403),  # no form token: refused before the link is even looked up
    "GET /decide/{token}/status": row(404),  # the link page's live status: the token is the credential
    # --- the /x402 platform API (saferun.domain.platform_policy, docs/security.md): a platform acts only on
    # its own platform's workflows; A is run by this server's engine, so its platform reads it and changes
    # nothing; admin reads and manages supervisor profiles only. Refused calls move nothing
    # (test_refused_platform_calls_move_nothing).
    "POST /x402/jobs": platform_changes_a(plat_b=409),  # B may not create a job for A's workflow id
    "GET /x402/jobs/{job_id:path}": platform_reads_a(),
    "POST /x402/jobs/{job_id:path}/status": platform_changes_a(),
    "POST /x402/jobs/{parent_job_id:path}/approval-subjobs": platform_changes_a(),
    "POST /x402/escrow/lock": platform_changes_a(),
    "GET /x402/escrow/{escrow_id:path}": platform_reads_a(),
    "POST /x402/escrow/{escrow_id:path}/release": platform_changes_a(),
    "POST /x402/escrow/{escrow_id:path}/split": platform_changes_a(),
    "POST /x402/artifacts": platform_api(201, admin=403),
    # A's snapshot (a state artifact of several parts: 422 for those who may see it); B: 404, no side door
    "GET /x402/artifacts": platform_reads_a(ALLOWED),
    "GET /x402/identities/{user_id:path}": platform_api(200),
    "GET /x402/identities/{user_id:path}/verify": platform_api(200),
    "POST /x402/supervisors": platform_api(201),
    "GET /x402/supervisors": platform_api(200),
    "POST /x402/supervisors/assignments": platform_changes_a(),
    "POST /x402/supervisors/{supervisor_id:path}/requests": platform_changes_a(),
    "POST /x402/supervisors/{supervisor_id:path}/ratings": platform_changes_a(),
    "POST /x402/supervisors/{supervisor_id:path}/approval-quality": platform_changes_a(),
    # which platforms may lock from a poster's funding: the poster's own choice (admin for a poster)
    "GET /api/platform-grants": row(403, none=401, bad=401, poster_a=200, poster_b=200, admin=200),
    "POST /api/platform-grants": row(403, none=401, bad=401, poster_a=200, poster_b=200, admin=ALLOWED),
    "DELETE /api/platform-grants/{platform_id}": row(403, none=401, bad=401, poster_a=200, poster_b=200,
                                                     admin=200),
    # the original X402Client's wire paths: the same platform calls, so the same rules as /x402
    "POST /x402/original/jobs": platform_api(200, admin=403),  # a job for no workflow
    "GET /x402/original/jobs/{job_id}": platform_reads_a(),
    "PATCH /x402/original/jobs/{job_id}": platform_changes_a(),
    "POST /x402/original/jobs/subjobs": platform_changes_a(),
    "POST /x402/original/escrow/lock": platform_changes_a(),
    "POST /x402/original/escrow/release": platform_changes_a(),
    "POST /x402/original/escrow/split": platform_changes_a(),
    "POST /x402/original/artifacts": platform_api(200, admin=403),
    "GET /x402/original/artifacts/{artifact_id}": platform_reads_a(ALLOWED),
    "POST /x402/original/identity/verify": platform_api(200),
    "GET /x402/original/identity/users/{user_id}": platform_api(200),
    "GET /x402/original/marketplace/supervisors": platform_api(200),
    "POST /x402/original/marketplace/supervisors/request": platform_changes_a(),
}

_STATE = {"checkpoint_id": "cp2", "parameters": {"threshold": 5}}
BODIES: dict[str, dict[str, Any]] = {
    "POST /api/workflows": {"json": {"name": "n", "checkpoint_names": ["c"], "escrow_amount": "0",
                                     "poster_id": "{self}", "executor_id": "exec_a"}},
    f"POST {W}/checkpoints": {"json": {"state": _STATE}},
    f"POST {W}/steps": {"json": {"name": "s", "compensation": "undo_s"}},
    f"POST {W}/rollback/steps/{{step_id}}/claim": {"json": {"owner": "me"}},
    f"POST {W}/rollback/steps/{{step_id}}/finish": {"json": {"ok": True}},
    f"POST {W}/rollback/complete": {"json": {}},
    f"POST {W}/settle": {"json": {}},
    f"POST {W}/fail": {"json": {"error": "stop"}},
    f"POST {W}/cancel": {"json": {"reason": "stop"}},
    f"POST {W}/fork": {"json": {"checkpoint": "cp_never"}},
    "POST /api/policy/evaluate": {"json": {"cases": [{"checkpoint": "cp1"}]}},
    f"POST {W}/rating": {"json": {"rating": 5}},
    f"POST {W}/resolve": {"json": {"action": "retry"}},
    "POST /api/approvals/{request_id}/alerts": {"json": {"alerts": [{"rule": "r", "message": "m"}]}},
    "POST /api/approvals/submit": {"json": {"request_id": "{request_id}", "decision": "APPROVED"}},
    "POST /api/approvals/batch": {"json": {"request_ids": ["req_never"], "decision": "APPROVED"}},
    "POST /ui/approvals/{request_id}/decision": {"data": {"decision": "APPROVED", "rationale": "ok"}},
    "POST /ui/approvals/batch": {"data": {"request_id": "req_never", "decision": "APPROVED"}},
    "POST /ui/workflows/{workflow_id}/resolve": {"data": {"action": "retry"}},
    "POST /ui/workflows/{workflow_id}/fork": {"data": {"checkpoint": "cp_never"}},
    "POST /login": {"data": {"api_key": "sr_key_bad"}},
    "POST /logout": {"data": {}},
    "POST /decide/{token}": {"data": {"decision": "APPROVED"}},
    "POST /x402/jobs": {"json": {"job_type": "t", "job_data": {"workflow_id": "{workflow_id}"},
                                 "escrow_amount": "1", "executor_id": "exec_a"}},
    "POST /x402/jobs/{job_id:path}/status": {"json": {"status": "completed", "reason": "approved"}},
    "POST /x402/jobs/{parent_job_id:path}/approval-subjobs": {
        "json": {"checkpoint_id": "cp1", "supervisor_id": "sup_a"}},
    "POST /x402/escrow/lock": {"json": {"workflow_id": "{workflow_id}", "amount": "1",
                                        "poster_id": "poster_a", "executor_id": "exec_a"}},
    "POST /x402/escrow/{escrow_id:path}/release": {"json": {"amount": "1", "recipient_id": "{self}"}},
    "POST /x402/escrow/{escrow_id:path}/split": {"json": {"splits": [{"recipient_id": "exec_a",
                                                                       "amount": "1"}]}},
    "POST /x402/artifacts": {"json": {"artifact_type": "t", "content": "x"}},
    "GET /x402/artifacts": {"params": {"uri": "x402://artifacts/sha256:{sha256}"}},
    "GET /x402/identities/{user_id:path}/verify": {"params": {"role": "executor"}},
    "GET /x402/supervisors": {"params": {"workflow_type": "x"}},
    "POST /x402/original/jobs": {
        "json": {"type": "t", "data": {}, "escrow": {"amount": 1, "executor_id": "exec_a"}}},
    "PATCH /x402/original/jobs/{job_id}": {"json": {"status": "completed",
                                                    "metadata": {"reason": "approved"}}},
    "POST /x402/original/jobs/subjobs": {"json": {"parent_job_id": "{job_id}", "checkpoint_id": "cp1",
                                                  "supervisor_id": "sup_a"}},
    "POST /x402/original/escrow/lock": {"json": {"workflow_id": "{workflow_id}", "amount": "1",
                                                 "poster_id": "poster_a", "executor_id": "exec_a"}},
    "POST /x402/original/escrow/release": {"json": {"escrow_id": "{escrow_id}", "amount": "1",
                                                    "recipient_id": "{self}"}},
    "POST /x402/original/escrow/split": {"json": {"escrow_id": "{escrow_id}",
                                                  "splits": [{"recipient_id": "exec_a", "amount": "1"}]}},
    "POST /x402/original/artifacts": {"json": {"type": "t", "content": "x", "content_hash":
                                               "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"}},
    "POST /x402/original/identity/verify": {"json": {"user_id": "exec_a", "role": "executor"}},
    "GET /x402/original/marketplace/supervisors": {"params": {"workflow_type": "x"}},
    "POST /x402/original/marketplace/supervisors/request": {"json": {"supervisor_id": "sup_a",
                                                                     "workflow_id": "{workflow_id}"}},
    "POST /api/platform-grants": {"json": {"platform_id": "plat_a"}},
    "POST /x402/supervisors": {"json": {"supervisor_id": "sup_a", "specialties": ["x"],
                                        "price_per_approval": "1"}},
    "POST /x402/supervisors/assignments": {"json": {"workflow_id": "{workflow_id}", "workflow_type": "x"}},
    "POST /x402/supervisors/{supervisor_id:path}/requests": {"json": {"workflow_id": "{workflow_id}"}},
    "POST /x402/supervisors/{supervisor_id:path}/ratings": {"json": {"workflow_id": "{workflow_id}",
                                                                     "rating": 5}},
    "POST /x402/supervisors/{supervisor_id:path}/approval-quality": {
        "json": {"workflow_id": "{workflow_id}", "quality_score": 1.0}},
}
# requests that change A run after every read, the ones that end it last
# after POST /x402/supervisors registered sup_a in the marketplace; then what ends workflow A
LAST = ("POST /x402/original/marketplace/supervisors/request",
        f"POST {W}/cancel", f"POST {W}/fail", f"POST {W}/complete", f"POST {W}/settle",
        f"POST {W}/rollback/complete")


def app_routes(app: Any) -> Iterator[tuple[str, str]]:
    """``(method, path)`` of every route, including those behind FastAPI's included routers."""
    for route in app.routes:
        if hasattr(route, "path") and hasattr(route, "methods"):
            items: list[Any] = [route]
        else:
            candidates = route.effective_candidates
            items = list(candidates() if callable(candidates) else candidates)
        for item in items:
            for method in sorted(item.methods or ()):
                if method != "HEAD":
                    yield method, item.path


def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        for k, v in values.items():
            value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


def _order(key: str) -> tuple[int, int, str]:
    """Reads first, then changes (alphabetically, so a supervisor registers before it is requested),
    then what ends workflow A; deterministic, so every run asks the same questions in the same state."""
    if key in LAST:
        return (2, LAST.index(key), key)
    return (0 if key.startswith("GET ") else 1, 0, key)


def _books(db: Database) -> tuple[Any, ...]:
    """The money and the platform's records: every balance, and the postings, jobs and reputations."""
    from sqlalchemy import func, select

    from saferun.storage.schema import approval_quality, jobs, ledger_legs, ledger_transactions

    with db.read() as conn:
        balances = conn.execute(
            select(ledger_legs.c.account, func.sum(ledger_legs.c.amount_micro))
            .group_by(ledger_legs.c.account).order_by(ledger_legs.c.account)
        ).all()
        counts = [conn.execute(select(func.count()).select_from(t)).scalar_one()
                  for t in (ledger_transactions, jobs, approval_quality)]
    return (tuple(balances), *counts)


# (route, caller) of refused /x402 calls that changed the books: must stay empty
MOVED: list[tuple[str, str]] = []


async def _matrix(db: Database) -> tuple[World, dict[tuple[str, str], int]]:
    MOVED.clear()
    world = await build(db)
    app = create_app(world.orch, auth="keys", sweep=False)
    keys = sorted({f"{m} {p}" for m, p in app_routes(app) if f"{m} {p}" != "GET /api/events"}, key=_order)
    got: dict[tuple[str, str], int] = {}
    books: tuple[Any, ...] | None = None  # the books before the next /x402 call, while known
    base = params(world)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for key in keys:
            method, path = key.split(" ", 1)
            url = _fill(path.replace(":path}", "}"), base)
            for name in NAMES:
                spec_of = CALLERS[name]
                values = {**base, "self": "poster_a" if name == "admin" else spec_of[0] if spec_of else "x"}
                spec = _fill(BODIES.get(key, {}), values)
                money = method != "GET" and path.startswith("/x402")
                if money and books is None:  # only after a call that may have changed them
                    books = _books(db)
                res = await client.request(method, url, headers=world.headers[name], **spec)
                got[(key, name)] = res.status_code
                if money:
                    after = _books(db) if res.status_code < 400 else None
                    if res.status_code >= 400 and _books(db) != books:
                        MOVED.append((key, name))
                    books = after if res.status_code < 400 else books
                elif method != "GET":
                    books = None
    return world, got


def _matches(expected: int | str, status: int) -> bool:
    return status not in (401, 403, 404) if expected == ALLOWED else status == expected


async def test_every_route_and_caller_gets_the_tabled_status(db: Database) -> None:
    app = create_app(auth="keys", sweep=False)
    routes = {f"{m} {p}" for m, p in app_routes(app)}
    missing = sorted(routes - set(EXPECTED))
    assert not missing, f"routes missing from EXPECTED (decide who may call them): {missing}"
    stale = sorted(set(EXPECTED) - routes)
    assert not stale, f"EXPECTED names routes the app does not have: {stale}"
    world, got = await _matrix(db)
    # the event stream never ends, so the matrix cannot wait for its answer; its refusals are immediate
    app = create_app(world.orch, auth="keys", sweep=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        for name in ("none", "bad"):
            res = await c.get("/api/events", headers=world.headers[name])
            got[("GET /api/events", name)] = res.status_code
    wrong = [
        f"{key} as {name}: expected {EXPECTED[key][name]}, got {status}"
        for (key, name), status in got.items()
        if not _matches(EXPECTED[key][name], status)
    ]
    assert not wrong, "\n".join(wrong)
    assert not MOVED, f"refused /x402 calls changed the ledger, jobs or reputations: {MOVED}"


LISTS = ("/api/workflows", "/api/approvals/pending", "/approvals", "/workflows", "/ui/fragments/pending",
         "/ui/fragments/workflows")


async def test_lists_never_show_a_foreign_workflow(db: Database) -> None:
    """Every list and queue, for every caller: A's ids appear exactly for those who may see A."""
    world = await build(db)
    app = create_app(world.orch, auth="keys", sweep=False)
    a_ids = (world.a.workflow_id, world.a.request_id)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        for name in NAMES[2:]:
            for path in LISTS:
                res = await c.get(path, headers=world.headers[name])
                assert res.status_code == 200, (path, name)
                shown = any(i in res.text for i in (*a_ids, "Workflow A"))
                assert shown is (name in A_SIDE), (path, name)
                if name in ("poster_b", "exec_b", "sup_b", "plat_b"):
                    theirs = (world.b.workflow_id, world.b.request_id, "Workflow B")
                    assert any(i in res.text for i in theirs), (path, name)  # their own is there
        nav = await c.get("/ui/fragments/nav", headers=world.headers["sup_free"])
        assert nav.text == "0"  # the badge counts the caller's own queue
        for name, total in (("sup_free", 0), ("poster_a", 1), ("plat_b", 1), ("admin", 2)):
            stats = (await c.get("/api/stats", headers=world.headers[name])).json()
            assert stats["total_workflows"] == total and stats["pending_approvals"] == total, name


async def _sse(app: Any, headers: dict[str, str], until_id: int) -> list[dict[str, Any]]:
    """Read ``GET /api/events`` over raw ASGI until an event with id >= ``until_id`` arrives (or the
    server's keep-alive shows it has sent everything up to now), then disconnect."""
    done = asyncio.Event()
    body = bytearray()
    sent_request = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    def events() -> list[dict[str, Any]]:
        import json

        found = []
        for block in body.decode().split("\n\n"):
            data = [ln[6:] for ln in block.split("\n") if ln.startswith("data: ")]
            if data:
                found.append(json.loads(data[0]))
        return found

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            if any(ev["id"] >= until_id for ev in events()) or b"keep-alive" in body:
                done.set()

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/api/events", "raw_path": b"/api/events", "query_string": b"",
             "root_path": "", "headers": raw, "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
    await app(scope, receive, send)
    return events()


async def test_sse_stream_carries_only_visible_workflows(db: Database) -> None:
    """B's callers read the stream up to B's newest event: none of A's events is in it; A's poster sees
    A's (and not B's)."""
    from saferun.core import events as feed

    world = await build(db)
    world.orch.cancel_workflow(world.a.workflow_id, "A's last change", actor="poster_a")
    with world.orch.db.read() as conn:
        a_last = feed.last_event_id(conn)
    world.orch.cancel_workflow(world.b.workflow_id, "B's last change", actor="poster_b")
    with world.orch.db.read() as conn:
        last = feed.last_event_id(conn)
    app = create_app(world.orch, auth="keys", sweep=False)
    for name in ("poster_b", "exec_b", "sup_b", "plat_b", "admin"):
        seen = {ev["workflow_id"] for ev in await _sse(app, world.headers[name], last)}
        assert world.b.workflow_id in seen, name
        assert (world.a.workflow_id in seen) is (name == "admin"), name
    seen = {ev["workflow_id"] for ev in await _sse(app, world.headers["poster_a"], a_last)}
    assert seen == {world.a.workflow_id}


async def test_a_foreign_id_answers_exactly_like_an_unknown_one(db: Database) -> None:
    """404 reveals nothing: B's poster gets for A's ids the body an id that never existed gets."""
    world = await build(db)
    app = create_app(world.orch, auth="keys", sweep=False)
    a = world.a
    probes = [
        ("/api/workflows/{}", a.workflow_id, "wf_never"),
        ("/api/workflows/{}/audit", a.workflow_id, "wf_never"),
        ("/api/workflows/{}/export", a.workflow_id, "wf_never"),
        ("/api/approvals/{}", a.request_id, "req_never"),
        ("/api/snapshots/{}", a.snapshot_id, "snap_never"),
        ("/api/artifacts/{}", a.sha256, "0" * 64),
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        for template, real, unknown in probes:
            foreign = await c.get(template.format(real), headers=world.headers["poster_b"])
            missing = await c.get(template.format(unknown), headers=world.headers["poster_b"])
            assert foreign.status_code == missing.status_code == 404, template
            assert foreign.text.replace(real, "ID") == missing.text.replace(unknown, "ID"), template
            assert a.workflow_id not in foreign.text or real == a.workflow_id, template


async def test_an_unassigned_workflow_is_visible_to_every_supervisor(db: Database) -> None:
    """While the marketplace has assigned nobody, any supervisor may decide it, so every one may see it;
    posters and executors of other workflows still may not."""
    from saferun.core.state_machine.models import CheckpointConfig, WorkflowConfig

    world = await build(db)
    world.orch.initialize_workflow(
        WorkflowConfig(workflow_id="wf_open", name="Unassigned", checkpoints=[CheckpointConfig(name="c")],
                       escrow_amount="0", poster_id="poster_a", executor_id="exec_a")
    )
    assert world.orch.get_workflow("wf_open").supervisor_id is None
    app = create_app(world.orch, auth="keys", sweep=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        for name, status in (("sup_free", 200), ("sup_b", 200), ("poster_b", 404), ("exec_b", 404),
                             ("plat_a", 404), ("poster_a", 200)):
            res = await c.get("/api/workflows/wf_open", headers=world.headers[name])
            assert res.status_code == status, name
            listed = (await c.get("/api/workflows", headers=world.headers[name])).text
            assert ("wf_open" in listed) is (status == 200), name


async def test_a_long_poll_refuses_a_foreign_pending_request_at_once(db: Database) -> None:
    """``?wait=`` checks access before it waits (on a light read of the request's workflow): a caller who
    may not see A's pending request gets the plain read's refusal, with the unknown id's body, instead of
    waiting on it (waiting would reveal that the request exists and is pending; it would also answer 200
    after the wait, which this test would see)."""
    world = await build(db)
    app = create_app(world.orch, auth="keys", sweep=False)
    expected = EXPECTED["GET /api/approvals/{request_id}"]
    refused = [n for n in NAMES if expected[n] != ALLOWED and expected[n] != 200]
    assert refused and world.orch.get_approval_request(world.a.request_id).status == "pending"
    wait = {"wait": 30}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        for name in refused:
            url = f"/api/approvals/{world.a.request_id}"
            waited = await c.get(url, params=wait, headers=world.headers[name])
            assert waited.status_code == expected[name], name
        b = world.headers["poster_b"]
        foreign = await c.get(f"/api/approvals/{world.a.request_id}", params=wait, headers=b)
        missing = await c.get("/api/approvals/req_never", params=wait, headers=b)
        assert foreign.text.replace(world.a.request_id, "ID") == missing.text.replace("req_never", "ID")
