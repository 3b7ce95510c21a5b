"""Issue 13, item 5: every state change, decision, compensation, payment and stuck item logs once, at
the right level, after its transaction committed, never with a secret (``saferun/storage/eventlog.py``)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import timedelta

import pytest

from saferun.core.rollback.reconciliation import CompensationRegistry, RetryPolicy
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.errors import DecisionConflict
from saferun.storage.database import Database
from saferun.storage.schema import utcnow
from tests.helpers import decide, pause, started

SECRET_CARD = "4111-1111-1111-1111"  # a step argument: never in a log line
RATIONALE = "the vendor's quote sr_key_abcdef123456 is wrong"  # typed text: never in a log line
LOGGED = {  # audit kinds that must each give exactly one line, and at which level
    "transition": None,  # INFO, WARNING when the workflow fails
    "decision": logging.INFO,
    "escrow_locked": logging.INFO,
    "milestone_released": logging.INFO,
    "escrow_refunded": logging.INFO,
    "compensation_succeeded": logging.INFO,
    "compensation_failed": logging.WARNING,
}


def orchestrator(db: Database, fail: set[str]) -> WorkflowOrchestrator:
    reg = CompensationRegistry()

    def make(name: str):  # type: ignore[no-untyped-def]
        def undo(**_: object) -> None:
            if name in fail:
                raise ConnectionError(f"{name} endpoint down")

        return undo

    for name in ("refund_card", "unbook_room"):
        reg.register(name, make(name))
    return WorkflowOrchestrator(database=db, registry=reg, retry=RetryPolicy(attempts=1, initial_delay=0.001))


def events_of(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.name == "saferun.events"]


async def test_a_full_workflow_logs_each_event_once(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    orch = orchestrator(db, fail={"unbook_room"})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="saferun"):
        wf = started(orch)
        decide(orch, await pause(orch, wf, "cp1"), "APPROVED")
        orch.register_step(wf, "charge card", "refund_card", {"card": SECRET_CARD})
        req = await pause(orch, wf, "cp2")
        decide(orch, req, "REJECTED", rationale=RATIONALE)
        with pytest.raises(DecisionConflict):  # refused: rolled back, so never logged
            decide(orch, req, "APPROVED")
        assert (await orch.arollback(wf)).succeeded
        orch.register_step(wf, "book room", "unbook_room", {"room": "A1"})
        decide(orch, await pause(orch, wf, "cp2"), "REJECTED", rationale="no")
        report = await orch.arollback(wf)  # its compensation fails: the workflow fails, rest refunded
        assert report.final_state == "failed"

    audited = Counter(e["kind"] for e in orch.audit_events(wf) if e["kind"] in LOGGED)
    lines = events_of(caplog.records)
    assert all(r.workflow_id == wf for r in lines)
    assert Counter(r.event for r in lines) == audited  # one line per event, none for the refused decision
    assert audited["decision"] == 3 and audited["compensation_succeeded"] == 1
    assert audited["milestone_released"] == 1 and audited["escrow_refunded"] == 1
    for r in lines:
        expected = LOGGED[r.event]
        if r.event == "transition":
            expected = logging.WARNING if "-> failed" in r.getMessage() else logging.INFO
        assert r.levelno == expected, r.getMessage()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET_CARD not in text and "sr_key_" not in text and "vendor's quote" not in text
    assert "executing -> awaiting_approval" in text and "decision REJECTED" in text
    assert "compensated step 'charge card' (compensation refund_card)" in text
    assert "compensation FAILED for step 'book room'" in text


async def test_a_stuck_item_warns_once_per_period(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    orch = WorkflowOrchestrator(database=db, registry=CompensationRegistry())
    wf = started(orch)
    orch.register_step(wf, "charge card", "refund_card", {"card": SECRET_CARD})
    decide(orch, await pause(orch, wf, "cp1"), "REJECTED")
    t0 = utcnow() + orch.rollback_grace + timedelta(seconds=1)
    caplog.clear()  # only what the sweeps log
    with caplog.at_level(logging.INFO, logger="saferun"):
        for i in range(5):  # five sweeps, one second apart, as the server's sweeper runs them
            await asyncio.to_thread(orch.sweep, t0 + timedelta(seconds=i))
    stuck = [r for r in caplog.records if getattr(r, "event", None) == "stuck"]
    assert len(stuck) == 1 and stuck[0].levelno == logging.WARNING and stuck[0].workflow_id == wf
    assert SECRET_CARD not in stuck[0].getMessage()
    assert events_of(caplog.records) == []  # the sweep changed nothing, so no event line
