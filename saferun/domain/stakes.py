"""What a decision moves, shown to the reviewer beside the buttons (pure: no I/O).

A reviewer deciding a checkpoint is deciding money too: approving pays this checkpoint's milestone (split
between executor and supervisor by the workflow's share), rejecting pays nothing and — when the checkpoint
cannot roll back, so the workflow fails — refunds everything still held to the poster. The numbers come
from the same rules the engine pays by (``ledger.allocate``, ``ledger.split_release``), so the panel and
the ledger cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from saferun.domain import ledger


@dataclass(frozen=True)
class Stakes:
    """Micro-units: the escrow held now, and what approve and reject would move."""

    held: int
    milestone: int
    executor_payout: int
    supervisor_payout: int
    reject_refund: int
    reject_fails: bool  # the checkpoint cannot roll back: a rejection fails the workflow

    @property
    def held_after_approve(self) -> int:
        return max(self.held - self.milestone, 0)


def stakes(
    *,
    escrow_total: int,
    weights: Sequence[Decimal],
    index: int,
    held: int,
    already_paid: bool,
    executor_share: Decimal,
    has_supervisor: bool,
    can_rollback: bool,
) -> Stakes:
    """The stakes of deciding checkpoint ``index`` (of ``weights``) of a workflow holding ``held``."""
    amounts = ledger.allocate(escrow_total, list(weights)) if escrow_total else [0] * len(weights)
    milestone = 0 if already_paid else min(amounts[index], held)
    executor, supervisor = ledger.split_release(milestone, executor_share, has_supervisor)
    return Stakes(
        held=held,
        milestone=milestone,
        executor_payout=executor,
        supervisor_payout=supervisor,
        reject_refund=0 if can_rollback else held,
        reject_fails=not can_rollback,
    )
