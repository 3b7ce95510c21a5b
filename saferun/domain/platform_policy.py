"""Who may do what through the x402 platform API (``/x402``), as pure functions of the platform's own records.

``domain.policy.may_use_platform`` says who may call the API at all (the ``platform`` role, or ``admin``
for the calls below). This module says what such a caller may do to one workflow, so that money moves
only the way the engine moves it (issue 9, finding 2; docs/security.md "The x402 platform API"):

- **Scope.** A platform identity acts only on workflows *on its platform*: a workflow this server's
  engine runs names its platform in ``WorkflowConfig.platform_id``; a workflow known to this server only
  through platform jobs (another SafeRun using this one as its platform, or the original ``X402Client``)
  belongs to the platform identity that created its first job. Anything else reads as unknown (404).
- **Engine workflows are the engine's.** A workflow this server's engine runs locks, pays, refunds and
  scores itself, in the transaction that records the decision; through ``/x402`` its platform may read
  it but change nothing (jobs, escrow, supervisor, reputation): rule ``engine_workflow``.
- **Platform jobs follow their own terms.** For a workflow known through jobs, the main job is its terms
  (poster, executor, escrow, checkpoints with weights, executor share) and its approval sub-jobs are its
  decisions (a sub-job ``completed`` with reason ``approved``/``modified``). Then:

  - ``lock`` only the job's escrow amount, from the posting party the job names, for the job's executor,
    and only if that poster allowed this platform to draw on its funding (``check_poster_grant``);
  - a payout (release or split) only to what approved checkpoints earned and was not paid yet: each
    approved checkpoint's milestone (``allocate`` by weight) split executor/supervisor (``split_release``)
    between the job's executor and the sub-job's supervisor; the body's recipients must be those parties
    (never an arbitrary one, never the caller), and never more than is owed to each;
  - money goes back to the payer only once the main job has ended (``completed``/``failed``/
    ``cancelled``: settle, fail or cancel), and never what is still owed for approved checkpoints;
  - approval quality only as these records compute it (``domain.reputation.approval_quality``), after the
    job ended; a caller's different score is refused.

- **Admin decides like a supervisor and nothing more** (``domain.policy``): on ``/x402`` an admin reads and
  manages supervisor profiles, but moves no money, writes no job and sets no reputation.

In remote-platform mode the deciding SafeRun is the platform identity itself, so these records are its
word: the rules bound what a platform key can do with it (its own workflows, their parties, their terms,
each milestone once), they do not make a compromised platform key harmless for its own workflows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from saferun.domain import ledger as rules
from saferun.domain.money import format_micro
from saferun.domain.policy import Caller, Refusal, Role
from saferun.domain.reputation import approval_quality
from saferun.errors import SafeRunError

APPROVED_OUTCOMES = frozenset({"approved", "modified"})
DECIDED_OUTCOMES = APPROVED_OUTCOMES | {"rejected"}
ENDED_STATUSES = frozenset({"completed", "failed", "cancelled"})

# what an admin may call on /x402: reading, and managing supervisor profiles (identity management)
ADMIN_CALLS = frozenset(
    {
        "get_job",
        "get_escrow",
        "get_artifact",
        "verify_identity",
        "get_user_profile",
        "find_supervisors",
        "register_supervisor",
    }
)


def _refuse(rule: str, message: str) -> Refusal:
    return Refusal(rule=rule, message=f"refused by rule {rule}: {message}")


def may_call(caller: Caller, operation: str) -> Refusal | None:
    """May ``caller`` make this platform call at all (before looking at any workflow)?

    Open mode (loopback development): yes. A platform identity: yes (the workflow rules below still
    apply). An admin: only the calls in ``ADMIN_CALLS``. Anyone else: refused (``platform_role``).
    """
    if not caller.authenticated or caller.has(Role.PLATFORM):
        return None
    if caller.is_admin:
        if operation in ADMIN_CALLS:
            return None
        return _refuse(
            "admin_moves_no_money",
            f"an admin decides like a supervisor and nothing more: {operation} on the platform API "
            "needs the workflow's platform identity",
        )
    return _refuse("platform_role", f"{caller.identity_id!r} has neither the platform nor the admin role")


def on_platform(caller: Caller, platform_id: str | None) -> bool:
    """Whether a workflow (or job) on ``platform_id`` is in ``caller``'s scope on the platform API.

    Open mode and admins: every one (admins only read: ``may_call``). A platform identity: its own.
    """
    if not caller.authenticated or caller.is_admin:
        return True
    return caller.has(Role.PLATFORM) and platform_id is not None and platform_id == caller.identity_id


@dataclass(frozen=True)
class Approval:
    """One approval sub-job: its checkpoint, supervisor and outcome (None while undecided)."""

    checkpoint_id: str
    supervisor_id: str | None
    outcome: str | None = None
    automatic: bool = False


def outcome_of(status: str, reason: str) -> tuple[str | None, bool]:
    """``(outcome, automatic)`` of an approval sub-job from its status and latest reason.

    A decided sub-job is ``completed`` with the decision as its reason's first word (``"approved"``,
    ``"modified"``, ``"rejected"``, as the engine records it); ``"(automatic)"`` marks a timeout's.
    """
    if status != "completed":
        return None, False
    words = reason.strip().lower().split()
    if not words or words[0] not in DECIDED_OUTCOMES:
        return None, False
    return words[0], "automatic" in words[1:] or "(automatic)" in words[1:]


@dataclass(frozen=True)
class Terms:
    """What this server's records say about one workflow, for the platform rules."""

    workflow_id: str
    platform_id: str | None
    engine: bool  # run by this server's engine (a workflows row)
    poster_id: str | None = None
    executor_id: str | None = None
    escrow_micro: int | None = None
    milestones: tuple[tuple[str, str], ...] = ()  # (checkpoint_id, weight) in order
    executor_share: Decimal = rules.DEFAULT_EXECUTOR_SHARE
    approvals: tuple[Approval, ...] = field(default_factory=tuple)
    ended: bool = False


