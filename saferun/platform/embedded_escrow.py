"""The embedded platform's Escrow calls: lock, release, split and read a workflow's escrow on the
engine's double-entry ledger (``saferun.storage.ledger``).

One mixin of ``saferun.platform.embedded.EmbeddedPlatform``, apart because it is the only part that
moves money: every payout a caller asks for is checked here against the engine's rules
(``saferun.domain.platform_policy.check_lock`` / ``check_payout``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from saferun.domain import ledger as rules
from saferun.domain import platform_policy as rules_of
from saferun.domain.ids import new_id
from saferun.domain.ledger import position_from_entries
from saferun.domain.money import format_micro
from saferun.domain.policy import Role
from saferun.errors import InvalidAmount, InvalidInput, NotFound
from saferun.platform import scope
from saferun.platform.embedded_core import (
    ESCROW_ID_PREFIX,
    EmbeddedCore,
    _amount,
    _enforce,
    _text,
    _workflow_id,
    escrow_id_for,
)
from saferun.storage import audit
from saferun.storage import identities as id_store
from saferun.storage import ledger as book


class EscrowCalls(EmbeddedCore):
    """Escrow: ``lock_escrow``, ``release_escrow``, ``split_payment``, ``get_escrow``."""

    @staticmethod
    def _escrow_workflow(escrow_id: Any) -> str:
        if not isinstance(escrow_id, str) or not escrow_id.startswith(ESCROW_ID_PREFIX):
            raise InvalidInput("escrow_id", f"must look like 'escrow_<workflow_id>', got {escrow_id!r}")
        return _workflow_id(escrow_id[len(ESCROW_ID_PREFIX) :], "escrow_id")

    @staticmethod
    def _held(conn: Connection, escrow_id: str, workflow_id: str) -> int:
        position = book.escrow_position(conn, workflow_id)
        if position.locked == 0:
            raise NotFound(f"escrow {escrow_id!r} does not exist (nothing was locked)", escrow_id=escrow_id)
        return position.held

    def _escrow_guard(self, escrow_id: str, workflow_id: str) -> Callable[[Connection], object]:
        """A foreign escrow answers exactly like one that was never locked."""
        unknown = NotFound(f"escrow {escrow_id!r} does not exist (nothing was locked)", escrow_id=escrow_id)
        return lambda conn: self._workflow_in_scope(conn, workflow_id, unknown)

    def _check_payout(
        self, conn: Connection, workflow_id: str, payouts: list[tuple[str, int]], held: int
    ) -> None:
        """A caller's release or split pays only what approved checkpoints earned (or the payer back at
        settlement): ``saferun.domain.platform_policy.check_payout`` on this server's records."""
        if self.caller is None:
            return
        terms = scope.workflow_terms(conn, workflow_id)
        assert terms is not None  # the guard found it
        paid, payer = scope.escrow_paid(conn, workflow_id)
        _enforce(rules_of.check_payout(terms, payouts, paid, held, payer))

    @staticmethod
    def _ledger_key(operation: str, idempotency_key: str | None) -> str:
        return (
            f"x402:{idempotency_key}" if idempotency_key is not None else f"x402:{operation}:{new_id('op')}"
        )

    async def lock_escrow(
        self,
        workflow_id: str,
        amount: Any,
        poster_id: str,
        executor_id: str,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        workflow_id = _workflow_id(workflow_id)
        micro = _amount(amount, "amount")

        def guard(conn: Connection) -> None:
            unknown = NotFound(
                f"workflow {workflow_id!r} has no job on this platform", workflow_id=workflow_id
            )
            self._workflow_in_scope(conn, workflow_id, unknown)

        def work(conn: Connection) -> dict[str, Any]:
            strict = self.strict_identities
            poster = self._party(conn, poster_id, "poster_id", Role.POSTER, strict=strict)
            executor = self._party(conn, executor_id, "executor_id", Role.EXECUTOR, strict=strict)
            if self.caller is not None:
                terms = scope.workflow_terms(conn, workflow_id)
                assert terms is not None  # the guard found it
                _enforce(rules_of.check_lock(terms, poster, executor, micro))
                _enforce(rules_of.check_poster_grant(self.caller, poster, scope.grants_of(conn, poster)))
            # the engine's key: a workflow's escrow is locked once, whoever locks it
            txn = book.post(
                conn,
                rules.lock(workflow_id, poster, micro),
                idempotency_key=rules.lock_key(workflow_id),
                workflow_id=workflow_id,
            )
            return {
                "escrow_id": escrow_id_for(workflow_id),
                "workflow_id": workflow_id,
                "amount": format_micro(micro),
                "amount_micro": micro,
                "status": "locked",
                "poster_id": poster,
                "executor_id": executor,
                "txn_id": txn,
            }

        args = {
            "workflow_id": workflow_id,
            "amount": micro,
            "poster_id": poster_id,
            "executor_id": executor_id,
        }
        return self._mutate("lock_escrow", args, idempotency_key, work, guard)

    async def release_escrow(
        self,
        escrow_id: str,
        amount: Any,
        recipient_id: str,
        reason: str,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        workflow_id = self._escrow_workflow(escrow_id)
        micro = _amount(amount, "amount")
        reason = _text(reason, "reason", 200)

        def work(conn: Connection) -> dict[str, Any]:
            recipient = self._party(conn, recipient_id, "recipient_id", None, strict=self.strict_identities)
            held = self._held(conn, escrow_id, workflow_id)
            if micro > held:
                raise InvalidAmount(
                    "amount",
                    f"{format_micro(micro)} is more than escrow {escrow_id!r} still holds "
                    f"({format_micro(held)})",
                )
            self._check_payout(conn, workflow_id, [(recipient, micro)], held)
            posting = rules.Posting(
                rules.KIND_RELEASE,
                (
                    rules.Leg(rules.escrow_account(workflow_id), -micro),
                    rules.Leg(rules.wallet_account(recipient), micro),
                ),
                memo=f"release to {recipient}: {reason}",
            )
            txn = book.post(
                conn,
                posting,
                idempotency_key=self._ledger_key("release", idempotency_key),
                workflow_id=workflow_id,
            )
            return {
                "escrow_id": escrow_id,
                "release_id": txn,
                "amount": format_micro(micro),
                "amount_micro": micro,
                "recipient_id": recipient,
                "reason": reason,
                "status": "released",
                "remaining": format_micro(held - micro),
                "remaining_micro": held - micro,
            }

        args = {"escrow_id": escrow_id, "amount": micro, "recipient_id": recipient_id, "reason": reason}
        guard = self._escrow_guard(escrow_id, workflow_id)
        return self._mutate("release_escrow", args, idempotency_key, work, guard)

    async def split_payment(
        self,
        escrow_id: str,
        splits: list[dict[str, Any]],
        *,
        total: Any = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Pay several recipients out of one escrow in one posting (all or nothing).

        The parts must not exceed what the escrow holds; when ``total`` is given they must add up to it
        exactly (the seed's 90 + 10 of a 100 escrow).
        """
        workflow_id = self._escrow_workflow(escrow_id)
        if not isinstance(splits, list | tuple) or not splits:
            raise InvalidInput("splits", "must be a non-empty list of {recipient_id, amount, reason}")
        parts: list[tuple[str, int, str]] = []
        for i, split in enumerate(splits):
            field = f"splits[{i}]"
            if not isinstance(split, dict):
                raise InvalidInput(field, f"must be an object, got {type(split).__name__}")
            unknown = set(split) - {"recipient_id", "amount", "reason"}
            if unknown:
                raise InvalidInput(field, f"unknown keys {sorted(unknown)}")
            if "recipient_id" not in split or "amount" not in split:
                raise InvalidInput(field, "needs recipient_id and amount")
            recipient = id_store.validate_identity_id(split["recipient_id"], f"{field}.recipient_id")
            parts.append(
                (
                    recipient,
                    _amount(split["amount"], f"{field}.amount"),
                    _text(split.get("reason"), f"{field}.reason", 200),
                )
            )
        split_total = sum(micro for _, micro, _ in parts)
        expected = None if total is None else _amount(total, "total")
        if expected is not None and split_total != expected:
            raise InvalidAmount(
                "splits", f"add up to {format_micro(split_total)}, not the total {format_micro(expected)}"
            )

        def work(conn: Connection) -> dict[str, Any]:
            for i, (recipient, _, _) in enumerate(parts):
                self._party(conn, recipient, f"splits[{i}].recipient_id", None, strict=self.strict_identities)
            held = self._held(conn, escrow_id, workflow_id)
            if split_total > held:
                raise InvalidAmount(
                    "splits",
                    f"add up to {format_micro(split_total)}, more than escrow {escrow_id!r} still holds "
                    f"({format_micro(held)})",
                )
            self._check_payout(conn, workflow_id, [(r, m) for r, m, _ in parts], held)
            legs = [rules.Leg(rules.escrow_account(workflow_id), -split_total)]
            legs += [rules.Leg(rules.wallet_account(recipient), micro) for recipient, micro, _ in parts]
            posting = rules.Posting(rules.KIND_RELEASE, tuple(legs), memo=f"split payment of {escrow_id}")
            txn = book.post(
                conn,
                posting,
                idempotency_key=self._ledger_key("split", idempotency_key),
                workflow_id=workflow_id,
            )
            return {
                "escrow_id": escrow_id,
                "split_id": txn,
                "status": "split",
                "total": format_micro(split_total),
                "total_micro": split_total,
                "payments": [
                    {"recipient_id": r, "amount": format_micro(m), "amount_micro": m, "reason": why}
                    for r, m, why in parts
                ],
                "remaining": format_micro(held - split_total),
                "remaining_micro": held - split_total,
            }

        args = {"escrow_id": escrow_id, "splits": [list(p) for p in parts], "total": expected}
        guard = self._escrow_guard(escrow_id, workflow_id)
        return self._mutate("split_payment", args, idempotency_key, work, guard)

    async def get_escrow(self, escrow_id: str) -> dict[str, Any]:
        """Where an escrow's money is now (locked / released / refunded / held)."""
        workflow_id = self._escrow_workflow(escrow_id)
        self._may("get_escrow")
        with self.db.read() as conn:
            gone = f"escrow {escrow_id!r} does not exist (nothing was locked)"
            unknown = NotFound(gone, escrow_id=escrow_id)
            terms = self._workflow_in_scope(conn, workflow_id, unknown)
            if terms is None or not terms.engine:
                position = book.escrow_position(conn, workflow_id)
            else:  # a workflow this server's engine runs: its postings are checked against its chain
                entries = book.entries(conn, workflow_id)
                audit.check_read(conn, workflow_id, postings=entries)
                position = position_from_entries(workflow_id, entries)
        if position.locked == 0:
            raise NotFound(f"escrow {escrow_id!r} does not exist (nothing was locked)", escrow_id=escrow_id)
        return {
            "escrow_id": escrow_id,
            "workflow_id": workflow_id,
            "locked": format_micro(position.locked),
            "released": format_micro(position.released),
            "refunded": format_micro(position.refunded),
            "held": format_micro(position.held),
            "held_micro": position.held,
            "invariant_holds": position.invariant_holds(),
        }
