"""The seed's classic demo: a catering agent, without SafeRun and with it.

1. Disaster: without SafeRun the agent reads "10 people" as 100 pizzas and the order goes out at once.
2. Catch: the same agent under SafeRun stops at "Review food order"; the supervisor modifies the count
   to 10 and the agent orders what the reviewer decided.
3. Rollback: the agent has its plan approved, books a room and orders pizza, then asks to confirm the
   delivery; the meeting has moved, the supervisor rejects, and the compensations cancel the order and
   release the room (both refunded by the shop). The approved milestone stays paid, the rest of the
   escrow goes back to the poster.

Everything the agent does happens in the demo's world (``shop.json``: orders, rooms, money charged and
refunded); the ROI table is computed from that file and SafeRun's ledger.

python demo_scenario.py                  # runs to the end, a scripted supervisor decides
python demo_scenario.py --interactive    # you decide in the dashboard (opens on http://127.0.0.1:8000)
"""

from __future__ import annotations

import asyncio
from typing import Any

from demo_kit import (
    Comparison,
    DemoEnv,
    Escrow,
    NoOversight,
    Verdict,
    World,
    decisions,
    heading,
    parse_args,
    roi_table,
    setup,
    usd,
    write_report,
)
from saferun import (
    ApprovalDecision,
    ApprovalRejected,
    CheckpointConfig,
    SupervisedRun,
    WorkflowConfig,
    compensation,
    supervised,
)

SUPERVISOR = "human_789"
PEOPLE = 10
PIZZA_CENTS = 1200
ROOM_CENTS = 4000
ESCROW = "15.00"  # the agent's fee for the job, paid per approved milestone (90 % agent, 10 % supervisor)
SHOP: dict[str, Any] = {"orders": [], "rooms": [], "charged_cents": 0, "refunded_cents": 0}

Run = SupervisedRun | NoOversight


# ------------------------------------------------------------------------------------- the shop (world)
def place_order(world: World, pizzas: int) -> str:
    with world.change() as shop:
        order_id = f"order-{len(shop['orders']) + 1}"
        cents = pizzas * PIZZA_CENTS
        shop["orders"].append({"id": order_id, "pizzas": pizzas, "cents": cents, "status": "placed"})
        shop["charged_cents"] += cents
    return order_id


def deliver(world: World, order_id: str) -> None:
    with world.change() as shop:
        next(o for o in shop["orders"] if o["id"] == order_id)["status"] = "delivered"


def book_room(world: World, room: str) -> str:
    with world.change() as shop:
        booking = f"booking-{len(shop['rooms']) + 1}"
        shop["rooms"].append({"id": booking, "room": room, "cents": ROOM_CENTS, "status": "booked"})
        shop["charged_cents"] += ROOM_CENTS
    return booking


@compensation("cancel_pizza_order")
def cancel_pizza_order(world: str, order_id: str) -> None:
    """Undo an order that was not delivered yet; a second call changes nothing."""
    with World(world).change() as shop:
        order = next(o for o in shop["orders"] if o["id"] == order_id)
        if order["status"] == "placed":
            order["status"] = "cancelled"
            shop["refunded_cents"] += order["cents"]


@compensation("release_room")
def release_room(world: str, booking: str) -> None:
    with World(world).change() as shop:
        room = next(r for r in shop["rooms"] if r["id"] == booking)
        if room["status"] == "booked":
            room["status"] = "released"
            shop["refunded_cents"] += room["cents"]


def spent(world: World) -> int:
    shop = world.read()
    return int(shop["charged_cents"] - shop["refunded_cents"])


