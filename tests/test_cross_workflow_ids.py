"""Cross-workflow ids in path parameters (issue 9, "Bad input"): every route whose path names a workflow and
something under it is called with workflow A and workflow B's sub-id, by A's own parties and an admin. The
route list comes from the app's route table, so a new route with two ids fails here until it says how to
fill it. Each answer is a 404 exactly like an unknown id's, and nothing of B changes: B's own agent then
claims and finishes its step as if nothing happened.
"""

from __future__ import annotations

import re

import httpx

from saferun.api.server import create_app
from saferun.storage.database import Database
from tests.authz_world import build
from tests.helpers import decide
from tests.test_authz_matrix import app_routes

# the workflow's part of a path, and what a route with more ids is called with
B_PARAM = {"step_id": "step_id"}  # path parameter -> the attribute of workflow B's side that fills it
BODIES = {"claim": {"owner": "intruder"}, "finish": {"ok": True}}
CALLERS = ("exec_a", "poster_a", "admin")


def two_id_routes(app: object) -> list[tuple[str, str]]:
    found = []
    for method, path in sorted(set(app_routes(app))):
        names = re.findall(r"\{([^}:]+)", path)
        if len(names) >= 2 and names[0] == "workflow_id":
            found.append((method, path))
    return found


async def test_another_workflows_id_under_this_workflow_is_not_found_and_changes_nothing(
    db: Database,
) -> None:
    world = await build(db)
    for side in (world.a, world.b):  # both rolling back: their steps are claimable by their own agents
        decide(world.orch, side.request_id, "REJECTED")
    before = world.orch.saga_steps(world.b.workflow_id)
    app = create_app(world.orch, auth="keys", sweep=False)
    routes = two_id_routes(app)
    assert routes, "the route table has no route with a workflow and a sub-id any more: update this test"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        for method, path in routes:
            names = re.findall(r"\{([^}:]+)", path)[1:]
            missing = [n for n in names if n not in B_PARAM]
            assert not missing, f"{method} {path}: say how to fill {missing} from workflow B (B_PARAM)"
            action = path.rstrip("/").rsplit("/", 1)[-1]
            assert action in BODIES, f"{method} {path}: give a valid body in BODIES"
            foreign = path.replace("{workflow_id}", world.a.workflow_id)
            unknown = foreign
            for name in names:
                real = getattr(world.b, B_PARAM[name])
                foreign = foreign.replace("{" + name + "}", real)
                unknown = unknown.replace("{" + name + "}", "never_" + name)
            for caller in CALLERS:
                got = await c.request(method, foreign, json=BODIES[action], headers=world.headers[caller])
                none = await c.request(method, unknown, json=BODIES[action], headers=world.headers[caller])
                if caller == "poster_a":  # not A's agent: refused before any id is looked at
                    assert got.status_code == none.status_code == 403, (caller, path, got.text)
                    continue
                assert got.status_code == none.status_code == 404, (caller, path, got.text)
                real = getattr(world.b, B_PARAM[names[0]])
                assert got.text.replace(real, "ID") == none.text.replace("never_" + names[0], "ID"), path
                assert world.b.workflow_id not in got.text
    assert world.orch.saga_steps(world.b.workflow_id) == before  # nothing of B was claimed or finished
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        own = f"/api/workflows/{world.b.workflow_id}/rollback/steps/{world.b.step_id}"
        claimed = await c.post(f"{own}/claim", json={"owner": "b-agent"}, headers=world.headers["exec_b"])
        assert claimed.status_code == 200 and claimed.json()["claimed"] is True  # (+ its fencing generation)
        assert claimed.json()["idempotency_key"].startswith(f"saferun:{world.b.workflow_id}:")
        finished = await c.post(f"{own}/finish", json={"ok": True}, headers=world.headers["exec_b"])
        assert finished.status_code == 200, finished.text
    assert world.orch.saga_steps(world.b.workflow_id)[0]["status"] == "compensated"
