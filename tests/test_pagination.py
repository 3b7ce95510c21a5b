"""Keyset pages of the pending queue and of workflows (issue 12 target 4, issue 14 item 4), on both DBs.

Pages are soonest-expiry first (queue) / newest first (workflows), never repeat or skip a row, carry the
true ``total``, compose with the one visibility rule, and cost the same number of statements whatever
their size (no query per row). Bad cursors and limits are 422 naming the parameter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import event

from saferun.api.server import create_app
from saferun.core.bulk import PausedWorkflow, create_paused
from saferun.core.state_machine.models import CheckpointConfig, ExecutionState, WorkflowConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.policy import Caller, Role
from saferun.storage.database import Database
from saferun.storage.queue import QueueFilter
from tests.test_api import client_for

RISKS = ["low", "medium", "high", None]


def item(i: int, *, supervisor: str = "sup_a", executor: str = "exec_a") -> PausedWorkflow:
    """A workflow paused at its review, expiring ``i`` minutes after the others before it."""
    cfg = WorkflowConfig(
        name=f"Job {i}",
        checkpoints=[CheckpointConfig(name="Review", checkpoint_id="review", timeout_seconds=3600 + 60 * i)],
        escrow_amount=5,
        poster_id="poster_a",
        executor_id=executor,
        supervisor_id=supervisor,
    )
    risk = {"level": RISKS[i % 4]} if RISKS[i % 4] else {}
    return PausedWorkflow(
        cfg, ExecutionState(checkpoint_id="review", parameters={"n": i}), f"Look at {i}", {}, {"risk": risk}
    )


@pytest.fixture
def orch(db: Database) -> WorkflowOrchestrator:
    return WorkflowOrchestrator(database=db)


@pytest.fixture
async def api(orch: WorkflowOrchestrator) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(orch, auth="open", sweep=False)) as c:
        yield c


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_c: object, _cur: object, statement: str, *_: object) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


async def test_the_queue_pages_by_expiry_without_repeats_or_gaps(orch, api) -> None:
    made = create_paused(orch, [item(i) for i in range(7)])
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = (await api.get("/api/approvals/pending", params=params)).json()
        pages += 1
        assert body["total"] == 7 and body["limit"] == 3
        seen += [r["request_id"] for r in body["pending_approvals"]]
        assert all(r["workflow_name"].startswith("Job ") for r in body["pending_approvals"])
        if not body["has_more"]:
            assert body["next_cursor"] is None
            break
        cursor = body["next_cursor"]
    assert pages == 3
    assert seen == [c.request_id for c in made]  # made in expiry order: soonest first, each once


async def test_the_seeds_unpaged_call_is_the_first_page_and_says_so(orch, api) -> None:
    create_paused(orch, [item(i) for i in range(3)])
    body = (await api.get("/api/approvals/pending")).json()
    assert set(body) >= {"pending_approvals", "total", "has_more", "next_cursor", "limit"}
    assert body["total"] == 3 and len(body["pending_approvals"]) == 3 and body["limit"] == 100
    assert body["has_more"] is False and body["next_cursor"] is None


async def test_the_queue_filters(orch, api) -> None:
    made = create_paused(orch, [item(i, supervisor="sup_b" if i % 2 else "sup_a") for i in range(8)])
    ids = [c.request_id for c in made]

    async def got(**params: object) -> list[str]:
        res = await api.get("/api/approvals/pending", params=params)
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["total"] == len(body["pending_approvals"]) or "cursor" in params
        return [r["request_id"] for r in body["pending_approvals"]]

    assert await got(risk="high") == [ids[2], ids[6]]
    assert await got(risk="none") == [ids[3], ids[7]]
    assert await got(assigned_to="sup_b") == ids[1::2]
    assert await got(assigned_to="sup_b", risk="low") == []
    assert await got(assigned_to="sup_b", risk="medium") == [ids[1], ids[5]]
    assert await got(workflow_id=made[4].workflow_id) == [ids[4]]
    assert await got(expiring_within=3600 + 60 * 2 + 30) == ids[:3]
    assert await got(older_than=3600) == []
    assert await got(newer_than=3600) == ids
    # filters and paging together: a cursor carries on within the same filter
    first = (await api.get("/api/approvals/pending", params={"assigned_to": "sup_a", "limit": 2})).json()
    rest = await got(assigned_to="sup_a", limit=2, cursor=first["next_cursor"])
    assert [r["request_id"] for r in first["pending_approvals"]] + rest == ids[0::2]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"cursor": "not a cursor!"}, "cursor"),
        ({"cursor": "eyJ2IjoxfQ"}, "cursor"),  # base64 of {"v":1}: no key
        ({"risk": "extreme"}, "risk"),
        ({"expiring_within": -1}, "expiring_within"),
        ({"mine": "true"}, "mine"),  # open mode: nobody to be "me"
    ],
)
async def test_bad_paging_input_is_422_naming_the_parameter(api, params: dict, field: str) -> None:
    res = await api.get("/api/approvals/pending", params=params)
    assert res.status_code == 422, res.text
    assert field in str(res.json()["detail"]["field"])


async def test_foreign_and_other_filter_cursors_are_refused(orch, api) -> None:
    create_paused(orch, [item(i) for i in range(3)])
    queue = (await api.get("/api/approvals/pending", params={"limit": 1})).json()["next_cursor"]
    flows = (await api.get("/api/workflows", params={"limit": 1})).json()["next_cursor"]
    assert queue and flows
    for path, params in [
        ("/api/workflows", {"cursor": queue}),  # a queue cursor on the workflows list
        ("/api/approvals/pending", {"cursor": flows}),
        ("/api/approvals/pending", {"cursor": queue, "risk": "high"}),  # issued for other filters
        ("/api/approvals/pending", {"cursor": queue[:-3]}),  # truncated
    ]:
        res = await api.get(path, params=params)
        assert res.status_code == 422 and res.json()["detail"]["field"] == "cursor", (path, res.text)
    both = await api.get("/api/workflows", params={"cursor": flows, "offset": 1})
    assert both.status_code == 422 and both.json()["detail"]["field"] == "cursor"


async def test_workflows_pages_carry_the_true_total(orch, api) -> None:
    made = create_paused(orch, [item(i) for i in range(5)])
    seen, cursor = [], None
    while True:
        body = (
            await api.get("/api/workflows", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        ).json()
        assert body["total"] == 5  # all of them, not the page length
        seen += [w["workflow_id"] for w in body["workflows"]]
        if not body["has_more"]:
            break
        cursor = body["next_cursor"]
    assert sorted(seen) == sorted(c.workflow_id for c in made) and len(seen) == 5
    by_state = (await api.get("/api/workflows", params={"status": "awaiting_approval", "limit": 1})).json()
    assert by_state["total"] == 5 and by_state["has_more"]
    none = (await api.get("/api/workflows", params={"status": "completed"})).json()
    assert none == {"workflows": [], "total": 0, "limit": 100, "has_more": False, "next_cursor": None}
    seed = (await api.get("/api/workflows", params={"limit": 2, "offset": 4})).json()  # the seed's paging
    assert len(seed["workflows"]) == 1 and seed["total"] == 5


def test_pages_compose_with_the_visibility_rule(orch) -> None:
    create_paused(orch, [item(i, supervisor="sup_a", executor="exec_a") for i in range(4)])
    create_paused(orch, [item(10 + i, supervisor="sup_b", executor="exec_b") for i in range(3)])
    sup_b = Caller(identity_id="sup_b", roles=frozenset({Role.SUPERVISOR}), authenticated=True)
    page = orch.pending_page(limit=2, visible_to=sup_b)
    assert page.total == 3 and page.has_more and len(page.items) == 2
    rest = orch.pending_page(limit=2, cursor=page.next_cursor, visible_to=sup_b)
    names = [i.workflow_name for i in page.items + rest.items]
    assert names == ["Job 10", "Job 11", "Job 12"] and not rest.has_more
    assert orch.count_pending(sup_b) == 3 and orch.count_pending(None) == 7
    # another caller may not resume sup_b's cursor
    exec_a = Caller(identity_id="exec_a", roles=frozenset({Role.EXECUTOR}), authenticated=True)
    with pytest.raises(Exception, match="cursor"):
        orch.pending_page(limit=2, cursor=page.next_cursor, visible_to=exec_a)
    mine = orch.pending_page(QueueFilter(assigned_to="sup_b"), visible_to=exec_a)
    assert mine.total == 0 and mine.items == []  # a filter never widens what the rule shows
    wf_page = orch.workflows_page(limit=10, visible_to=exec_a)
    assert wf_page.total == 4 and {w.config.executor_id for w in wf_page.items} == {"exec_a"}


def test_a_page_costs_the_same_statements_at_any_size(db, orch) -> None:
    """No query per row: a page of 2 and a page of 12 run the same statements (the N+1 of issue 12)."""
    create_paused(orch, [item(i) for i in range(12)])

    def count(fn: object) -> int:
        with statements(db) as seen:
            fn()  # type: ignore[operator]
        return len(seen)

    assert count(lambda: orch.pending_page(limit=2)) == count(lambda: orch.pending_page(limit=12))
    assert count(lambda: orch.workflows_page(limit=2)) == count(lambda: orch.workflows_page(limit=12))
    small = count(lambda: orch.list_workflows(limit=2))
    assert small == count(lambda: orch.list_workflows(limit=12)) and small <= 3
    pages = orch.workflows_page(limit=12).items
    assert {(w.snapshots, w.approval_requests, w.approval_responses) for w in pages} == {(1, 1, 0)}


async def test_the_dashboard_queue_pages_and_filters(db, orch, api) -> None:
    made = create_paused(orch, [item(i) for i in range(5)])
    first = await api.get("/approvals", params={"limit": 2})
    assert first.status_code == 200
    html = first.text
    assert made[0].request_id in html and made[1].request_id in html and made[2].request_id not in html
    assert 'rel="next"' in html and "2 of 5 pending" in html
    next_url = html.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    second = await api.get(next_url)
    assert made[2].request_id in second.text and made[0].request_id not in second.text
    assert 'rel="first"' in second.text
    high = await api.get("/approvals", params={"risk": "high"})
    assert made[2].request_id in high.text and made[0].request_id not in high.text
    fragment = await api.get("/ui/fragments/pending", params={"limit": 2, "risk": "low"})
    assert fragment.status_code == 200 and made[0].request_id in fragment.text
    bad = await api.get("/approvals", params={"risk": "extreme"})
    assert bad.status_code == 422 and "risk" in bad.text
    badc = await api.get("/approvals", params={"cursor": "zzz"})
    assert badc.status_code == 422 and "cursor" in badc.text
    with statements(db) as few:
        await api.get("/approvals", params={"limit": 2})
    with statements(db) as many:
        await api.get("/approvals", params={"limit": 5})
    assert len(few) == len(many)  # no query per request on the page


def test_the_cli_lists_pages_with_the_same_filters(database_env: Database) -> None:
    import json

    from typer.testing import CliRunner

    from saferun.cli.main import app

    orch = WorkflowOrchestrator(database=database_env)
    made = create_paused(orch, [item(i, supervisor="sup_b" if i % 2 else "sup_a") for i in range(5)])
    runner = CliRunner()

    def run(*args: str) -> object:
        return runner.invoke(app, ["approvals", "list", *args])

    first = run("--limit", "2", "--json")
    assert first.exit_code == 0, first.output
    body = json.loads(first.output)
    assert body["total"] == 5 and body["has_more"] and len(body["pending_approvals"]) == 2
    rest = json.loads(run("--limit", "3", "--json", "--cursor", body["next_cursor"]).output)
    ids = [r["request_id"] for r in body["pending_approvals"] + rest["pending_approvals"]]
    assert rest == {**rest, "has_more": False, "next_cursor": None}
    assert ids[:2] == [c.request_id for c in made[:2]]
    assert json.loads(run("--limit", "2", "--json").output)["pending_approvals"][0]["request_id"] == ids[0]
    mine = json.loads(run("--mine", "--by", "sup_b", "--json").output)
    assert [r["request_id"] for r in mine["pending_approvals"]] == [made[1].request_id, made[3].request_id]
    high = run("--risk", "high", "--expiring-within", "2h")
    assert high.exit_code == 0 and made[2].request_id in high.output and made[0].request_id not in high.output
    table = run("--limit", "2")
    assert "2 of 5" in table.output and "--cursor" in table.output
    bad = run("--cursor", "nope")
    assert bad.exit_code != 0 and "cursor" in bad.output
    assert run("--expiring-within", "soon").exit_code != 0
    assert run("--limit", "0").exit_code != 0
    assert run("--mine").exit_code != 0  # who is "me"?


async def test_the_python_clients_page_with_the_same_filters(db: Database, orch) -> None:
    from saferun.client.http import AsyncSafeRunClient, SafeRunClient
    from saferun.errors import InvalidInput
    from tests.test_client import serving

    made = create_paused(orch, [item(i) for i in range(5)])
    with serving(db, auth="open") as url:
        with SafeRunClient(url) as c:
            page = c.pending(limit=2, risk="high")
            assert [r["request_id"] for r in page["pending_approvals"]] == [made[2].request_id]
            assert [r["request_id"] for r in c.iter_pending(limit=2)] == [m.request_id for m in made]
            wf = c.list_workflows(limit=2)
            assert wf["total"] == 5 and wf["has_more"]
            assert len(c.list_workflows(limit=2, cursor=wf["next_cursor"])["workflows"]) == 2
            with pytest.raises(InvalidInput) as bad:
                c.pending(cursor="garbage")
            assert bad.value.field == "cursor"
            with pytest.raises(TypeError):
                c.pending(colour="red")
        async with AsyncSafeRunClient(url) as ac:
            got = [r["request_id"] async for r in ac.iter_pending(limit=3, expiring_within=3600 + 150)]
            assert got == [m.request_id for m in made[:3]]
