"""The database side of funding: who may fund, the claim on a workflow, and crediting a settled payment.

``FundingBookkeeping`` (a base of ``FundingService``) holds the steps that run in worker threads under the
workflow's row lock: the precheck before any money moves (``_precheck``), the one claim per workflow that
refuses a second payment before it settles (``_claim`` / ``_release``, recording an unconfirmed
settlement), the credit itself (``_credit``: the ledger ``lock`` posting, the payment row, the audit event
and the notice, or an ``unapplied`` record when the workflow can no longer take the money), and the local
ledger's recovery of a payment settled but never credited (``_settled_on_local_ledger``). Separate from
``funding`` because it is everything that writes SafeRun's own books; ``FundingService`` only sequences
these steps around the facilitator's settlement.
"""

from __future__ import annotations

from datetime import timedelta

from eth_utils import to_checksum_address
from sqlalchemy import Connection, RowMapping
from x402.http import PAYMENT_RESPONSE_HEADER, encode_payment_response_header
from x402.schemas import SettleResponse

from saferun.core import mirror, notify
from saferun.domain import ledger as rules
from saferun.domain.money import format_micro
from saferun.domain.policy import Caller, may_create_workflow
from saferun.domain.states import WorkflowState
from saferun.errors import Conflict, Forbidden
from saferun.payments import records, token_ledger
from saferun.payments.funding_answers import (
    FundingAnswer,
    FundingAnswers,
    _error,
    _funded,
    _receipt,
    payer_party,
)
from saferun.payments.records import PaymentIdentity
from saferun.payments.settings import X402Settings, normalize
from saferun.storage import audit
from saferun.storage import ledger as book
from saferun.storage import workflows as wf_store
from saferun.storage.database import Database
from saferun.storage.schema import utcnow

CLAIM_GRACE = timedelta(seconds=60)


class FundingInProgress(Conflict):
    """Another settlement (or this same payment) is running for the workflow; retry in a moment."""