# ------------------------------------------------------------------------------------- the agents
async def catering_agent(run: Run, world: World, people: int) -> int:
    """Orders food for a meeting; returns the pizzas ordered. The bug: ten pizzas per person."""
    pizzas = people * 10
    decision = await run.checkpoint(
        "Review food order",
        parameters={"pizza_count": pizzas},
        summary=f"Order {pizzas} pizzas at {usd(PIZZA_CENTS)} for a meeting of {people}?",
        context={"people": people, "unit_price": usd(PIZZA_CENTS), "total": usd(pizzas * PIZZA_CENTS)},
    )
    count = int(decision.parameters["pizza_count"])
    order_id = place_order(world, count)
    await run.step(
        "place order",
        compensation="cancel_pizza_order",
        args={"world": str(world.path), "order_id": order_id},
    )
    deliver(world, order_id)
    run.result["pizzas_ordered"] = count
    return count


async def event_agent(run: Run, world: World, people: int) -> None:
    """Plans, books and orders, then confirms before delivery: the last moment anything can be undone."""
    plan = await run.checkpoint(
        "Approve plan",
        parameters={"room": "Room 4B", "pizza_count": people},
        summary=f"Book Room 4B and order {people} pizzas for today's meeting of {people}?",
    )
    booking = book_room(world, plan.parameters["room"])
    await run.step(
        "book room", compensation="release_room", args={"world": str(world.path), "booking": booking}
    )
    order_id = place_order(world, int(plan.parameters["pizza_count"]))
    await run.step(
        "place order",
        compensation="cancel_pizza_order",
        args={"world": str(world.path), "order_id": order_id},
    )
    await run.checkpoint(
        "Confirm before delivery",
        parameters={"deliver_at": "12:00"},
        summary=f"{plan.parameters['room']} booked and {plan.parameters['pizza_count']} pizzas ordered "
        f"({usd(spent(world))} charged). Deliver today at 12:00?",
        context={"booking": booking, "order": order_id, "charged": usd(spent(world))},
    )
    deliver(world, order_id)


def food_workflow(name: str, checkpoints: list[str]) -> WorkflowConfig:
    return WorkflowConfig(
        name=name,
        description=f"Food for a meeting of {PEOPLE}",
        checkpoints=[CheckpointConfig(name=n, timeout_seconds=3600) for n in checkpoints],
        escrow_amount=ESCROW,
        poster_id="office_manager",
        executor_id="catering_agent",
        supervisor_id=SUPERVISOR,
    )


# ------------------------------------------------------------------------------------- the scenarios
async def disaster(env: DemoEnv) -> World:
    heading(env, "Scenario 1 - the pizza disaster, without SafeRun")
    world = env.world("shop_without_saferun", SHOP)
    count = await catering_agent(NoOversight(), world, PEOPLE)
    env.say(
        f"[red]Without SafeRun[/]: ordered {count} pizzas for {PEOPLE} people, {usd(spent(world))} charged "
        f"(needed: {PEOPLE} pizzas, {usd(PEOPLE * PIZZA_CENTS)})"
    )
    env.report["disaster"] = {"pizzas_ordered": count, "spent_usd": f"{spent(world) / 100:.2f}"}
    return world


async def catch(env: DemoEnv) -> tuple[World, Escrow]:
    heading(env, "Scenario 2 - SafeRun catches it, the supervisor modifies the order")
    world = env.world("shop_with_saferun", SHOP)
    config = food_workflow("Order food for the team meeting", ["Review food order"])
    verdicts = [
        Verdict(
            "Review food order",
            ApprovalDecision.MODIFIED,
            "10 people need 10 pizzas, not 100",
            {"pizza_count": 10},
        )
    ]

    async def agent() -> int:
        try:
            async with supervised(config, env.orchestrator) as run:
                return await catering_agent(run, world, PEOPLE)
        except ApprovalRejected as rejected:  # a person may reject: nothing is ordered
            env.say(f"[yellow]Rejected[/]: {rejected.rationale}; nothing ordered")
            return 0

    count = await env.supervise(config.workflow_id, verdicts, agent())
    escrow = Escrow.of(env.orchestrator, config.workflow_id)
    wf = env.orchestrator.get_workflow(config.workflow_id)
    env.say(f"[green]With SafeRun[/]: ordered {count} pizzas, {usd(spent(world))} charged")
    env.say(f"Workflow {wf.workflow_id} {wf.current_state.value}; {escrow.line()}")
    env.report["catch"] = {
        "workflow_id": wf.workflow_id,
        "state": wf.current_state.value,
        "pizzas_ordered": count,
        "spent_usd": f"{spent(world) / 100:.2f}",
        "escrow": escrow.as_dict(),
    }
    return world, escrow


