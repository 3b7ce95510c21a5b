"""Three expensive mistakes, each run twice: by the agent alone, and under SafeRun.

1. Trading: the agent wants 1,000 ACME at $50 in a volatile market; the supervisor halves the position.
   Then the market drops 20 %.
2. Deployment: the agent's plan ships release v2 without the database migration v2 needs; the
   supervisor rejects, the staged release is rolled back, the agent re-plans with the migration, the
   supervisor approves, and production stays up.
3. Legal: the agent drafts a services agreement from the customer's paper, liability uncapped; the
   supervisor caps liability at a year of fees before it is sent. Then the customer files a claim.

Each agent acts on the demo's world (``exchange.json``, ``production.json``, ``contracts.json``) with
compensations that really undo its actions; the ROI table comes from those files and SafeRun's ledger.

python demo_impressive.py                  # runs to the end, a scripted supervisor decides
python demo_impressive.py --interactive    # you decide in the dashboard (opens on http://127.0.0.1:8000)
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
from saferun.agents.executor.agent import ExecutorAgent

SUPERVISOR = "risk_officer"
Run = SupervisedRun | NoOversight


def workflow(name: str, executor: str, escrow: str, checkpoints: list[str]) -> WorkflowConfig:
    return WorkflowConfig(
        name=name,
        checkpoints=[CheckpointConfig(name=n, timeout_seconds=3600) for n in checkpoints],
        escrow_amount=escrow,
        poster_id="acme_corp",
        executor_id=executor,
        supervisor_id=SUPERVISOR,
    )


# ============================================================================= 1. trading
EXCHANGE: dict[str, Any] = {"cash_cents": 10_000_000, "prices": {"ACME": 5000}, "positions": {}, "fills": []}
MARKET_MOVE = -0.20  # what the simulated market does after the trade


def buy(world: World, symbol: str, quantity: int, limit_cents: int) -> str:
    with world.change() as ex:
        price = ex["prices"][symbol]
        if price > limit_cents:
            raise RuntimeError(f"{symbol} trades at {price}, above the limit {limit_cents}")
        fill = f"fill-{len(ex['fills']) + 1}"
        ex["fills"].append(
            {"id": fill, "symbol": symbol, "side": "buy", "quantity": quantity, "price": price}
        )
        ex["positions"][symbol] = ex["positions"].get(symbol, 0) + quantity
        ex["cash_cents"] -= quantity * price
    return fill


@compensation("close_position")
def close_position(world: str, fill: str) -> None:
    """A fill cannot be unmade: the compensating trade sells the same quantity at the market."""
    with World(world).change() as ex:
        original = next(f for f in ex["fills"] if f["id"] == fill)
        if any(f.get("closes") == fill for f in ex["fills"]):
            return
        price = ex["prices"][original["symbol"]]
        ex["fills"].append(
            {"id": f"fill-{len(ex['fills']) + 1}", "closes": fill, "side": "sell", "price": price}
        )
        ex["positions"][original["symbol"]] -= original["quantity"]
        ex["cash_cents"] += original["quantity"] * price


def market_moves(world: World, symbol: str, move: float) -> None:
    with world.change() as ex:
        ex["prices"][symbol] = round(ex["prices"][symbol] * (1 + move))


def trading_loss(world: World) -> int:
    """Cash spent minus what the positions are worth now (positive: money lost)."""
    ex = world.read()
    value = sum(q * ex["prices"][s] for s, q in ex["positions"].items())
    return int(EXCHANGE["cash_cents"] - (ex["cash_cents"] + value))


async def trading_agent(run: Run, world: World) -> int:
    analyst = ExecutorAgent(agent_id="trading_agent")
    analysis = await analyst.execute_task("Analyze ACME momentum and size a position", {"symbol": "ACME"})
    run.outputs["analysis"] = analysis
    price = world.read()["prices"]["ACME"]
    decision = await run.checkpoint(
        "Review trading decision",
        parameters={"symbol": "ACME", "quantity": 1000, "limit_price_cents": price},
        summary=f"Buy 1,000 ACME at {usd(price)} ({usd(1000 * price)})?",
        context={"signal": "momentum breakout", "30d volatility": "68% (high)", "position limit": "$25,000"},
        risk={"level": "high", "reason": "position is twice the desk limit in a volatile name"},
        confidence=0.62,
        recommendation="review",
    )
    qty = int(decision.parameters["quantity"])
    fill = buy(world, "ACME", qty, int(decision.parameters["limit_price_cents"]))
    await run.step("buy ACME", compensation="close_position", args={"world": str(world.path), "fill": fill})
    return qty


async def trading(env: DemoEnv) -> Comparison:
    heading(env, "1. Trading - an oversized position in a volatile market")
    alone = env.world("exchange_without_saferun", EXCHANGE)
    qty_alone = await trading_agent(NoOversight(), alone)
    market_moves(alone, "ACME", MARKET_MOVE)
    loss = usd(trading_loss(alone))
    env.say(f"[red]Without SafeRun[/]: bought {qty_alone:,} ACME; after a 20% drop: {loss} lost")

    world = env.world("exchange_with_saferun", EXCHANGE)
    config = workflow("Execute ACME trade", "trading_agent", "200.00", ["Review trading decision"])
    verdicts = [
        Verdict(
            "Review trading decision",
            ApprovalDecision.MODIFIED,
            "volatile market: half the size, within the desk limit",
            {"quantity": 500},
        )
    ]

    async def agent() -> int:
        try:
            async with supervised(config, env.orchestrator) as run:
                return await trading_agent(run, world)
        except ApprovalRejected as rejected:  # with --interactive a person may reject: no trade
            env.say(f"[yellow]Rejected[/]: {rejected.rationale}; no trade")
            return 0

    qty = await env.supervise(config.workflow_id, verdicts, agent())
    market_moves(world, "ACME", MARKET_MOVE)
    escrow = Escrow.of(env.orchestrator, config.workflow_id)
    state = env.orchestrator.get_workflow(config.workflow_id).current_state.value
    env.say(
        f"[green]With SafeRun[/]: bought {qty:,} ACME; after the same drop: {usd(trading_loss(world))} lost"
    )
    env.say(f"Workflow {config.workflow_id} {state}; {escrow.line()}")
    env.report["trading"] = {
        "workflow_id": config.workflow_id,
        "state": state,
        "quantity_without": qty_alone,
        "quantity_with": qty,
        "loss_without_usd": f"{trading_loss(alone) / 100:.2f}",
        "loss_with_usd": f"{trading_loss(world) / 100:.2f}",
    }
    return Comparison(
        f"Trading ({decisions(env.orchestrator, config.workflow_id)})",
        "loss on the position",
        trading_loss(alone),
        trading_loss(world),
        escrow,
    )


# ============================================================================= 2. deployment
PRODUCTION: dict[str, Any] = {
    "live": {"version": "v1", "healthy": True},
    "schema": 41,
    "staged": None,
    "releases": {"v2": {"requires_schema": 42, "migrations": ["0042_add_billing_currency"]}},
    "deploys": [],
    "incidents": [],
}
OUTAGE_MINUTES = 120  # the world's recovery model: 15 min to detect, 105 to roll back and restore by hand
REVENUE_PER_HOUR_CENTS = 2_500_000


def stage_release(world: World, version: str, migrations: list[str]) -> None:
    with world.change() as prod:
        prod["staged"] = {"version": version, "migrations": list(migrations)}


@compensation("unstage_release")
def unstage_release(world: str) -> None:
    with World(world).change() as prod:
        prod["staged"] = None


def deploy_staged(world: World) -> dict[str, Any]:
    """Run the staged migrations, switch the live version, check health; a failed release is an outage
    until someone rolls it back by hand (the world records it with its cost)."""
    with world.change() as prod:
        staged = prod["staged"]
        previous = prod["live"]["version"]
        for migration in staged["migrations"]:
            prod["schema"] = max(prod["schema"], int(migration[:4]))
        healthy = prod["schema"] >= prod["releases"][staged["version"]]["requires_schema"]
        prod["deploys"].append({"version": staged["version"], "previous": previous, "healthy": healthy})
        prod["live"] = {"version": staged["version"], "healthy": healthy}
        prod["staged"] = None
        if not healthy:
            cost = OUTAGE_MINUTES * REVENUE_PER_HOUR_CENTS // 60
            prod["incidents"].append(
                {"version": staged["version"], "minutes": OUTAGE_MINUTES, "cost_cents": cost}
            )
            prod["live"] = {"version": previous, "healthy": True}  # restored by hand, two hours later
        return dict(prod["live"], deployed=staged["version"], healthy_after_deploy=healthy)


@compensation("roll_back_deploy")
def roll_back_deploy(world: str, previous: str) -> None:
    with World(world).change() as prod:
        prod["live"] = {"version": previous, "healthy": True}


def outage_cost(world: World) -> int:
    return sum(int(i["cost_cents"]) for i in world.read()["incidents"])


async def deploy_agent(run: Run, world: World) -> dict[str, Any]:
    builder = ExecutorAgent(agent_id="deploy_agent")
    await builder.execute_task("Build release v2 and run the test suite", {"version": "v2"})
    migrations: list[str] = []  # the agent's miss: it never checked what schema v2 expects
    for attempt in (1, 2, 3):
        stage_release(world, "v2", migrations)
        await run.step("stage v2", compensation="unstage_release", args={"world": str(world.path)})
        prod = world.read()
        try:
            await run.checkpoint(
                "Review deployment plan",
                parameters={"version": "v2", "migrations": migrations, "strategy": "rolling"},
                summary=("Updated plan: " if attempt > 1 else "")
                + f"deploy v2 to production (schema {prod['schema']}), migrations: {migrations or 'none'}",
                context={
                    "tests": "412 passed",
                    "production schema": prod["schema"],
                    "v2 requires schema": prod["releases"]["v2"]["requires_schema"],
                },
            )
            break
        except ApprovalRejected as rejected:
            if attempt == 3:
                raise  # three plans rejected: give up
            run.trace.append(f"plan rejected: {rejected.rationale}; staged release rolled back")
            migrations = list(world.read()["releases"]["v2"]["migrations"])  # re-plan with what v2 needs
    previous = world.read()["live"]["version"]
    outcome = deploy_staged(world)
    await run.step(
        "deploy v2", compensation="roll_back_deploy", args={"world": str(world.path), "previous": previous}
    )
    await run.checkpoint(
        "Verify production health",
        parameters={"keep_release": True},
        summary=f"v2 deployed; production is {'up' if outcome['healthy_after_deploy'] else 'DOWN'}. Keep it?",
        context=outcome,
    )
    return outcome


async def deployment(env: DemoEnv) -> Comparison:
    heading(env, "2. Deployment - a release that needs a migration nobody planned")
    alone = env.world("production_without_saferun", PRODUCTION)
    await deploy_agent(NoOversight(), alone)
    incidents = alone.read()["incidents"]
    env.say(
        f"[red]Without SafeRun[/]: v2 deployed without its migration; production down "
        f"{incidents[0]['minutes']} minutes, {usd(outage_cost(alone))} in lost revenue"
    )
    world = env.world("production_with_saferun", PRODUCTION)
    config = workflow(
        "Deploy release v2", "deploy_agent", "500.00", ["Review deployment plan", "Verify production health"]
    )
    verdicts = [
        Verdict(
            "Review deployment plan",
            ApprovalDecision.REJECTED,
            "v2 needs migration 0042 (schema 42); this plan runs none. Add it first.",
        ),
        Verdict(
            "Review deployment plan", ApprovalDecision.APPROVED, "migration included, rolling deploy is fine"
        ),
        Verdict("Verify production health", ApprovalDecision.APPROVED, "healthy, keep it"),
    ]

    async def agent() -> dict[str, Any]:
        try:
            async with supervised(config, env.orchestrator) as run:
                return await deploy_agent(run, world)
        except ApprovalRejected as rejected:  # a person may stop the release altogether
            env.say(f"[yellow]Rejected[/]: {rejected.rationale}; release stopped")
            live = world.read()["live"]
            return dict(live, deployed="nothing")

    outcome = await env.supervise(config.workflow_id, verdicts, agent())
    prod = world.read()
    escrow = Escrow.of(env.orchestrator, config.workflow_id)
    state = env.orchestrator.get_workflow(config.workflow_id).current_state.value
    undone = [
        s["compensation"]
        for s in env.orchestrator.saga_steps(config.workflow_id)
        if s["status"] == "compensated"
    ]
    env.say(
        f"[green]With SafeRun[/]: compensations run: {', '.join(undone) or 'none'}; {outcome['deployed']} "
        f"deployed, schema {prod['schema']}; live {outcome['version']}, up={outcome['healthy']}; "
        f"incidents: {len(prod['incidents'])}"
    )
    env.say(f"Workflow {config.workflow_id} {state}; {escrow.line()}")
    env.report["deployment"] = {
        "workflow_id": config.workflow_id,
        "state": state,
        "compensated": undone,
        "live": prod["live"],
        "schema": prod["schema"],
        "incidents_without": len(alone.read()["incidents"]),
        "incidents_with": len(prod["incidents"]),
        "outage_cost_without_usd": f"{outage_cost(alone) / 100:.2f}",
        "outage_cost_with_usd": f"{outage_cost(world) / 100:.2f}",
    }
    return Comparison(
        f"Deployment ({decisions(env.orchestrator, config.workflow_id)})",
        "outage cost",
        outage_cost(alone),
        outage_cost(world),
        escrow,
    )


# ============================================================================= 3. legal
CONTRACTS: dict[str, Any] = {"contracts": [], "claims": []}
CLAIM_CENTS = 25_000_000  # what the customer claims after an outage a year later


def send_contract(world: World, terms: dict[str, Any]) -> str:
    with world.change() as book:
        contract = f"contract-{len(book['contracts']) + 1}"
        book["contracts"].append({"id": contract, "status": "sent", **terms})
    return contract


@compensation("withdraw_contract")
def withdraw_contract(world: str, contract: str) -> None:
    with World(world).change() as book:
        entry = next(c for c in book["contracts"] if c["id"] == contract)
        if entry["status"] == "sent":
            entry["status"] = "withdrawn"


def countersign(world: World, contract: str) -> None:
    with world.change() as book:
        next(c for c in book["contracts"] if c["id"] == contract)["status"] = "signed"


def customer_claims(world: World, amount_cents: int) -> None:
    """The claim is paid up to the signed contract's liability cap (all of it when uncapped)."""
    with world.change() as book:
        signed = next((c for c in book["contracts"] if c["status"] == "signed"), None)
        if signed is None:  # no contract was signed: nothing to claim under
            return
        cap = signed["liability_cap_cents"]
        paid = amount_cents if cap is None else min(amount_cents, cap)
        book["claims"].append({"contract": signed["id"], "claimed_cents": amount_cents, "paid_cents": paid})


