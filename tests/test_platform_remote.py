"""The remote x402 platform: ``X402Integration`` over HTTP against a real SafeRun server's ``/x402`` API.

The server runs (uvicorn, in a thread) in keys mode on the test's database; the client authenticates with
the key of an identity holding the ``platform`` role. Between them, for the failure tests, sits a small
HTTP proxy that can forward a request and then drop the connection before the answer, hold the answer
until the client gave up, or answer 503 itself. Whatever it does, every payment lands exactly once: the
ledger on the server's database is the judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from saferun.api.server import create_app
from saferun.api.x402 import client as x402_client
from saferun.api.x402.client import X402Integration
from saferun.client import RequestTimedOut, ServerError, ServerUnreachable
from saferun.core.identity import IdentityService
from saferun.core.rollback.reconciliation import RetryPolicy
from saferun.core.state_machine.models import ApprovalResponse
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.reputation import reputation
from saferun.errors import (
    ArtifactNotFound,
    Forbidden,
    IdempotencyConflict,
    InvalidAmount,
    InvalidInput,
    NotFound,
    SafeRunError,
    Unauthorized,
)
from saferun.platform import scope
from saferun.platform.base import MUTATING_CALLS, Platform
from saferun.platform.embedded import EmbeddedPlatform
from saferun.platform.remote import IDEMPOTENCY_HEADER, RemotePlatform
from saferun.storage import identities as id_store
from saferun.storage.database import Database
from saferun.storage.schema import jobs, ledger_legs, ledger_transactions, platform_requests
from tests.test_client import serving

WF = "wf_remote1"
ESCROW = f"escrow_{WF}"
FAST = RetryPolicy(attempts=4, initial_delay=0.001, max_delay=0.005)


# ---------------------------------------------------------------------------------------------- the server
@pytest.fixture
def platform_key(db: Database) -> str:
    """The parties, and the API key of the platform client (an identity with the platform role)."""
    with db.transaction() as conn:
        id_store.create_identity(conn, "poster_1", roles=["poster"])
        id_store.create_identity(conn, "exec_1", roles=["executor"])
        id_store.create_identity(conn, "sup_1", roles=["supervisor"])
        id_store.create_identity(conn, "sup_2", roles=["supervisor"])
        id_store.create_identity(conn, "both_1", roles=["supervisor", "executor"])
    service = IdentityService(db)
    _, key = service.create_identity_with_key("other_saferun", "Another SafeRun", ["platform"])
    with db.transaction() as conn:  # poster_1 lets this platform lock escrow from its funding account
        scope.grant(conn, "poster_1", "other_saferun", "poster_1")
    return key.api_key


@pytest.fixture
def server(db: Database, platform_key: str) -> Iterator[str]:
    with serving(db, auth="keys") as url:
        yield url


@pytest.fixture
async def x402(server: str, platform_key: str) -> AsyncIterator[X402Integration]:
    client = X402Integration(api_url=f"{server}/x402", api_key=platform_key, retry=FAST)
    yield client
    await client.close()


def balances(db: Database) -> dict[str, int]:
    with db.read() as conn:
        rows = conn.execute(
            select(ledger_legs.c.account, func.sum(ledger_legs.c.amount_micro)).group_by(
                ledger_legs.c.account
            )
        ).all()
    return {account: int(total) for account, total in rows}


def count(db: Database, table: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def moved(db: Database) -> tuple[Any, ...]:
    """Everything a platform call can change: balances, postings, jobs, remembered answers."""
    return (balances(db), count(db, ledger_transactions), count(db, jobs), count(db, platform_requests))


def postings_under(db: Database, key: str) -> int:
    """How many ledger postings the platform made for one idempotency key (a release or split)."""
    with db.read() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(ledger_transactions)
                .where(ledger_transactions.c.idempotency_key == f"x402:{key}")
            ).scalar_one()
        )


def remembered(db: Database, key: str) -> dict[str, Any]:
    with db.read() as conn:
        row = conn.execute(
            select(platform_requests.c.response).where(platform_requests.c.idempotency_key == key)
        ).first()
    assert row is not None, f"no answer stored under {key!r}"
    return dict(row[0])


def terms(share: str = "0.9", checkpoints: tuple[str, ...] = ("cp1",)) -> dict[str, Any]:
    """A main job's data as the engine sends it: the workflow's config names its poster and milestones."""
    config = {"poster_id": "poster_1", "executor_share": share,
              "checkpoints": [{"checkpoint_id": cp, "milestone_weight": 1} for cp in checkpoints]}
    return {"workflow_id": WF, "config": config}


async def approved(x402: X402Integration, job_id: str, checkpoint: str = "cp1") -> dict[str, Any]:
    """An approval sub-job for ``checkpoint`` by sup_1, decided APPROVED (what the engine sends)."""
    sub = await x402.create_approval_subjob(job_id, checkpoint, "sup_1", {"summary": checkpoint})
    return await x402.update_job_status(sub["job_id"], "completed", "approved")


async def locked(x402: X402Integration, amount: Any = 100.0, share: str = "0.9") -> dict[str, Any]:
    """WF's main job (escrow ``amount``), its checkpoint cp1 approved by sup_1, and its escrow locked:
    so its executor may be paid ``share`` of it and sup_1 the rest (saferun.domain.platform_policy)."""
    job = await x402.create_job("supervised_workflow", terms(share), amount, "exec_1")
    await approved(x402, job["job_id"])
    return await x402.lock_escrow(workflow_id=WF, amount=amount, poster_id="poster_1", executor_id="exec_1")


# ---------------------------------------------------------------------------------------------- the proxy
@dataclass
class Seen:
    method: str
    target: str
    key: str | None
    action: str  # forward | drop | delay | 503


class FlakyProxy:
    """An HTTP/1.1 proxy in front of the server, one request per connection, with planned faults.

    ``fail(path_part, *actions)`` makes the next requests whose path contains ``path_part`` suffer those
    actions in order (then they are forwarded normally):

    - ``drop``:  forward the request, wait for the server's full answer, then close the connection
      without sending a byte of it (the server did the work; the client never hears);
    - ``delay``: forward it, then hold the answer until the client has given up (its connection closed,
      or its retry of the same request arrived), so the client's read timeout fires;
    - ``503``:   answer ``503 Service Unavailable`` without forwarding.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: list[Seen] = []
        self._faults: list[tuple[str, str]] = []
        self._arrived = asyncio.Condition()
        self._http = httpx.AsyncClient(base_url=upstream, timeout=None)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        await self._http.aclose()

    def fail(self, path_part: str, *actions: str) -> None:
        self._faults.extend((path_part, action) for action in actions)

    def requests(self, path_part: str) -> list[Seen]:
        return [s for s in self.seen if path_part in s.target]

    def _action(self, target: str) -> str:
        for i, (part, action) in enumerate(self._faults):
            if part in target:
                del self._faults[i]
                return action
        return "forward"

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._handle(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {}
            for line in lines:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            seen = Seen(method, target, headers.get(IDEMPOTENCY_HEADER.lower()), self._action(target))
            async with self._arrived:
                self.seen.append(seen)
                self._arrived.notify_all()
            if seen.action == "503":
                await self._answer(writer, 503, "text/plain", b"unavailable")
                return
            forwarded = {
                k: v
                for k, v in headers.items()
                if k not in ("host", "connection", "content-length", "accept-encoding", "keep-alive")
            }
            response = await self._http.request(method, target, headers=forwarded, content=body)
            if seen.action == "drop":
                return  # the server answered; the client hears nothing
            if seen.action == "delay":
                await self._client_gave_up(reader, seen)
            content_type = response.headers.get("content-type", "application/json")
            await self._answer(writer, response.status_code, content_type, response.content)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _client_gave_up(self, reader: asyncio.StreamReader, seen: Seen) -> None:
        """Until the client closed this connection or sent the same request again (its retry)."""

        def retried() -> bool:
            return any(s is not seen and s.key == seen.key and s.target == seen.target for s in self.seen)

        async def retry_arrived() -> None:
            async with self._arrived:
                await self._arrived.wait_for(retried)

        closed = asyncio.ensure_future(reader.read())
        again = asyncio.ensure_future(retry_arrived())
        _, pending = await asyncio.wait({closed, again}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes) -> None:
        reason = {200: "OK", 201: "Created", 503: "Service Unavailable"}.get(status, "Status")
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
            + body
        )
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()