def terms_from_job(
    workflow_id: str,
    platform_id: str | None,
    data: Mapping[str, object],
    approvals: Iterable[Approval],
    ended: bool,
) -> Terms:
    """The terms a platform's main job declares (``job_data`` of ``create_job``).

    The engine sends its ``config`` (``WorkflowConfig``: ``poster_id``, ``checkpoints`` with
    ``milestone_weight``, ``executor_share``); the original client may put ``poster_id`` and
    ``checkpoints`` (ids, or objects with ``checkpoint_id`` and ``milestone_weight``) in the job data
    itself. A malformed term is left out, so what depends on it is refused, never guessed.
    """
    job_data = data.get("job_data")
    declared: Mapping[str, object] = job_data if isinstance(job_data, Mapping) else {}
    config = declared.get("config")
    source: Mapping[str, object] = config if isinstance(config, Mapping) else declared
    poster = source.get("poster_id")
    milestones: list[tuple[str, str]] = []
    checkpoints = source.get("checkpoints")
    if isinstance(checkpoints, Sequence) and not isinstance(checkpoints, str):
        for cp in checkpoints:
            if isinstance(cp, str) and cp:
                milestones.append((cp, "1"))
            elif isinstance(cp, Mapping) and isinstance(cp.get("checkpoint_id"), str):
                milestones.append((str(cp["checkpoint_id"]), str(cp.get("milestone_weight", 1))))
    share = rules.DEFAULT_EXECUTOR_SHARE
    try:
        if source.get("executor_share") is not None:
            share = Decimal(str(source.get("executor_share")))
    except InvalidOperation:
        milestones = []  # no trustworthy split: nothing can be paid out
    escrow = data.get("escrow_micro")
    executor = data.get("executor_id")
    return Terms(
        workflow_id=workflow_id,
        platform_id=platform_id,
        engine=False,
        poster_id=poster if isinstance(poster, str) and poster else None,
        executor_id=executor if isinstance(executor, str) and executor else None,
        escrow_micro=escrow if isinstance(escrow, int) and not isinstance(escrow, bool) else None,
        milestones=tuple(milestones),
        executor_share=share,
        approvals=tuple(approvals),
        ended=ended,
    )