def claims_paid(world: World) -> int:
    return sum(int(c["paid_cents"]) for c in world.read()["claims"])


async def legal_agent(run: Run, world: World) -> dict[str, Any]:
    drafter = ExecutorAgent(agent_id="legal_agent")
    await drafter.execute_task(
        "Draft the Globex services agreement on the customer's paper", {"customer": "Globex"}
    )
    terms = {
        "customer": "Globex",
        "annual_fee_cents": 3_000_000,
        "liability_cap_cents": None,
        "auto_renew_years": 3,
    }
    decision = await run.checkpoint(
        "Review contract before sending",
        parameters=terms,
        summary="Send Globex the services agreement: $30,000/year, liability UNCAPPED, 3-year auto-renewal?",
        context={
            "template": "customer's paper",
            "policy": "cap liability at 12 months of fees; renew yearly",
        },
        risk={"level": "high", "reason": "uncapped liability"},
        recommendation="review",
    )
    contract = send_contract(world, decision.parameters)
    await run.step(
        "send contract",
        compensation="withdraw_contract",
        args={"world": str(world.path), "contract": contract},
    )
    countersign(world, contract)
    return dict(decision.parameters)


async def legal(env: DemoEnv) -> Comparison:
    heading(env, "3. Legal - uncapped liability in a customer contract")
    alone = env.world("contracts_without_saferun", CONTRACTS)
    await legal_agent(NoOversight(), alone)
    customer_claims(alone, CLAIM_CENTS)
    paid = usd(claims_paid(alone))
    env.say(
        f"[red]Without SafeRun[/]: signed with liability uncapped; a {usd(CLAIM_CENTS)} claim costs {paid}"
    )
    world = env.world("contracts_with_saferun", CONTRACTS)
    config = workflow("Contract for Globex", "legal_agent", "300.00", ["Review contract before sending"])
    verdicts = [
        Verdict(
            "Review contract before sending",
            ApprovalDecision.MODIFIED,
            "policy: cap liability at 12 months of fees, renew yearly",
            {"liability_cap_cents": 3_000_000, "auto_renew_years": 1},
        )
    ]

    async def agent() -> dict[str, Any]:
        try:
            async with supervised(config, env.orchestrator) as run:
                return await legal_agent(run, world)
        except ApprovalRejected as rejected:  # a person may refuse to send it at all
            env.say(f"[yellow]Rejected[/]: {rejected.rationale}; nothing sent")
            return {"liability_cap_cents": None, "sent": False}

    terms = await env.supervise(config.workflow_id, verdicts, agent())
    customer_claims(world, CLAIM_CENTS)
    escrow = Escrow.of(env.orchestrator, config.workflow_id)
    state = env.orchestrator.get_workflow(config.workflow_id).current_state.value
    cap = terms["liability_cap_cents"]
    signed = "not sent, so nothing signed" if terms.get("sent") is False else "signed with liability "
    if terms.get("sent") is not False:
        signed += f"capped at {usd(cap)}" if cap is not None else "uncapped"
    env.say(f"[green]With SafeRun[/]: {signed}; the same claim costs {usd(claims_paid(world))}")
    env.say(f"Workflow {config.workflow_id} {state}; {escrow.line()}")
    env.report["legal"] = {
        "workflow_id": config.workflow_id,
        "state": state,
        "terms": terms,
        "claim_paid_without_usd": f"{claims_paid(alone) / 100:.2f}",
        "claim_paid_with_usd": f"{claims_paid(world) / 100:.2f}",
    }
    return Comparison(
        f"Legal ({decisions(env.orchestrator, config.workflow_id)})",
        "claim paid",
        claims_paid(alone),
        claims_paid(world),
        escrow,
    )


async def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    env = setup(args, SUPERVISOR)
    try:
        rows = [await trading(env), await deployment(env), await legal(env)]
        heading(env, "What SafeRun saved, measured")
        env.report["roi"] = roi_table(
            env, rows, "ROI: without vs with SafeRun (from the worlds and the ledger)"
        )
        write_report(env, args.report)
    finally:
        env.close()


if __name__ == "__main__":
    asyncio.run(main())