async def rollback(env: DemoEnv) -> tuple[int, int, Escrow]:
    heading(env, "Scenario 3 - the meeting moved: rejection rolls everything back")
    unsupervised = env.world("events_without_saferun", SHOP)
    await event_agent(NoOversight(), unsupervised, PEOPLE)
    env.say(
        f"(The same agent without SafeRun, for comparison: room booked and {PEOPLE} pizzas delivered to a "
        f"meeting that moved, {usd(spent(unsupervised))} spent)"
    )
    world = env.world("events_with_saferun", SHOP)
    config = food_workflow("Set up the team meeting", ["Approve plan", "Confirm before delivery"])
    verdicts = [
        Verdict("Approve plan", ApprovalDecision.APPROVED, "room and food look right"),
        Verdict("Confirm before delivery", ApprovalDecision.REJECTED, "the meeting moved to next week"),
    ]

    async def agent() -> str | None:
        try:
            async with supervised(config, env.orchestrator) as run:
                await event_agent(run, world, PEOPLE)
        except ApprovalRejected as rejected:
            return rejected.rationale
        return None

    rejected = await env.supervise(config.workflow_id, verdicts, agent())
    wf = env.orchestrator.get_workflow(config.workflow_id)
    steps = env.orchestrator.saga_steps(config.workflow_id)
    undone = [
        s["compensation"]
        for s in sorted(steps, key=lambda s: s["finished_at"] or s["created_at"])
        if s["status"] == "compensated"
    ]
    shop = world.read()
    escrow = Escrow.of(env.orchestrator, config.workflow_id)
    if rejected:
        env.say(f"[yellow]Rejected[/]: {rejected}; compensations run: {', '.join(undone) or 'none'}")
    orders, rooms = [o["status"] for o in shop["orders"]], [r["status"] for r in shop["rooms"]]
    env.say(
        f"Shop now: orders {orders}, rooms {rooms}, charged {usd(shop['charged_cents'])}, "
        f"refunded {usd(shop['refunded_cents'])}, net {usd(spent(world))}"
    )
    env.say(f"Workflow {wf.workflow_id} {wf.current_state.value}; {escrow.line()}")
    env.report["rollback"] = {
        "workflow_id": wf.workflow_id,
        "state": wf.current_state.value,
        "rejected": rejected,
        "compensated": undone,
        "orders": orders,
        "rooms": rooms,
        "spent_usd": f"{spent(world) / 100:.2f}",
        "without_saferun_spent_usd": f"{spent(unsupervised) / 100:.2f}",
        "escrow": escrow.as_dict(),
    }
    return spent(unsupervised), spent(world), escrow


async def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    env = setup(args, SUPERVISOR)
    try:
        without = await disaster(env)
        with_saferun, catch_escrow = await catch(env)
        rollback_without, rollback_with, rollback_escrow = await rollback(env)
        heading(env, "What SafeRun saved, measured")
        rows = [
            Comparison(
                f"Pizza order ({decisions(env.orchestrator, env.report['catch']['workflow_id'])})",
                "spent on food",
                spent(without),
                spent(with_saferun),
                catch_escrow,
            ),
            Comparison(
                f"Moved meeting ({decisions(env.orchestrator, env.report['rollback']['workflow_id'])})",
                "spent on room + food",
                rollback_without,
                rollback_with,
                rollback_escrow,
            ),
        ]
        env.report["roi"] = roi_table(
            env, rows, "ROI: without vs with SafeRun (from the shop and the ledger)"
        )
        write_report(env, args.report)
    finally:
        env.close()


if __name__ == "__main__":
    asyncio.run(main())