def engine_refusal(terms: Terms, action: str) -> Refusal | None:
    """Rule ``engine_workflow``: an engine workflow changes only through the engine."""
    if not terms.engine:
        return None
    return _refuse(
        "engine_workflow",
        f"workflow {terms.workflow_id!r} is run by this server's engine, which {action} itself when its "
        "parties act (/api); the platform API may read it but not change it",
    )


def check_lock(terms: Terms, poster_id: str, executor_id: str, amount: int) -> Refusal | None:
    """``lock``: only the job's escrow, from the posting party the job names, for its executor."""
    refused = engine_refusal(terms, "locks its escrow")
    if refused is not None:
        return refused
    wf = terms.workflow_id
    if terms.poster_id is None:
        return _refuse("lock_terms", f"poster_id: the job of workflow {wf!r} names no poster to draw from")
    if poster_id != terms.poster_id:
        return _refuse(
            "lock_terms",
            f"poster_id: workflow {wf!r} is posted by {terms.poster_id!r}; an escrow is locked only from "
            "its posting party's own funding account",
        )
    if executor_id != terms.executor_id:
        return _refuse("lock_terms", f"executor_id: workflow {wf!r} is executed by {terms.executor_id!r}")
    if terms.escrow_micro is None or amount != terms.escrow_micro:
        expected = "none" if terms.escrow_micro is None else format_micro(terms.escrow_micro)
        return _refuse(
            "lock_terms", f"amount: workflow {wf!r}'s job escrows {expected}, not {format_micro(amount)}"
        )
    return None


def check_poster_grant(caller: Caller, poster_id: str, granted: Iterable[str]) -> Refusal | None:
    """A platform identity draws on a poster's funding account only if that poster allowed it
    (``POST /api/platform-grants``): naming a poster in its own job is not the poster's consent.

    Open mode (nobody authenticated) has no platform identity to check; the rule is for keys."""
    if not caller.authenticated or not caller.has(Role.PLATFORM):
        return None
    if caller.identity_id in set(granted):
        return None
    return _refuse(
        "poster_grant",
        f"poster_id: {poster_id!r} has not allowed platform {caller.identity_id!r} to lock escrow from its "
        "funding account (the poster grants it with POST /api/platform-grants)",
    )


def may_grant(caller: Caller, poster_id: str) -> Refusal | None:
    """Who may allow (or stop) a platform drawing on ``poster_id``'s funding: the poster, or an admin
    for them (identity management). Open mode: allowed (loopback development)."""
    if not caller.authenticated or caller.is_admin:
        return None
    if caller.identity_id != poster_id or not caller.has(Role.POSTER):
        return _refuse(
            "poster_is_caller",
            f"only poster {poster_id!r} (or an admin) may choose which platforms draw on its funding",
        )
    return None


def earned(terms: Terms) -> dict[str, int]:
    """What the approved checkpoints earned, per party (micro-units): each checkpoint's milestone once,
    split executor/supervisor like the engine's ``ledger.release``. Empty without complete terms."""
    if terms.engine or not terms.milestones or not terms.escrow_micro or terms.executor_id is None:
        return {}
    try:
        amounts = rules.allocate(terms.escrow_micro, [Decimal(w) for _, w in terms.milestones])
    except (InvalidOperation, SafeRunError, ArithmeticError):
        return {}
    by_checkpoint = {cp: amount for (cp, _), amount in zip(terms.milestones, amounts, strict=True)}
    owed: dict[str, int] = {}
    paid_checkpoints: set[str] = set()
    for approval in terms.approvals:
        cp = approval.checkpoint_id
        if approval.outcome not in APPROVED_OUTCOMES or cp in paid_checkpoints or cp not in by_checkpoint:
            continue
        paid_checkpoints.add(cp)  # a checkpoint earns its milestone once, however many sub-jobs say so
        amount = by_checkpoint[cp]
        if amount == 0:
            continue
        supervisor = approval.supervisor_id
        try:
            executor_part, supervisor_part = rules.split_release(
                amount, terms.executor_share, supervisor is not None
            )
        except (SafeRunError, ArithmeticError):
            return {}
        owed[terms.executor_id] = owed.get(terms.executor_id, 0) + executor_part
        if supervisor is not None and supervisor_part:
            owed[supervisor] = owed.get(supervisor, 0) + supervisor_part
    return owed