@pytest.fixture
async def proxy(server: str) -> AsyncIterator[FlakyProxy]:
    p = FlakyProxy(server)
    await p.start()
    yield p
    await p.close()


@pytest.fixture
async def flaky(proxy: FlakyProxy, platform_key: str) -> AsyncIterator[X402Integration]:
    """The platform client, talking to the server through the proxy."""
    client = X402Integration(api_url=f"{proxy.url}/x402", api_key=platform_key, retry=FAST)
    yield client
    await client.close()


# ---------------------------------------------------------------------------------------------- construction
def test_the_interface_is_one_protocol(db: Database) -> None:
    remote = RemotePlatform("http://127.0.0.1:9/x402", "sr_key_x")
    for impl in (EmbeddedPlatform(db), remote):
        assert isinstance(impl, Platform)
    assert {"release_escrow", "split_payment", "lock_escrow", "create_artifact"} <= set(MUTATING_CALLS)
    assert "sr_key_x" not in repr(remote)


def test_a_url_without_a_key_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X402_API_KEY", raising=False)
    monkeypatch.setenv("X402_API_URL", "http://127.0.0.1:9/x402")
    with pytest.raises(SafeRunError, match="X402_API_KEY is required when X402_API_URL is set"):
        X402Integration()
    monkeypatch.delenv("X402_API_URL")
    with pytest.raises(SafeRunError, match="X402_API_KEY is required"):
        X402Integration(api_url="http://127.0.0.1:9/x402")
    with pytest.raises(InvalidInput, match="X402_API_URL"):
        X402Integration(api_url="ftp://platform", api_key="k")

    monkeypatch.setenv("X402_API_URL", "http://127.0.0.1:9/x402")
    monkeypatch.setenv("X402_API_KEY", "sr_key_from_env")
    from_env = X402Integration()
    assert from_env.mode == "remote" and from_env.database is None and from_env.artifacts is None
    assert from_env.api_url == "http://127.0.0.1:9/x402" and "sr_key_from_env" not in repr(from_env)


