"""A LangGraph refund agent under SafeRun: a review node and a tool call become approvals.

The graph triages a support ticket, proposes a refund, has it reviewed (``approval_node``), pays it, then
asks its "model" to email the customer through a tool behind approval (``approval_tool`` under
LangGraph's ``ToolNode``). ``run_graph`` turns each of the graph's interrupts into a SafeRun checkpoint
and resumes the graph with the decision. Two tickets:

- T-1001: the agent refunds the whole order ($480) for one damaged item; the reviewer modifies the
  refund to the item's price ($48) and approves the email;
- T-1002: a refund for an order the customer already returned for cash; the reviewer rejects and the
  graph routes the ticket to a human queue instead of paying.

Needs LangGraph: pip install 'saferun[langgraph]'.

python examples/langgraph_supervised.py               # waits for you: decide with `saferun approvals ...`
python examples/langgraph_supervised.py --auto-review # a scripted reviewer decides as described above
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode

from saferun import (
    ApprovalDecision,
    CheckpointConfig,
    WorkflowConfig,
    WorkflowOrchestrator,
    compensation,
    current_run,
    supervised,
)
from saferun.agents.supervisor.agent import SupervisorAgent
from saferun.domain.money import format_micro
from saferun.integrations.langgraph import approval_node, approval_tool, run_graph

REVIEWER = "human_789"
PAYMENTS: dict[str, int] = {}  # ticket -> refunded cents: stands in for the payment provider
OUTBOX: list[dict[str, str]] = []  # emails sent: stands in for the mail service
TICKETS = {
    "T-1001": {"order_total_cents": 48000, "damaged_item_cents": 4800, "note": "one mug arrived broken"},
    "T-1002": {"order_total_cents": 12000, "damaged_item_cents": 12000, "note": "refund please (returned)"},
}


@compensation("reverse_refund")
def reverse_refund(ticket: str) -> None:
    PAYMENTS.pop(ticket, None)


class TicketState(TypedDict, total=False):
    ticket: str
    refund_cents: int
    escalation: str
    messages: Annotated[list[AnyMessage], add_messages]


def triage(state: TicketState) -> dict[str, Any]:
    """The agent's proposal. Its bug: it refunds the order total, not the damaged item."""
    return {"refund_cents": TICKETS[state["ticket"]]["order_total_cents"]}


async def pay_refund(state: TicketState) -> dict[str, Any]:
    """Runs only after the review node let the refund through, with the reviewed amount."""
    PAYMENTS[state["ticket"]] = state["refund_cents"]
    run = current_run()
    assert run is not None
    await run.step("pay refund", compensation="reverse_refund", args={"ticket": state["ticket"]})
    return {}


def draft_email(state: TicketState) -> dict[str, Any]:
    """What a model would answer here: a tool call to email the customer."""
    amount = format_micro(state["refund_cents"] * 10_000)
    call = {
        "name": "send_customer_email",
        "args": {"ticket": state["ticket"], "body": f"We refunded ${amount} for your damaged item."},
        "id": f"call-{state['ticket']}",
    }
    return {"messages": [AIMessage(content="", tool_calls=[call])]}


@tool
@approval_tool("Review customer email", summary="Send this email for {ticket}: {body}")
def send_customer_email(ticket: str, body: str) -> str:
    """Email the customer about their ticket."""
    OUTBOX.append({"ticket": ticket, "body": body})
    return f"sent to the customer of {ticket}"


def escalate(state: TicketState) -> dict[str, Any]:
    return {}