def check_payout(
    terms: Terms,
    payouts: Sequence[tuple[str, int]],
    paid: Mapping[str, int],
    held: int,
    payer: str | None,
) -> Refusal | None:
    """A release or split of ``payouts`` (recipient, micro-units) out of this workflow's escrow.

    ``paid``: what each party already received from it; ``held``: what it holds now; ``payer``: the party
    whose funding account locked it. Each recipient must be owed the amount by approved checkpoints
    (``earned`` minus ``paid``), or be the payer once the workflow ended, taking back at most what is not
    owed to anyone.
    """
    refused = engine_refusal(terms, "pays milestones and refunds")
    if refused is not None:
        return refused
    wf = terms.workflow_id
    owed = earned(terms)
    parties = {terms.executor_id, *(a.supervisor_id for a in terms.approvals)} - {None}
    outstanding = {p: max(0, owed.get(p, 0) - paid.get(p, 0)) for p in {*owed, *parties} if p is not None}
    asked: dict[str, int] = {}
    for recipient, amount in payouts:
        asked[recipient] = asked.get(recipient, 0) + amount
    refund = 0
    for recipient, amount in asked.items():
        if recipient in outstanding:
            if amount > outstanding[recipient]:
                return _refuse(
                    "payout_earned",
                    f"recipient_id: {recipient!r} is owed {format_micro(outstanding[recipient])} by the "
                    f"approved checkpoints of workflow {wf!r}, not {format_micro(amount)}",
                )
        elif recipient == payer and payer is not None:
            refund += amount
        else:
            return _refuse(
                "payout_recipient",
                f"recipient_id: {recipient!r} is owed nothing by workflow {wf!r}: its escrow pays only its "
                "executor and supervisors for approved checkpoints, and its payer back at settlement",
            )
    if refund:
        if not terms.ended:
            return _refuse(
                "settlement_only",
                f"recipient_id: workflow {wf!r} has not ended; its escrow goes back to {payer!r} only at "
                "settlement (settle, fail or cancel)",
            )
        still_owed = sum(outstanding.values()) - sum(
            asked.get(party, 0) for party in outstanding if party != payer
        )
        if refund > held - still_owed:
            return _refuse(
                "payout_earned",
                f"amount: workflow {wf!r} still owes {format_micro(still_owed)} for approved checkpoints; "
                f"at most {format_micro(max(0, held - still_owed))} goes back to {payer!r}",
            )
    return None


def expected_quality(terms: Terms, supervisor_id: str) -> float | None:
    """The approval quality these records give ``supervisor_id`` (None: nothing to score)."""
    decided = sum(
        1
        for a in terms.approvals
        if a.supervisor_id == supervisor_id and a.outcome in DECIDED_OUTCOMES and not a.automatic
    )
    return approval_quality(len(terms.approvals), decided)


def check_quality(terms: Terms, supervisor_id: str, score: float) -> Refusal | None:
    """Approval quality only as the records compute it, and only once the workflow ended."""
    refused = engine_refusal(terms, "scores its supervisor's approvals")
    if refused is not None:
        return refused
    wf = terms.workflow_id
    if not terms.ended:
        return _refuse(
            "quality_from_outcome", f"workflow {wf!r} has not ended; its approvals are not scored yet"
        )
    expected = expected_quality(terms, supervisor_id)
    if expected is None:
        return _refuse(
            "quality_from_outcome", f"supervisor_id: {supervisor_id!r} decided no approval of workflow {wf!r}"
        )
    if round(float(score), 4) != expected:
        return _refuse(
            "quality_from_outcome",
            f"quality_score: workflow {wf!r}'s approval sub-jobs give {supervisor_id!r} {expected}, not "
            f"{score}; approval quality comes from the outcome, never from the caller",
        )
    return None
