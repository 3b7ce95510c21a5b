"""Approval policy as code (issue 16, item 4): load-time checks, pure evaluation, the engine applying a
verdict in the transaction that opens the request, and ``saferun policy test``."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from saferun import ApprovalRejected, CompensationRegistry, supervised
from saferun.cli.main import app as cli
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain import approval_policy
from saferun.domain.approval_policy import Case
from saferun.domain.states import WorkflowState
from saferun.errors import InvalidInput
from saferun.storage.database import Database
from tests.helpers import decide, make_config, pause, started

POLICY = textwrap.dedent(
    """
    name: payments
    version: 3
    default: require_approval
    rules:
      - id: R1
        description: never touch production
        when: {params: {target: {in: [prod-db]}}}
        then: forbid
      - id: R2
        description: small, confident, quiet payments
        when:
          checkpoints: ["pay_*", cp1]
          params: {amount: {lte: "100.00"}}
          confidence_at_least: 0.9
          alerts: none
        then: auto_approve
      - id: R3
        when: {spend_above: "500"}
        then: require_approval
    """
)


def test_evaluation_first_matching_rule_wins_and_names_itself() -> None:
    policy = approval_policy.load(POLICY)
    small = Case("pay_vendor", parameters={"amount": "99.99"}, confidence=0.95)
    assert policy.evaluate(small).action == "auto_approve" and policy.evaluate(small).rule == "R2"
    assert (
        policy.evaluate(small).because
        == "approved by policy payments v3 rule R2: small, confident, quiet payments"
    )
    assert policy.evaluate(small).actor == "policy:payments@v3"
    prod = Case("pay_vendor", parameters={"amount": 1, "target": "prod-db"}, confidence=0.99)
    assert policy.evaluate(prod).rule == "R1" and policy.evaluate(prod).action == "forbid"
    for case in (
        Case("pay_vendor", parameters={"amount": "100.01"}, confidence=0.95),  # above the limit, exactly
        Case("pay_vendor", parameters={"amount": 50}, confidence=None),  # no confidence stated
        Case("pay_vendor", parameters={"amount": 50}, confidence=0.95, alerts=[{"rule": "x"}]),
        Case("ship_goods", parameters={"amount": 50}, confidence=0.95),  # another checkpoint
        Case("pay_vendor", parameters={"amount": "lots"}, confidence=0.95),  # not a number: no match
        Case("pay_vendor", parameters={}, confidence=0.95),  # parameter not proposed: no match
    ):
        assert policy.evaluate(case).action == "require_approval", case
    assert policy.evaluate(Case("x", spend=Decimal("500.01"))).rule == "R3"
    assert policy.evaluate(Case("x", spend=Decimal("500"))).rule is None  # the default


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("name: p\nversion: 1\nrules: [{id: A, then: maybe}]", "policy.rules[A].then", "Input should be"),
        (
            "name: p\nversion: 1\nrules: [{id: A, then: forbid, whne: {}}]",
            "policy.rules[A].whne",
            "Extra inputs",
        ),
        (
            "name: p\nversion: 1\nrules: [{id: A, then: forbid, when: {params: {n: {gt: 10, lt: 5}}}}]",
            "policy.rules[A].when.params.n",
            "could never match",
        ),
        (
            "name: p\nversion: 1\nrules: [{id: A, then: forbid, when: {confidence_at_least: 0.9, "
            "confidence_below: 0.5}}]",
            "policy.rules[A].when",
            "could never match",
        ),
        (
            "name: p\nversion: 1\nrules: [{id: A, then: forbid}, {id: A, then: forbid}]",
            "policy",
            "used twice",
        ),
        ("name: p\nversion: 0\nrules: []", "policy.version", "greater than or equal"),
        (
            "name: p\nversion: 1\nrules: [{id: A, then: forbid, when: {params: {n: {}}}}]",
            "policy.rules[A]",
            "no test",
        ),
        (
            "name: p\nversion: 1\nrules: [{id: A, then: forbid, when: {params: {n: {pattern: '('}}}}]",
            "policy.rules[A].when.params.n.pattern",
            "regular expression",
        ),
        (
            "name: p\nversion: 1\nrules: [{id: A, then: forbid, when: {params: {n: {gt: 1e400}}}}]",
            "policy.rules[A].when.params.n.gt",
            "ledger",
        ),
        ("- not a mapping", "policy", "mapping"),
        ("name: [", "policy", "not YAML"),
    ],
)
def test_impossible_or_misspelled_rules_are_refused_at_load_naming_the_rule(
    text: str, field: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as exc:
        approval_policy.load(text)
    assert exc.value.field.startswith(field), exc.value.field
    assert words in exc.value.message, exc.value.message


async def test_the_engine_applies_verdicts_as_requests_open(db: Database) -> None:
    policy = approval_policy.load(POLICY)
    orch = WorkflowOrchestrator(database=db, approval_policy=policy)
    wf = started(orch, make_config(n=3))
    # R2: approved by the rule, in the transaction that opened the request, recorded as the policy's
    snap = await orch.create_checkpoint(
        wf, __import__("saferun").ExecutionState(checkpoint_id="cp1", parameters={"amount": "20"})
    )
    req = orch.request_approval(wf, snap.snapshot_id, "pay 20", {}, confidence=0.95)
    assert req.status == "decided"
    resp = orch.get_approval_response(req.request_id)
    assert (resp.decision.value, resp.approved_by, resp.automatic) == ("APPROVED", "policy:payments@v3", True)
    assert "rule R2" in resp.rationale
    assert orch.get_workflow(wf).current_state == WorkflowState.EXECUTING
    assert orch.escrow_position(wf).released > 0  # the milestone is paid like any approval
    # default: a person decides; the verdict is on the chain either way
    req2 = await pause(orch, wf, "cp2", {"amount": "20"})
    assert orch.get_approval_request(req2).status == "pending"
    decide(orch, req2, "APPROVED")
    events = [e["payload"].get("policy") for e in orch.audit_events(wf) if e["kind"] == "transition"]
    assert {"action": "auto_approve", "policy": "payments", "version": 3, "rule": "R2"} in events
    assert {"action": "require_approval", "policy": "payments", "version": 3, "rule": None} in events
    assert orch.verify_audit(wf)[1] is None


async def test_a_forbidden_step_is_rejected_and_rolled_back_for_the_agent(db: Database) -> None:
    registry = CompensationRegistry()
    undone: list[str] = []
    registry.register("undo_prep", lambda **kw: undone.append("prep"))
    orch = WorkflowOrchestrator(database=db, approval_policy=approval_policy.load(POLICY), registry=registry)
    config = make_config(n=2)
    with pytest.raises(ApprovalRejected) as rejected:
        async with supervised(config, orch) as run:
            await run.step("prep", compensation="undo_prep", args={})
            await run.checkpoint("cp1", parameters={"target": "prod-db", "amount": 1}, summary="drop tables")
    assert "forbidden by policy payments v3 rule R1" in rejected.value.rationale
    assert undone == ["prep"]
    assert orch.get_workflow(config.workflow_id).current_state in (
        WorkflowState.FAILED,
        WorkflowState.COMPLETED,
    )


def test_policy_check_and_test_from_the_cli(tmp_path: Path, sqlite_db: Database) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    (tmp_path / "cases.yaml").write_text(
        textwrap.dedent(
            """
            - {name: small, checkpoint: pay_x, parameters: {amount: 5}, confidence: 1, expect: auto_approve}
            - {name: prod, checkpoint: pay_x, parameters: {target: prod-db}, expect: forbid}
            - {name: big, checkpoint: pay_x, parameters: {amount: 5000}, expect: require_approval}
            """
        )
    )
    runner = CliRunner()
    ok = runner.invoke(cli, ["policy", "check", str(tmp_path / "p.yaml")])
    assert ok.exit_code == 0 and "payments v3, 3 rule(s)" in ok.output
    passed = runner.invoke(cli, ["policy", "test", str(tmp_path / "p.yaml"), str(tmp_path / "cases.yaml")])
    assert passed.exit_code == 0 and "all as expected" in passed.output, passed.output
    (tmp_path / "wrong.yaml").write_text("- {checkpoint: pay_x, parameters: {amount: 5000}, expect: forbid}")
    failed = runner.invoke(cli, ["policy", "test", str(tmp_path / "p.yaml"), str(tmp_path / "wrong.yaml")])
    assert failed.exit_code == 1 and "not decided as expected" in failed.output
    (tmp_path / "bad.yaml").write_text("name: p\nversion: 1\nrules: [{id: Z, then: nope}]")
    bad = runner.invoke(cli, ["policy", "check", str(tmp_path / "bad.yaml")])
    assert bad.exit_code == 1 and "rules[Z].then" in bad.output


async def test_policy_test_replays_recorded_checkpoints(tmp_path: Path, sqlite_db: Database) -> None:
    orch = WorkflowOrchestrator(database=sqlite_db)
    wf = started(orch, make_config(n=2))
    decide(orch, await pause(orch, wf, "cp1", {"amount": "20"}), "APPROVED")
    await pause(orch, wf, "cp2", {"target": "prod-db"})
    (tmp_path / "p.yaml").write_text(POLICY)
    url = sqlite_db.engine.url.render_as_string(hide_password=False)
    out = CliRunner().invoke(
        cli, ["--database-url", url, "policy", "test", str(tmp_path / "p.yaml"), "--recorded", "10"]
    )
    assert out.exit_code == 0, out.output
    assert "forbid" in out.output and "APPROVED by reviewer" in out.output and "pending" in out.output


def test_the_live_policy_over_http_with_the_sdk(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saferun.client import SafeRunClient
    from tests.test_client import serving

    (tmp_path / "p.yaml").write_text(POLICY)
    monkeypatch.setenv("SAFERUN_APPROVAL_POLICY", str(tmp_path / "p.yaml"))
    with serving(db, auth="open") as url, SafeRunClient(url) as client:
        live = client.policy()
        assert live["active"] and (live["name"], live["version"]) == ("payments", 3)
        assert [r["id"] for r in live["rules"]] == ["R1", "R2", "R3"]
        out = client.evaluate_policy(
            [
                {
                    "checkpoint": "pay_x",
                    "parameters": {"amount": 5},
                    "confidence": 1,
                    "expect": "auto_approve",
                },
                {"checkpoint": "pay_x", "parameters": {"target": "prod-db"}, "expect": "auto_approve"},
            ]
        )
        assert [(r["rule"], r["as_expected"]) for r in out["results"]] == [("R2", True), ("R1", False)]
        with pytest.raises(InvalidInput) as bad:
            client.evaluate_policy([{"checkpoint": "x", "confidence": 7}])
        assert bad.value.field == "cases[0].confidence"