def build_graph() -> Any:
    builder = StateGraph(TicketState)
    builder.add_node("triage", triage)
    builder.add_node(
        "review_refund",
        approval_node(
            "Review refund",
            keys=["refund_cents"],
            summary=lambda s: f"Refund {s['refund_cents'] / 100:.2f} USD on {s['ticket']}?",
            context=lambda s: {"ticket": s["ticket"], **TICKETS[s["ticket"]]},
            then="pay_refund",
            on_reject="escalate",
            rejection_key="escalation",
        ),
    )
    builder.add_node("pay_refund", pay_refund)
    builder.add_node("draft_email", draft_email)
    builder.add_node("tools", ToolNode([send_customer_email]))
    builder.add_node("escalate", escalate)
    builder.add_edge(START, "triage")
    builder.add_edge("triage", "review_refund")
    builder.add_edge("pay_refund", "draft_email")
    builder.add_edge("draft_email", "tools")
    builder.add_edge("tools", END)
    builder.add_edge("escalate", END)
    return builder.compile(checkpointer=InMemorySaver())


def config_for(ticket: str) -> WorkflowConfig:
    return WorkflowConfig(
        name=f"Refund agent: {ticket}",
        description=TICKETS[ticket]["note"],
        checkpoints=[
            CheckpointConfig(name="Review refund", timeout_seconds=600),
            CheckpointConfig(name="Review customer email", timeout_seconds=600),
        ],
        escrow_amount="4.00",
        poster_id="support_lead",
        executor_id="refund_agent",
        supervisor_id=REVIEWER,
    )


async def handle(orchestrator: WorkflowOrchestrator, graph: Any, config: WorkflowConfig, ticket: str) -> None:
    async with supervised(config, orchestrator) as run:
        final = await run_graph(graph, {"ticket": ticket}, run)
        run.result.update({"refund_cents": PAYMENTS.get(ticket, 0), "escalation": final.get("escalation")})
    if final.get("escalation"):
        print(f"{ticket}: escalated to a human queue ({final['escalation']}); refunded 0.00")
    else:
        print(f"{ticket}: refunded {PAYMENTS[ticket] / 100:.2f} USD; emails sent: {len(OUTBOX)}")


async def scripted_reviewer(orchestrator: WorkflowOrchestrator, agent: asyncio.Task[None]) -> None:
    """Decides as the docstring says, from what it is shown (the SupervisorAgent's display)."""
    supervisor = SupervisorAgent(supervisor_id=REVIEWER)
    while not agent.done():
        for request in orchestrator.pending_approvals():
            shown = supervisor.format_for_display(request)
            if request.checkpoint_name == "Review refund" and "returned" in request.context.get("note", ""):
                response = supervisor.submit_decision(
                    request.request_id, ApprovalDecision.REJECTED, "already refunded when it was returned"
                )
            elif request.checkpoint_name == "Review refund":
                item = request.context["damaged_item_cents"]
                response = supervisor.submit_decision(
                    request.request_id,
                    ApprovalDecision.MODIFIED,
                    "refund the damaged item, not the order",
                    modifications={"refund_cents": item},
                )
            else:
                response = supervisor.submit_decision(request.request_id, ApprovalDecision.APPROVED, "ok")
            verdict = response.decision.value
            print(f"Reviewer sees: {shown['summary']} (parameters {shown['parameters']}) -> {verdict}")
            orchestrator.submit_approval(request.workflow_id, response)
        await asyncio.sleep(0.02)


async def main() -> None:
    orchestrator = WorkflowOrchestrator()
    graph = build_graph()
    configs = {ticket: config_for(ticket) for ticket in TICKETS}

    async def agent() -> None:
        for ticket, config in configs.items():
            await handle(orchestrator, graph, config, ticket)

    if "--auto-review" in sys.argv:
        task = asyncio.create_task(agent())
        await asyncio.gather(task, scripted_reviewer(orchestrator, task))
    else:
        print("Waiting for decisions: saferun approvals list (or the dashboard, saferun serve)")
        await agent()
    for ticket, config in configs.items():
        wf = orchestrator.get_workflow(config.workflow_id)
        pos = orchestrator.escrow_position(config.workflow_id)
        print(
            f"{ticket} workflow {wf.workflow_id} {wf.current_state.value}: released "
            f"{format_micro(pos.released)}, refunded {format_micro(pos.refunded)}"
        )


if __name__ == "__main__":
    asyncio.run(main())