def test_without_a_url_it_is_embedded_and_says_so_once(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("X402_API_URL", raising=False)
    monkeypatch.setattr(x402_client, "_announced", set())
    with caplog.at_level(logging.INFO, logger="saferun.api.x402.client"):
        first, second = X402Integration(database=db), X402Integration(database=db)
    assert first.mode == second.mode == "embedded"
    assert first.database is db and first.artifacts is db.artifacts
    said = [r.getMessage() for r in caplog.records if "embedded platform" in r.getMessage()]
    assert len(said) == 1 and "X402_API_URL" in said[0]


# ------------------------------------------------------------------------------------------- the seed's flow
async def test_the_seed_flow_over_http(x402: X402Integration, db: Database) -> None:
    assert x402.mode == "remote"
    job = await x402.create_job(
        job_type="supervised_workflow",
        job_data={**terms(), "config": {**terms()["config"], "name": "Pizza order"}},
        escrow_amount=100.0,
        executor_id="exec_1",
    )
    assert job["job_id"].startswith("job") and job["workflow_id"] == WF and job["status"] == "open"
    sub = await x402.create_approval_subjob(
        parent_job_id=job["job_id"],
        checkpoint_id="cp1",
        supervisor_id="sup_1",
        approval_data={"summary": "Order 100 pizzas?"},
    )
    assert sub["job_type"] == "approval" and sub["parent_job_id"] == job["job_id"]
    running = await x402.update_job_status(job["job_id"], "running", "agent started")
    assert running["status"] == "running" and running["subjobs"] == [sub["job_id"]]
    assert await x402.get_job(job["job_id"]) == await EmbeddedPlatform(db).get_job(job["job_id"])

    escrow = await x402.lock_escrow(WF, 100.0, "poster_1", "exec_1")
    assert (escrow["escrow_id"], escrow["status"], escrow["amount"]) == (ESCROW, "locked", "100.00")
    with pytest.raises(Forbidden) as pending:  # cp1 is not decided yet: nothing is earned
        await x402.release_escrow(escrow["escrow_id"], 30.0, "exec_1", "checkpoint_approved")
    assert pending.value.rule == "payout_earned"
    await x402.update_job_status(sub["job_id"], "completed", "approved")
    released = await x402.release_escrow(
        escrow_id=escrow["escrow_id"], amount=30.0, recipient_id="exec_1", reason="checkpoint_approved"
    )
    assert (released["status"], released["amount"], released["remaining"]) == ("released", "30.00", "70.00")
    split = await x402.split_payment(
        escrow_id=escrow["escrow_id"],
        splits=[
            {"recipient_id": "exec_1", "amount": 60.0, "reason": "execution"},
            {"recipient_id": "sup_1", "amount": "10.00", "reason": "supervision"},
        ],
        total=70,
    )
    assert split["status"] == "split" and split["remaining"] == "0.00"
    assert [p["amount"] for p in split["payments"]] == ["60.00", "10.00"]
    position = await x402.get_escrow(ESCROW)
    assert (position["released"], position["held"], position["invariant_holds"]) == ("100.00", "0.00", True)
    assert balances(db)["wallet:exec_1"] == 90_000_000 and balances(db)["wallet:sup_1"] == 10_000_000

    state = json.dumps({"checkpoint_id": "cp1", "parameters": {"pizza_count": 100}})
    metadata = {"workflow_id": WF, "checkpoint_id": "cp1", "snapshot_id": "snap_1"}
    artifact = await x402.create_artifact(artifact_type="checkpoint_state", content=state, metadata=metadata)
    assert artifact["uri"].startswith("x402://artifacts/sha256:") and artifact["size_bytes"] == len(state)
    fetched = await x402.get_artifact(artifact["uri"])
    assert json.loads(fetched["content"]) == json.loads(state)
    assert (fetched["artifact_type"], fetched["metadata"]) == ("checkpoint_state", metadata)
    binary = await x402.create_artifact("blob", b"\xff\x00\xfe")
    assert (await x402.get_artifact(binary["uri"]))["content_encoding"] == "base64"
    assert await EmbeddedPlatform(db).get_artifact(binary["uri"]) == await x402.get_artifact(binary["uri"])

    assert await x402.verify_identity(user_id="exec_1", role="executor") is True
    assert await x402.verify_identity(user_id="exec_1", role="supervisor") is False
    assert await x402.verify_identity(user_id="nobody", role="executor") is False
    profile = await x402.get_user_profile("sup_1")
    assert profile["reputation"] == 0.5 and profile["roles"] == ["supervisor"]

    await x402.register_supervisor("sup_1", ["data_processing"], "2.50")
    supervisors = await x402.find_supervisors(workflow_type="data_processing", min_reputation=0.0)
    assert [s["supervisor_id"] for s in supervisors] == ["sup_1"]
    assert supervisors[0]["price_per_approval"] == "2.50"
    assert await x402.find_supervisors(workflow_type="data_processing", min_reputation=0.8) == []
    assigned = await x402.request_supervisor(supervisor_id=supervisors[0]["supervisor_id"], workflow_id=WF)
    assert (assigned["supervisor_id"], assigned["status"]) == ("sup_1", "assigned")
    kept = await x402.assign_supervisor(WF, "data_processing")
    assert kept["supervisor_id"] == "sup_1"  # a workflow keeps the supervisor it has
    with pytest.raises(Forbidden) as early:  # scored only once the workflow ended
        await x402.record_approval_quality(supervisor_id="sup_1", workflow_id=WF, quality_score=1.0)
    assert early.value.rule == "quality_from_outcome"
    await x402.update_job_status(job["job_id"], "completed", "settled")
    with pytest.raises(Forbidden) as made_up:  # sup_1 decided the one approval: 1.0, not the caller's 0.95
        await x402.record_approval_quality(supervisor_id="sup_1", workflow_id=WF, quality_score=0.95)
    assert made_up.value.rule == "quality_from_outcome" and "give 'sup_1' 1.0" in made_up.value.message
    await x402.record_approval_quality(supervisor_id="sup_1", workflow_id=WF, quality_score=1.0)
    rated = await x402.rate_supervisor(
        supervisor_id="sup_1", workflow_id=WF, rating=5, review="Quick and accurate"
    )
    assert rated["reputation"] == reputation([5], [1.0])
    assert (await x402.get_user_profile("sup_1"))["reputation"] == rated["reputation"]


async def test_one_saferun_is_the_platform_of_another(server: str, platform_key: str, db: Database) -> None:
    """``X402_API_URL`` / ``X402_API_KEY`` from the environment, as a second SafeRun would be configured."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("X402_API_URL", f"{server}/x402")
        env.setenv("X402_API_KEY", platform_key)
        async with X402Integration(retry=FAST) as x402:
            assert x402.mode == "remote"
            assert httpx.get(f"{server}/x402/health").json()["status"] == "healthy"
            await locked(x402, "12.50", share="1")
            await x402.release_escrow(ESCROW, "12.50", "exec_1", "done")
    assert balances(db)["wallet:exec_1"] == 12_500_000


def test_the_platform_api_is_in_the_openapi_schema(db: Database) -> None:
    paths = create_app(WorkflowOrchestrator(database=db), sweep=False).openapi()["paths"]
    for path, method in (
        ("/x402/jobs", "post"),
        ("/x402/jobs/{parent_job_id}/approval-subjobs", "post"),
        ("/x402/jobs/{job_id}", "get"),
        ("/x402/escrow/lock", "post"),
        ("/x402/escrow/{escrow_id}/release", "post"),
        ("/x402/escrow/{escrow_id}/split", "post"),
        ("/x402/escrow/{escrow_id}", "get"),
        ("/x402/artifacts", "post"),
        ("/x402/artifacts", "get"),
        ("/x402/identities/{user_id}/verify", "get"),
        ("/x402/identities/{user_id}", "get"),
        ("/x402/supervisors", "get"),
        ("/x402/supervisors", "post"),
        ("/x402/supervisors/{supervisor_id}/requests", "post"),
        ("/x402/supervisors/{supervisor_id}/ratings", "post"),
        ("/x402/supervisors/{supervisor_id}/approval-quality", "post"),
    ):
        operation = paths[path][method]
        if method == "post":
            headers = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
            assert headers == [IDEMPOTENCY_HEADER], path


async def test_a_malformed_body_is_422_naming_the_field(server: str, platform_key: str) -> None:
    auth = {"Authorization": f"Bearer {platform_key}"}
    async with httpx.AsyncClient(base_url=f"{server}/x402", headers=auth) as http:
        missing = await http.post("/escrow/lock", json={"workflow_id": WF, "poster_id": "poster_1"})
        assert missing.status_code == 422
        assert missing.json()["detail"]["field"] in ("amount", "executor_id")
        extra = await http.post(
            f"/escrow/{ESCROW}/release", json={"amount": 1, "recipient_id": "x", "tip": 1}
        )
        assert extra.status_code == 422 and extra.json()["detail"]["field"] == "tip"
        bad_key = await http.post(
            "/escrow/lock",
            json={"workflow_id": WF, "amount": 1, "poster_id": "poster_1", "executor_id": "exec_1"},
            headers={IDEMPOTENCY_HEADER: "k" * 201},
        )
        assert bad_key.status_code == 422 and bad_key.json()["detail"]["field"] == "idempotency_key"
        assert (await http.get("/health")).json()["status"] == "healthy"


def test_one_client_serves_several_event_loops(server: str, platform_key: str, db: Database) -> None:
    """A script may ``asyncio.run`` twice with one ``X402Integration`` (the seed's module-level client)."""
    x402 = X402Integration(api_url=f"{server}/x402", api_key=platform_key, retry=FAST)
    asyncio.run(locked(x402, 20, share="1"))
    asyncio.run(x402.release_escrow(ESCROW, 20, "exec_1", "done"))
    asyncio.run(x402.close())
    assert balances(db)["wallet:exec_1"] == 20_000_000


# ---------------------------------------------------------------------------------------------- bad input
async def test_bad_input_comes_back_as_the_same_errors_and_moves_nothing(
    x402: X402Integration, db: Database
) -> None:
    await locked(x402)
    await x402.release_escrow(ESCROW, 40, "exec_1", "milestone")
    other = {**terms(), "workflow_id": "wf_other"}
    await x402.create_job("supervised_workflow", other, 10, "exec_1")
    before = moved(db)

    with pytest.raises(InvalidAmount) as too_much:
        await x402.release_escrow(ESCROW, "60.000001", "exec_1", "greedy")
    assert too_much.value.field == "amount" and "still holds (60.00)" in too_much.value.message
    with pytest.raises(Forbidden) as more_than_earned:  # it holds 60, but cp1 earned exec_1 only 90 - 40
        await x402.release_escrow(ESCROW, "50.000001", "exec_1", "greedy")
    assert more_than_earned.value.rule == "payout_earned"
    with pytest.raises(InvalidAmount) as not_adding_up:
        await x402.split_payment(
            ESCROW,
            [{"recipient_id": "exec_1", "amount": 50}, {"recipient_id": "sup_1", "amount": 5}],
            total=60,
        )
    assert not_adding_up.value.field == "splits"
    with pytest.raises(InvalidAmount) as negative:
        await x402.release_escrow(ESCROW, -1, "exec_1", "negative")
    assert negative.value.field == "amount"
    with pytest.raises(NotFound) as unknown:
        await x402.lock_escrow("wf_other", 10, "nobody", "exec_1")
    assert unknown.value.fields["field"] == "poster_id"
    with pytest.raises(InvalidInput) as wrong_role:
        await x402.lock_escrow("wf_other", 10, "poster_1", "sup_1")
    assert wrong_role.value.field == "executor_id" and "executor role" in wrong_role.value.message
    with pytest.raises(InvalidInput) as bad_role:
        await x402.verify_identity("exec_1", "wizard")
    assert bad_role.value.field == "role"
    with pytest.raises(InvalidInput) as bad_rating:
        await x402.rate_supervisor("sup_1", WF, 6)
    assert bad_rating.value.field == "rating"
    with pytest.raises(InvalidInput) as bad_score:
        await x402.record_approval_quality("sup_1", WF, 1.5)
    assert bad_score.value.field == "quality_score"
    with pytest.raises(InvalidInput) as bad_status:
        await x402.update_job_status("job_x", "done")
    assert bad_status.value.field == "status"
    with pytest.raises(InvalidInput) as not_json:
        await x402.create_job("supervised_workflow", {"at": object()}, 1, "exec_1")
    assert not_json.value.field == "job_data"
    with pytest.raises(NotFound):
        await x402.get_escrow("escrow_wf_never_locked")
    with pytest.raises(ArtifactNotFound):
        await x402.get_artifact("x402://artifacts/sha256:" + "0" * 64)
    with pytest.raises(Forbidden) as four_eyes:
        job = await x402.create_job("supervised_workflow", {"workflow_id": WF}, 1, "both_1")
        await x402.create_approval_subjob(job["job_id"], "cp1", "both_1", {})
    assert four_eyes.value.rule == "four_eyes"
    with pytest.raises(NotFound) as no_profile:
        await x402.request_supervisor("sup_2", WF)
    assert "no marketplace profile" in no_profile.value.message

    after = moved(db)
    assert after[0] == before[0] and after[1] == before[1]  # no money moved, no posting made
    assert after[3] == before[3] + 1  # only the job created to set up the four-eyes case was recorded


async def test_an_idempotency_key_answers_once_and_refuses_other_arguments(
    x402: X402Integration, db: Database
) -> None:
    await locked(x402)
    first = await x402.release_escrow(ESCROW, 25, "exec_1", "cp1", idempotency_key="release-cp1")
    again = await x402.release_escrow(ESCROW, 25, "exec_1", "cp1", idempotency_key="release-cp1")
    assert again == first and postings_under(db, "release-cp1") == 1
    with pytest.raises(IdempotencyConflict):
        await x402.release_escrow(ESCROW, 26, "exec_1", "cp1", idempotency_key="release-cp1")
    for bad in ("", "line\nbreak", "k" * 201):
        with pytest.raises(InvalidInput) as refused:
            await x402.release_escrow(ESCROW, 1, "exec_1", "cp2", idempotency_key=bad)
        assert refused.value.field == "idempotency_key"
    assert balances(db)["wallet:exec_1"] == 25_000_000


async def test_only_a_platform_or_admin_key_may_use_the_platform_api(
    server: str, db: Database, platform_key: str
) -> None:
    service = IdentityService(db)
    _, poster_key = service.create_identity_with_key("poster_2", "", ["poster"])
    _, admin_key = service.create_identity_with_key("root", "", ["admin"])
    async with X402Integration(api_url=f"{server}/x402", api_key=poster_key.api_key, retry=FAST) as poster:
        with pytest.raises(Forbidden) as refused:
            await poster.lock_escrow(WF, 10, "poster_2", "exec_1")
        assert refused.value.rule == "platform_role"
    async with X402Integration(api_url=f"{server}/x402", api_key="sr_key_bogus", retry=FAST) as stranger:
        with pytest.raises(Unauthorized):
            await stranger.verify_identity("exec_1", "executor")
    async with X402Integration(api_url=f"{server}/x402", api_key=admin_key.api_key, retry=FAST) as admin:
        assert await admin.verify_identity("exec_1", "executor")
    assert "wallet:exec_1" not in balances(db)


# ---------------------------------------------------------------------------------------------- faults
async def test_a_dropped_answer_is_retried_with_the_same_key_and_pays_once(
    flaky: X402Integration, proxy: FlakyProxy, db: Database
) -> None:
    await locked(flaky)
    proxy.fail("/release", "drop")
    paid = await flaky.release_escrow(ESCROW, 30, "exec_1", "checkpoint_approved")
    tries = proxy.requests("/release")
    assert [t.action for t in tries] == ["drop", "forward"]
    key = tries[0].key
    assert key and all(t.key == key for t in tries)  # one key, made once, reused by the retry
    assert paid == remembered(db, key)  # the retry got the first call's answer
    assert postings_under(db, key) == 1 and balances(db)["wallet:exec_1"] == 30_000_000
    assert (await flaky.get_escrow(ESCROW))["held"] == "70.00"


async def test_a_delayed_answer_times_out_and_the_retry_pays_nothing_more(
    proxy: FlakyProxy, platform_key: str, db: Database
) -> None:
    async with X402Integration(
        api_url=f"{proxy.url}/x402", api_key=platform_key, timeout=1.0, retry=FAST
    ) as slow:
        await locked(slow)
        proxy.fail("/split", "delay")
        splits = [
            {"recipient_id": "exec_1", "amount": 90.0, "reason": "execution"},
            {"recipient_id": "sup_1", "amount": 10.0, "reason": "supervision"},
        ]
        paid = await slow.split_payment(ESCROW, splits, idempotency_key="final-split")
    tries = proxy.requests("/split")
    assert tries[0].action == "delay" and len(tries) >= 2
    assert {t.key for t in tries} == {"final-split"}
    assert paid == remembered(db, "final-split") and postings_under(db, "final-split") == 1
    assert balances(db)["wallet:exec_1"] == 90_000_000 and balances(db)["wallet:sup_1"] == 10_000_000


async def test_a_503_is_retried(flaky: X402Integration, proxy: FlakyProxy, db: Database) -> None:
    proxy.fail("/escrow/lock", "503")
    escrow = await locked(flaky)
    assert [t.action for t in proxy.requests("/escrow/lock")] == ["503", "forward"]
    proxy.fail("/release", "503", "drop")
    await flaky.release_escrow(escrow["escrow_id"], 90, "exec_1", "all")
    tries = proxy.requests("/release")
    assert [t.action for t in tries] == ["503", "drop", "forward"] and len({t.key for t in tries}) == 1
    assert balances(db)["wallet:exec_1"] == 90_000_000 and postings_under(db, tries[0].key or "") == 1


async def test_reads_are_retried_too(flaky: X402Integration, proxy: FlakyProxy) -> None:
    await locked(flaky)
    proxy.fail(f"/escrow/{ESCROW}", "drop")
    assert (await flaky.get_escrow(ESCROW))["held"] == "100.00"
    tries = proxy.requests(f"/escrow/{ESCROW}")
    assert [(t.method, t.action, t.key) for t in tries] == [("GET", "drop", None), ("GET", "forward", None)]


async def test_a_4xx_is_not_retried(flaky: X402Integration, proxy: FlakyProxy, db: Database) -> None:
    await locked(flaky, 10)
    before = moved(db)
    with pytest.raises(InvalidAmount):
        await flaky.release_escrow(ESCROW, 11, "exec_1", "too much")
    with pytest.raises(InvalidInput):
        await flaky.rate_supervisor("sup_1", WF, 0)
    with pytest.raises(NotFound):
        await flaky.get_user_profile("nobody")
    assert len(proxy.requests("/release")) == 1
    assert len(proxy.requests("/ratings")) == 1
    assert len(proxy.requests("/identities/nobody")) == 1
    assert moved(db) == before


async def test_when_retries_run_out_the_key_makes_the_repeat_safe(
    flaky: X402Integration, proxy: FlakyProxy, db: Database
) -> None:
    await locked(flaky)
    proxy.fail("/release", *["drop"] * FAST.attempts)
    with pytest.raises(ServerUnreachable) as lost:
        await flaky.release_escrow(ESCROW, 45, "exec_1", "milestone")
    assert not isinstance(lost.value, RequestTimedOut)
    tries = proxy.requests("/release")
    assert len(tries) == FAST.attempts and lost.value.fields["attempts"] == FAST.attempts
    key = lost.value.fields["idempotency_key"]
    assert key == tries[0].key and "may or may not have applied it" in lost.value.message
    assert postings_under(db, key) == 1  # the server paid once; the client just never heard

    again = await flaky.release_escrow(ESCROW, 45, "exec_1", "milestone", idempotency_key=key)
    assert again == remembered(db, key) and postings_under(db, key) == 1
    assert balances(db)["wallet:exec_1"] == 45_000_000

    proxy.fail("/release", *["503"] * FAST.attempts)
    with pytest.raises(ServerError):
        await flaky.release_escrow(ESCROW, 5, "exec_1", "never arrives")
    assert len(proxy.requests("/release")) == 2 * FAST.attempts + 1
    assert balances(db)["wallet:exec_1"] == 45_000_000


async def test_an_unreachable_platform_is_reported_not_hung() -> None:
    port_holder = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = port_holder.sockets[0].getsockname()[1]
    port_holder.close()
    await port_holder.wait_closed()  # nothing listens on the port now: connections are refused
    async with RemotePlatform(f"http://127.0.0.1:{port}/x402", "sr_key_x", retry=FAST) as platform:
        with pytest.raises(ServerUnreachable) as refused:
            await platform.release_escrow(ESCROW, 1, "exec_1", "x", idempotency_key="k1")
    assert (
        refused.value.fields["idempotency_key"] == "k1" and refused.value.fields["attempts"] == FAST.attempts
    )


# ------------------------------------------------------------------- a SafeRun whose money lives elsewhere


async def test_an_orchestrator_on_a_remote_platform_pays_each_milestone_once(
    proxy: FlakyProxy, platform_key: str, db: Database, tmp_path: Any
) -> None:
    """The agent side's SafeRun keeps its own store; its jobs and money go to the platform SafeRun through
    the outbox, over a link that drops and delays answers. The platform's ledger shows each payment once."""
    from saferun.core.state_machine.models import CheckpointConfig, ExecutionState, WorkflowConfig
    from saferun.storage import ledger as book
    from saferun.storage import outbox

    local = Database(f"sqlite:///{tmp_path / 'agent-side.db'}")
    async with X402Integration(api_url=f"{proxy.url}/x402", api_key=platform_key, retry=FAST) as x402:
        orch = WorkflowOrchestrator(x402, database=local)
        config = WorkflowConfig(
            name="remote money",
            checkpoints=[CheckpointConfig(name=f"step {i}", checkpoint_id=f"cp{i}") for i in (1, 2)],
            escrow_amount="100.00",
            poster_id="poster_1",
            executor_id="exec_1",
            supervisor_id="sup_1",
        )
        wf = config.workflow_id
        orch.initialize_workflow(config)
        orch.start_execution(wf)
        for cp in ("cp1", "cp2"):
            _, req = await orch.pause(wf, ExecutionState(checkpoint_id=cp), f"review {cp}")
            assert req is not None
            orch.submit_approval(
                wf, ApprovalResponse(request_id=req.request_id, decision="APPROVED", approved_by="sup_1")
            )
        orch.settle_workflow(wf, {"ok": True})
        orch.complete_workflow(wf)

        proxy.fail("/escrow/lock", "drop")
        proxy.fail("/split", "503", "drop")
        for _ in range(10):  # what the server's sweeper does every second
            report = await orch.deliver_platform_calls()
            assert report is not None
            with local.read() as conn:
                if all(r["status"] == "delivered" for r in outbox.for_workflow(conn, wf)):
                    break
            with local.transaction() as conn:  # no waiting for the backoff in a test
                conn.execute(outbox.platform_outbox.update().values(next_attempt_at=outbox.utcnow()))
        with local.read() as conn:
            assert {r["status"] for r in outbox.for_workflow(conn, wf)} == {"delivered"}

    assert [s.action for s in proxy.requests("/escrow/lock")] == ["drop", "forward"]
    with db.read() as conn:  # the platform SafeRun's own books
        position = book.escrow_position(conn, wf)
        paid = book.payments(conn, wf)
    assert position.locked == 100_000_000 and position.released == 100_000_000 and position.held == 0
    assert paid == {"wallet:exec_1": 90_000_000, "wallet:sup_1": 10_000_000}
    job = await EmbeddedPlatform(db).get_job(remembered(db, f"job:{wf}")["job_id"])
    assert len(job["subjobs"]) == 2  # one approval sub-job per checkpoint
    settlement = await EmbeddedPlatform(db).get_job(remembered(db, f"settlement:{wf}")["job_id"])
    assert settlement["job_type"] == "settlement"
    assert settlement["data"]["job_data"]["parent_job_id"] == job["job_id"]
    assert settlement["data"]["job_data"]["released"] == "100.00"
    quality = remembered(db, f"quality:{wf}")
    assert quality["quality_score"] == 1.0
    with local.read() as conn:  # each checkpoint's state is in the platform's Artifacts primitive
        sent = [
            r["result"]["uri"] for r in outbox.for_workflow(conn, wf) if r["operation"] == "create_artifact"
        ]
    states = [
        ExecutionState.model_validate_json((await EmbeddedPlatform(db).get_artifact(u))["content"])
        for u in sent
    ]
    assert [s.checkpoint_id for s in states] == ["cp1", "cp2"]
    local.dispose()
