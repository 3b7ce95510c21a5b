"""Any Python function behind approval: ``@requires_approval`` / ``@supervised_tool``.

An accounts-receivable agent has three tools. Calling one opens a checkpoint whose parameters are the
call's arguments; the tool then runs with what the reviewer left, or raises ``ApprovalRejected``.

- ``issue_credit`` (async, undone by the ``revoke_credit`` compensation): the reviewer rejects a $900
  credit, credits up to $100 go through without asking (``when=``), and a $2,500 one is cut to $250;
- ``send_reminders`` (sync, called from a worker thread; its mailer argument is not JSON, so it is passed
  through and only the customer list is reviewed): the reviewer drops a customer in a legal dispute;
- ``purge_customer_data`` (sync, outside any run): ``standalone=`` gives each call its own one-checkpoint
  workflow; the reviewer rejects it (legal hold).

Saga rule to keep in mind: a credit's step stays undoable until the *next* approval (here the reminder
batch), because a rejection rolls back to the last approved state; rejecting a later credit would revoke
the credits issued since the previous approval.

python examples/decorator_tools.py               # waits for you: decide with `saferun approvals ...`
python examples/decorator_tools.py --auto-review # a scripted reviewer decides as described above
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from dataclasses import dataclass, field

from saferun import (
    ApprovalDecision,
    ApprovalRejected,
    CheckpointConfig,
    WorkflowConfig,
    WorkflowOrchestrator,
    compensation,
    supervised,
)
from saferun.agents.supervisor.agent import SupervisorAgent
from saferun.domain.money import format_micro
from saferun.integrations import StandaloneWorkflow, requires_approval, supervised_tool

REVIEWER = "human_789"
CREDITS: dict[str, tuple[str, int]] = {}  # credit id -> (customer, USD): stands in for the billing system
PURGED: list[str] = []
_ids = itertools.count(1)


@dataclass
class Mailer:
    """Not JSON: a reviewer never sees it, the tool gets it untouched."""

    sent: list[str] = field(default_factory=list)

    def send(self, to: str, text: str) -> None:
        self.sent.append(to)


@compensation("revoke_credit")
def revoke_credit(credit_id: str) -> None:
    CREDITS.pop(credit_id, None)


@requires_approval(
    "Review credit",
    summary="Credit {amount_usd} USD to {customer}?",
    when=lambda p: p["amount_usd"] > 100,
    compensation="revoke_credit",
    compensation_args=lambda credit_id, params: {"credit_id": credit_id},
)
async def issue_credit(customer: str, amount_usd: int) -> str:
    credit_id = f"cr-{next(_ids)}"
    CREDITS[credit_id] = (customer, amount_usd)
    return credit_id


@supervised_tool(
    "Review reminder batch",
    parameters=["customers"],
    summary=lambda p: f"Email a payment reminder to {len(p['customers'])} customers?",
)
def send_reminders(mailer: Mailer, customers: list[str], template: str = "Your invoice is overdue.") -> int:
    for customer in customers:
        mailer.send(customer, template)
    return len(customers)


@requires_approval(
    "Purge customer data",
    summary="Delete every record of {customer}?",
    standalone=StandaloneWorkflow(poster_id="dpo_office", executor_id="ar_agent", supervisor_id=REVIEWER),
)
def purge_customer_data(customer: str) -> None:
    PURGED.append(customer)


async def agent(orchestrator: WorkflowOrchestrator, config: WorkflowConfig) -> None:
    mailer = Mailer()
    async with supervised(config, orchestrator):
        for customer, amount in (("initech", 900), ("acme", 40), ("globex", 2500)):
            try:
                credit_id = await issue_credit(customer, amount)
                print(f"credit {credit_id}: {CREDITS[credit_id][1]} USD to {customer}")
            except ApprovalRejected as rejected:
                print(f"credit for {customer} rejected: {rejected.rationale}")
        sent = await asyncio.to_thread(send_reminders, mailer, ["acme", "globex", "initech", "umbrella"])
        print(f"reminders sent: {sent} ({', '.join(mailer.sent)})")
    try:
        await asyncio.to_thread(purge_customer_data, "umbrella")
    except ApprovalRejected as rejected:
        print(f"purge of umbrella rejected: {rejected.rationale}")


async def scripted_reviewer(orchestrator: WorkflowOrchestrator, agent: asyncio.Task[None]) -> None:
    supervisor = SupervisorAgent(supervisor_id=REVIEWER)
    while not agent.done():
        for request in orchestrator.pending_approvals():
            params = request.parameters
            print(f"Reviewer sees: {supervisor.format_for_display(request)['summary']}")
            if request.checkpoint_name == "Review credit" and params["customer"] == "globex":
                decision = (ApprovalDecision.MODIFIED, "goodwill credits stop at 250", {"amount_usd": 250})
            elif request.checkpoint_name == "Review credit":
                decision = (ApprovalDecision.REJECTED, "initech had a credit this quarter", None)
            elif request.checkpoint_name == "Review reminder batch":
                keep = [c for c in params["customers"] if c != "umbrella"]
                decision = (ApprovalDecision.MODIFIED, "umbrella is in a legal dispute", {"customers": keep})
            else:
                decision = (ApprovalDecision.REJECTED, "legal hold on umbrella", None)
            response = supervisor.submit_decision(
                request.request_id, decision[0], decision[1], None, decision[2]
            )
            orchestrator.submit_approval(request.workflow_id, response)
        await asyncio.sleep(0.02)


async def main() -> None:
    orchestrator = WorkflowOrchestrator()
    config = WorkflowConfig(
        name="Accounts receivable clean-up",
        checkpoints=[
            CheckpointConfig(name="Review credit", timeout_seconds=600),
            CheckpointConfig(name="Review reminder batch", timeout_seconds=600),
        ],
        escrow_amount="10.00",
        poster_id="finance_lead",
        executor_id="ar_agent",
        supervisor_id=REVIEWER,
    )
    if "--auto-review" in sys.argv:
        task = asyncio.create_task(agent(orchestrator, config))
        await asyncio.gather(task, scripted_reviewer(orchestrator, task))
    else:
        print("Waiting for decisions: saferun approvals list (or the dashboard, saferun serve)")
        await agent(orchestrator, config)
    wf = orchestrator.get_workflow(config.workflow_id)
    pos = orchestrator.escrow_position(config.workflow_id)
    credits = ", ".join(f"{c}={usd}" for c, usd in sorted(CREDITS.values()))
    print(f"credits on the books: {credits}; purged: {PURGED or 'nothing'}")
    print(
        f"Workflow {wf.workflow_id} {wf.current_state.value}: released {format_micro(pos.released)}, "
        f"refunded {format_micro(pos.refunded)}"
    )


if __name__ == "__main__":
    asyncio.run(main())