class FundingBookkeeping(FundingAnswers):
    """The database steps of ``FundingService`` (worker threads); needs its ``db`` and ``settings``."""

    db: Database
    settings: X402Settings

    # ------------------------------------------------------------------ database steps (worker threads)
    def _precheck(
        self, workflow_id: str, caller: Caller, identity: PaymentIdentity | None
    ) -> RowMapping | FundingAnswer:
        with self.db.read() as conn:
            row = wf_store.get(conn, workflow_id)  # WorkflowNotFound: 404
            refusal = may_create_workflow(caller, row["poster_id"])
            if refusal is not None:
                raise Forbidden(refusal.rule, refusal.message)
            if row["config"].get("funding", "ledger") != "x402":
                raise Conflict(
                    f"workflow {workflow_id!r} is not funded through x402 (its escrow comes from the "
                    "poster's ledger funding account); create it with funding='x402'",
                    workflow_id=workflow_id,
                    reason="not_x402_funded",
                )
            if row["escrow_micro"] <= 0:
                raise Conflict(
                    f"workflow {workflow_id!r} has no escrow to fund",
                    workflow_id=workflow_id,
                    reason="no_escrow",
                )
            if identity is not None:
                paid = records.find(conn, identity)
                if (
                    paid is not None
                    and paid["workflow_id"] == workflow_id
                    and paid["status"] == records.CREDITED
                ):
                    return self._replayed(paid)
            self._require_fundable(conn, row)
            return row

    def _require_fundable(self, conn: Connection, row: RowMapping) -> None:
        problem = _fundable_problem(conn, row)
        if problem is not None:
            reason, message = problem
            raise Conflict(message, workflow_id=row["workflow_id"], reason=reason, state=row["state"])

    def _claim(self, workflow_id: str, identity: PaymentIdentity, actor: str) -> FundingAnswer | None:
        """Make ``identity`` the workflow's one settling payment; a replay answer if it already funded it."""
        with wf_store.locked(self.db, workflow_id) as (conn, row):
            paid = records.find(conn, identity)
            if paid is not None and paid["workflow_id"] == workflow_id and paid["status"] == records.CREDITED:
                return self._replayed(paid)
            self._require_fundable(conn, row)  # again, under the lock
            claim = records.claim_of(conn, workflow_id)
            now = utcnow()
            if claim is not None:
                held_by = records.claim_identity(claim)
                if claim["expires_at"] > now:
                    same = held_by == identity
                    raise FundingInProgress(
                        (
                            "this payment is already being settled for the workflow; retry in a moment"
                            if same
                            else "another payment for this workflow is being settled; it was refused before "
                            "settling, so no money moved"
                        ),
                        workflow_id=workflow_id,
                        reason="payment_in_progress" if same else "funding_in_progress",
                    )
                records.drop_claim(conn, workflow_id)
                audit.append(
                    conn,
                    workflow_id,
                    "x402_claim_expired",
                    actor,
                    {**held_by.as_dict(), "claimed_at": claim["created_at"].isoformat()},
                )
            expires = now + timedelta(seconds=self.settings.max_timeout_seconds) + CLAIM_GRACE
            records.add_claim(conn, workflow_id, identity, expires)
            return None

    def _release(
        self,
        workflow_id: str,
        identity: PaymentIdentity,
        unconfirmed: SettleResponse | None = None,
        amount: int = 0,
        actor: str = "",
    ) -> None:
        with wf_store.locked(self.db, workflow_id) as (conn, _row):
            records.drop_claim(conn, workflow_id, identity)
            if unconfirmed is None:
                return
            reason = unconfirmed.error_reason or "settlement_unconfirmed"
            payment_id = records.record(
                conn,
                identity,
                workflow_id=workflow_id,
                pay_to=self.settings.pay_to,
                amount_micro=amount,
                status=records.UNCONFIRMED,
                tx_hash=unconfirmed.transaction,
                receipt=_receipt(unconfirmed),
                reason=reason,
            )
            audit.append(
                conn,
                workflow_id,
                "x402_payment_unconfirmed",
                actor,
                {
                    **identity.as_dict(),
                    "payment_id": payment_id,
                    "transaction": unconfirmed.transaction,
                    "reason": reason,
                    "bind": records.binding(conn, payment_id),
                },
            )
            notify.publish(conn, "workflow", workflow_id)

    def _settled_on_local_ledger(self, row: RowMapping, identity: PaymentIdentity) -> SettleResponse | None:
        """The settlement of an authorization the local ledger shows paid to us in full but that no payment
        row accounts for: a process stopped between settling and crediting. None when there is none.

        Only the local ledger can answer this (it *is* the chain); with a remote facilitator such a payment
        shows as the claim's expiry in the audit trail and is reconciled by an operator.
        """
        if self.settings.facilitator != "local" or identity.network != self.settings.network:
            return None
        if identity.asset != normalize(self.settings.asset):
            return None
        with self.db.read() as conn:
            transfer = token_ledger.by_authorization(
                conn, identity.network, identity.asset, identity.payer, identity.nonce
            )
            if transfer is None or records.find(conn, identity) is not None:
                return None
            if transfer["to_address"] != normalize(self.settings.pay_to):
                return None
            if int(transfer["amount"]) != int(row["escrow_micro"]):
                return None
        return SettleResponse(
            success=True,
            transaction=transfer["tx_hash"],
            network=identity.network,
            payer=to_checksum_address(identity.payer),
        )

    def _credit(
        self,
        workflow_id: str,
        identity: PaymentIdentity,
        amount: int,
        settled: SettleResponse,
        actor: str,
        recovered: bool = False,
    ) -> FundingAnswer:
        receipt = _receipt(settled)
        headers = {PAYMENT_RESPONSE_HEADER: encode_payment_response_header(settled)}
        with wf_store.locked(self.db, workflow_id) as (conn, row):
            records.drop_claim(conn, workflow_id, identity)
            problem = _fundable_problem(conn, row)
            if problem is None and amount != row["escrow_micro"]:
                problem = (
                    "amount_mismatch",
                    f"the payment is {amount} units but the escrow is {row['escrow_micro']}",
                )
            common = {
                "workflow_id": workflow_id,
                "pay_to": self.settings.pay_to,
                "amount_micro": amount,
                "tx_hash": settled.transaction,
                "receipt": receipt,
            }
            event = {
                **identity.as_dict(),
                "amount": format_micro(amount),
                "transaction": settled.transaction,
                "pay_to": self.settings.pay_to,
            }
            if recovered:
                event["recovered"] = True  # settled by an earlier attempt that stopped before crediting
            if problem is not None:
                reason, message = problem
                payment_id = records.record(conn, identity, status=records.UNAPPLIED, reason=reason, **common)
                audit.append(
                    conn,
                    workflow_id,
                    "x402_payment_unapplied",
                    actor,
                    {
                        **event,
                        "payment_id": payment_id,
                        "reason": reason,
                        "bind": records.binding(conn, payment_id),
                    },
                )
                notify.publish(conn, "workflow", workflow_id)
                return FundingAnswer(
                    409,
                    _error(
                        "PaymentNotApplied",
                        f"the payment settled (transaction {settled.transaction}) but was not credited: "
                        f"{message}. It is recorded as {payment_id} for a refund.",
                        reason=reason,
                        workflow_id=workflow_id,
                        payment_id=payment_id,
                        transaction=settled.transaction,
                        payer=identity.payer,
                    ),
                    headers,
                )
            party = payer_party(identity.payer)
            txn = book.post(
                conn,
                rules.lock(workflow_id, party, amount),
                idempotency_key=rules.lock_key(workflow_id),
                workflow_id=workflow_id,
            )
            # a workflow whose money lives on a remote platform gets its lock there too (the outbox)
            mirror.lock(conn, row)
            payment_id = records.record(conn, identity, status=records.CREDITED, ledger_txn_id=txn, **common)
            audit.append(
                conn,
                workflow_id,
                "escrow_funded",
                actor,
                {
                    **event,
                    "txn_id": txn,
                    "payment_id": payment_id,
                    "escrow_id": row["escrow_id"],
                    "source": rules.funding_account(party),
                    # the x402 funding posting and the payment row, bound like every escrow posting
                    "posting_sha256": book.digest(conn, txn),
                    "bind": records.binding(conn, payment_id),
                },
            )
            notify.publish(conn, "workflow", workflow_id)
            return FundingAnswer(
                200,
                _funded(
                    workflow_id, row["state"], payment_id, identity, amount, txn, settled, replayed=False
                ),
                headers,
            )


# --- helpers -------------------------------------------------------------------------------------------


def _fundable_problem(conn: Connection, row: RowMapping) -> tuple[str, str] | None:
    wf = row["workflow_id"]
    if book.exists(conn, rules.lock_key(wf)):
        return (
            "already_funded",
            f"workflow {wf!r} is already funded; a second payment is refused before it settles",
        )
    if row["state"] != WorkflowState.INITIALIZED.value:
        return (
            "workflow_not_initialized",
            f"workflow {wf!r} is {row['state']}; only an INITIALIZED workflow can be funded",
        )
    return None
