"""The answers of ``POST .../escrow/fund``: status, JSON body and x402 headers, for every outcome.

``FundingAnswer`` is what ``FundingService.fund`` returns; ``FundingAnswers`` (a base of ``FundingService``)
builds the replayed receipt of a payment that already funded its workflow (``_replayed``) and the 402/502
refusals out of the SDK's payment-error response (``_refused``); the module functions read the SDK's
settlement header and shape the bodies. Separate from ``funding`` because it decides only what the caller
is told, never what happens: nothing here touches the database or the facilitator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import RowMapping
from x402.http import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    decode_payment_required_header,
    decode_payment_response_header,
    encode_payment_response_header,
)
from x402.schemas import SettleResponse

from saferun.domain import ledger as rules
from saferun.domain.money import format_micro
from saferun.payments.funding_request import HEADER
from saferun.payments.records import PaymentIdentity
from saferun.payments.settings import X402Settings, normalize

_REASON_CODE = re.compile(r"^[a-z0-9_]+$")
_UNCONFIRMED_REASONS = {"settlement_pending", "unexpected_settle_error"}


def payer_party(payer: str) -> str:
    """The party id of an x402 payer: ``x402-<lower-case address>``; its source account is
    ``funding:x402-0x...`` (``rules.funding_account``)."""
    return f"x402-{normalize(payer)}"


@dataclass
class FundingAnswer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class FundingAnswers:
    """The answers that need the service's settings (a base of ``FundingService``)."""

    settings: X402Settings

    # ------------------------------------------------------------------ answers
    def _replayed(self, paid: RowMapping) -> FundingAnswer:
        settled = SettleResponse.model_validate(paid["receipt"])
        identity = PaymentIdentity(paid["network"], paid["asset"], paid["payer"], paid["nonce"])
        body = _funded(
            paid["workflow_id"],
            None,
            paid["payment_id"],
            identity,
            int(paid["amount_micro"]),
            paid["ledger_txn_id"],
            settled,
            replayed=True,
        )
        return FundingAnswer(200, body, {PAYMENT_RESPONSE_HEADER: encode_payment_response_header(settled)})

    def _refused(
        self,
        row: RowMapping,
        response: Any,
        *,
        identity: PaymentIdentity | None,
        unconfirmed: bool = False,
    ) -> FundingAnswer:
        """The SDK's payment-error response, with a JSON body that names the reason."""
        if response is None:  # pragma: no cover - the SDK always builds one
            return FundingAnswer(
                402, _error("PaymentRequired", "payment required", reason="payment_required")
            )
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
        wf = row["workflow_id"]
        details: dict[str, Any] = {
            "workflow_id": wf,
            "amount_micro": int(row["escrow_micro"]),
            "amount": format_micro(int(row["escrow_micro"])),
            "network": self.settings.network,
            "asset": self.settings.asset,
            "pay_to": self.settings.pay_to,
        }
        if identity is not None:
            details["payer"] = identity.payer
        failure = _settle_failure(response)
        if failure is not None:
            reason = failure.error_reason or "settlement_failed"
            if unconfirmed:
                return FundingAnswer(
                    502,
                    _error(
                        "SettlementUnconfirmed",
                        "the facilitator did not confirm the settlement "
                        f"({failure.error_message or reason}); the payment may have moved and is recorded "
                        "as unconfirmed for reconciliation",
                        reason="settlement_unconfirmed",
                        facilitator_reason=reason,
                        transaction=failure.transaction or None,
                        **details,
                    ),
                    headers,
                )
            message = f"the payment was refused: {reason}" + (
                f" ({failure.error_message})"
                if failure.error_message and failure.error_message != reason
                else ""
            )
            return FundingAnswer(
                response.status, _error("PaymentRejected", message, reason=reason, **details), headers
            )
        required = response.headers.get(PAYMENT_REQUIRED_HEADER)
        error = decode_payment_required_header(required).error if required else None
        if identity is None and error in (None, "Payment required"):
            message = (
                f"workflow {wf!r} is funded through x402: pay {format_micro(int(row['escrow_micro']))} "
                f"{self.settings.asset_name} to {self.settings.pay_to} on {self.settings.network} and send "
                f"the signed payment in the {HEADER} header (requirements in {PAYMENT_REQUIRED_HEADER})"
            )
            return FundingAnswer(
                response.status,
                _error("PaymentRequired", message, reason="payment_required", **details),
                headers,
            )
        reason = _reason_code(error or "payment_rejected")
        return FundingAnswer(
            response.status,
            _error("PaymentRejected", f"the payment was refused: {error}", reason=reason, **details),
            headers,
        )


# --- helpers -------------------------------------------------------------------------------------------


def _settle_failure(response: Any) -> SettleResponse | None:
    if response is None:
        return None
    header = response.headers.get(PAYMENT_RESPONSE_HEADER)
    if not header:
        return None
    try:
        return decode_payment_response_header(header)
    except (ValueError, ValidationError):  # pragma: no cover - the SDK encoded it
        return None


def _is_unconfirmed(failure: SettleResponse) -> bool:
    """A failed settlement whose effect is unknown: broadcast without confirmation, or no answer at all.

    A facilitator that answered with one of its reason codes and no transaction moved nothing; anything
    else (a transaction hash, ``settlement_pending``, an exception text instead of a code) may have.
    """
    reason = failure.error_reason or ""
    if failure.transaction:
        return True
    return reason in _UNCONFIRMED_REASONS or not _REASON_CODE.fullmatch(reason)


def _reason_code(error: str) -> str:
    if _REASON_CODE.fullmatch(error):
        return error
    return re.sub(r"[^a-z0-9]+", "_", error.lower()).strip("_") or "payment_rejected"


def _receipt(settled: SettleResponse) -> dict[str, Any]:
    return settled.model_dump(mode="json", by_alias=True, exclude_none=True)


def _error(error: str, message: str, **fields: Any) -> dict[str, Any]:
    return {"detail": {"error": error, "message": message, **fields}}


def _funded(
    workflow_id: str,
    state: str | None,
    payment_id: str,
    identity: PaymentIdentity,
    amount: int,
    txn: str | None,
    settled: SettleResponse,
    *,
    replayed: bool,
) -> dict[str, Any]:
    body = {
        "workflow_id": workflow_id,
        "funded": True,
        "replayed": replayed,
        "payment_id": payment_id,
        "amount_micro": amount,
        "amount": format_micro(amount),
        "payer": identity.payer,
        "network": identity.network,
        "asset": identity.asset,
        "transaction": settled.transaction,
        "ledger_txn_id": txn,
        "source_account": rules.funding_account(payer_party(identity.payer)),
        "escrow_account": rules.escrow_account(workflow_id),
    }
    if state is not None:
        body["status"] = state
    return body
