"""Advanced Pattern 1: checkpoint only when the agent is unsure (confidence below 0.8).

An invoice-coding agent posts each invoice to a draft journal under the category it guessed, then
passes a checkpoint: a confident guess goes through the "Automatic pass" checkpoint
(``requires_approval=False``: the state is still captured and audited, nobody is asked), an unsure one
waits at "Human review". A modification re-codes the posting; a rejection rolls the posting back through
its compensation (``unpost_invoice``), and the agent carries on with the next invoice.

python examples/pattern_confidence.py               # waits for you: decide with `saferun approvals ...`
python examples/pattern_confidence.py --auto-review # a scripted reviewer re-codes one, rejects one
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from saferun import (
    ApprovalDecision,
    ApprovalRejected,
    CheckpointConfig,
    SupervisedRun,
    WorkflowConfig,
    WorkflowOrchestrator,
    compensation,
    supervised,
)
from saferun.agents.supervisor.agent import SupervisorAgent
from saferun.domain.money import format_micro

REVIEWER = "human_789"
THRESHOLD = 0.8  # the seed's: below it, a human looks
JOURNAL: dict[str, dict[str, Any]] = {}  # invoice -> posting: stands in for the accounting system
INVOICES = [
    {"id": "INV-1", "vendor": "AWS", "text": "EC2 compute, March", "usd": 1200},
    {"id": "INV-2", "vendor": "Staples", "text": "printer paper", "usd": 80},
    {"id": "INV-3", "vendor": "J. Smith", "text": "consulting and travel, Q1", "usd": 4000},
    {"id": "INV-4", "vendor": "Delta", "text": "flight SFO-JFK", "usd": 650},
    {"id": "INV-5", "vendor": "Unknown LLC", "text": "services rendered", "usd": 9800},
]
KEYWORDS = {
    "cloud": ["ec2", "compute", "s3"],
    "office supplies": ["paper", "toner"],
    "travel": ["flight", "hotel", "travel"],
    "consulting": ["consulting", "advisory"],
}


def classify(invoice: dict[str, Any]) -> tuple[str, float]:
    """The agent's guess and how sure it is: one clear keyword match is confident, anything else is not."""
    words = invoice["text"].lower().replace(",", " ").split()
    hits = {cat: sum(w in words for w in kws) for cat, kws in KEYWORDS.items()}
    matched = [cat for cat, n in hits.items() if n]
    if len(matched) == 1:
        return matched[0], 0.9 + min(hits[matched[0]], 2) * 0.025
    if matched:  # several categories fit: a guess
        return max(matched, key=lambda c: hits[c]), 0.55
    return "uncategorized", 0.3


@compensation("unpost_invoice")
def unpost_invoice(invoice_id: str) -> None:
    JOURNAL.pop(invoice_id, None)


async def smart_checkpoint(
    run: SupervisedRun, invoice: dict[str, Any], category: str, confidence: float
) -> str:
    """The seed's ``smart_checkpoint``: a human only when the agent is uncertain. Returns the category."""
    parameters = {"category": category}
    context = {**invoice, "confidence": confidence}
    if confidence >= THRESHOLD:
        print(f"{invoice['id']}: high confidence ({confidence:.2f}), auto-proceeding as {category}")
        await run.checkpoint("Automatic pass", parameters=parameters, context=context, confidence=confidence)
        return category
    print(f"{invoice['id']}: low confidence ({confidence:.2f}), requesting human review")
    decision = await run.checkpoint(
        "Human review",
        parameters=parameters,
        summary=f"Code {invoice['vendor']} ({invoice['text']}, ${invoice['usd']}) as {category}?",
        context=context,
        confidence=confidence,
        recommendation="review",
    )
    return str(decision.parameters["category"])


async def agent(orchestrator: WorkflowOrchestrator, config: WorkflowConfig) -> None:
    async with supervised(config, orchestrator) as run:
        for invoice in INVOICES:
            category, confidence = classify(invoice)
            JOURNAL[invoice["id"]] = {"category": category, "usd": invoice["usd"]}
            await run.step(
                f"post {invoice['id']}", compensation="unpost_invoice", args={"invoice_id": invoice["id"]}
            )
            try:
                decided = await smart_checkpoint(run, invoice, category, confidence)
            except ApprovalRejected as rejected:
                print(f"{invoice['id']}: rejected ({rejected.rationale}); posting rolled back")
                continue
            JOURNAL[invoice["id"]]["category"] = decided
        run.result["posted"] = sorted(JOURNAL)


async def scripted_reviewer(orchestrator: WorkflowOrchestrator, agent: asyncio.Task[None]) -> None:
    supervisor = SupervisorAgent(supervisor_id=REVIEWER)
    while not agent.done():
        for request in orchestrator.pending_approvals():
            vendor = request.context["vendor"]
            if vendor == "J. Smith":
                verdict = (
                    ApprovalDecision.MODIFIED,
                    "a contractor, not a consultancy",
                    {"category": "contractors"},
                )
            else:
                verdict = (ApprovalDecision.REJECTED, "no purchase order: hold for accounts payable", None)
            print(f"Reviewer sees: {supervisor.format_for_display(request)['summary']} -> {verdict[0].value}")
            response = supervisor.submit_decision(
                request.request_id, verdict[0], verdict[1], None, verdict[2]
            )
            orchestrator.submit_approval(request.workflow_id, response)
        await asyncio.sleep(0.02)


async def main() -> None:
    orchestrator = WorkflowOrchestrator()
    config = WorkflowConfig(
        name="Code March invoices",
        checkpoints=[
            CheckpointConfig(name="Automatic pass", requires_approval=False),
            CheckpointConfig(name="Human review", timeout_seconds=600),
        ],
        escrow_amount="20.00",
        poster_id="controller",
        executor_id="coding_agent",
        supervisor_id=REVIEWER,
    )
    if "--auto-review" in sys.argv:
        task = asyncio.create_task(agent(orchestrator, config))
        await asyncio.gather(task, scripted_reviewer(orchestrator, task))
    else:
        print("Waiting for decisions: saferun approvals list (or the dashboard, saferun serve)")
        await agent(orchestrator, config)
    asked = len(orchestrator.approval_history(config.workflow_id))
    snapshots = len(orchestrator.list_snapshots(config.workflow_id))
    print(f"Invoices: {len(INVOICES)}; checkpoints captured: {snapshots}; a human was asked {asked} time(s)")
    print("Journal: " + ", ".join(f"{k}={v['category']}" for k, v in sorted(JOURNAL.items())))
    wf = orchestrator.get_workflow(config.workflow_id)
    pos = orchestrator.escrow_position(config.workflow_id)
    print(
        f"Workflow {wf.workflow_id} {wf.current_state.value}: released {format_micro(pos.released)}, "
        f"refunded {format_micro(pos.refunded)}"
    )


if __name__ == "__main__":
    asyncio.run(main())
