"""Fund a workflow's escrow with an x402 v2 payment, crediting it exactly once per payment.

``FundingService.fund`` is what ``POST /api/workflows/{id}/escrow/fund`` runs:

1. **Read the header.** No ``PAYMENT-SIGNATURE``: answer ``402`` with the SDK's ``PAYMENT-REQUIRED``
   (amount = the workflow's ``escrow_micro`` in the token's 6-decimal units, ``payTo``, network, and
   ``extra.paymentFlow = "upfront"``). A header that is not base64 JSON of a v2 exact/EIP-3009 payload is
   ``InvalidInput`` (422, field ``PAYMENT-SIGNATURE``) and nothing happens; a v1 ``X-PAYMENT`` is refused
   the same way.
2. **Check the workflow** (before any money moves): it exists (404), the caller may fund it (the poster,
   or an admin; 403), it is configured with ``funding="x402"`` and a non-zero escrow, it is INITIALIZED
   and not funded yet (409). The same payment sent again for the workflow it already funded is answered
   with its original receipt (200, ``replayed: true``) and moves nothing.
3. **Claim** the workflow for this payment (``x402_funding_claims``, one row per workflow, written under
   the workflow's row lock): a second payment, or a concurrent duplicate of the same one, is refused
   with 409 *before it settles*, so it moves no money. A claim expires after the authorization's
   settlement window (``max_timeout_seconds`` + 60 s), so a process that died mid-settlement cannot
   block its workflow forever (the expiry is audited as ``x402_claim_expired``).
4. **Settle** through the SDK's HTTP resource server with the *upfront* payment flow: the facilitator
   verifies the payment and settles it before anything is credited (``x402HTTPResourceServer
   .process_http_request``). A refused payment is ``402`` with ``PAYMENT-RESPONSE`` and a JSON body
   whose ``detail.reason`` is the facilitator's reason (``invalid_exact_evm_nonce_already_used``, ...).
5. **Credit** in one transaction under the row lock: the ledger ``lock`` posting from
   ``funding:x402-<payer>`` into ``escrow:<wf>`` under ``lock_key(wf)`` (so the escrow is locked at most
   once, whoever locks it), the payment row (UNIQUE on the authorization), the ``escrow_funded`` audit
   event and a ``workflow`` notice; answer ``200`` with ``PAYMENT-RESPONSE``.

If the workflow can no longer take the money when the settled payment comes back (only possible when
something bypassed the claim, e.g. a claim that expired while its settlement was still running), the
payment is recorded as ``unapplied`` with the reason, audited as ``x402_payment_unapplied`` and answered
``409`` with its ``PAYMENT-RESPONSE``, so the payer learns that the money moved and the operator can
refund it from ``GET .../escrow/payments``. A settlement whose outcome is unknown (the facilitator could
not be reached, or broadcast without confirming) is recorded as ``unconfirmed`` and answered ``502``; it
is reconciled against the chain by an operator. With the local facilitator, a payment that settled but
was never credited (a process stopped in between) is credited when its header is sent again: the local
ledger is the chain, so it can tell (``_settled_on_local_ledger``).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

from eth_utils import to_checksum_address
from pydantic import ValidationError
from sqlalchemy import Connection, RowMapping
from x402 import x402ResourceServer
from x402.http import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    HTTPRequestContext,
    PaymentOption,
    RouteConfig,
    decode_payment_required_header,
    decode_payment_response_header,
    encode_payment_response_header,
    x402HTTPResourceServer,
)
from x402.http.utils import safe_base64_decode
from x402.mechanisms.evm.constants import ERR_NONCE_ALREADY_USED
from x402.mechanisms.evm.exact import ExactEvmServerScheme
from x402.schemas import AssetAmount, PaymentPayload, SettleResponse

from saferun.core import mirror, notify
from saferun.domain import ledger as rules
from saferun.domain.money import format_micro
from saferun.domain.policy import Caller, may_create_workflow
from saferun.domain.states import WorkflowState
from saferun.errors import Conflict, Forbidden, InvalidInput, SafeRunError
from saferun.payments import records, token_ledger
from saferun.payments.facilitator import FacilitatorClient, build_facilitator
from saferun.payments.records import PaymentIdentity
from saferun.payments.settings import X402Settings, is_address, normalize
from saferun.storage import audit
from saferun.storage import ledger as book
from saferun.storage import workflows as wf_store
from saferun.storage.database import Database
from saferun.storage.schema import utcnow

HEADER = "PAYMENT-SIGNATURE"
_ROUTE_PATH = "/escrow/fund"  # what the SDK's route table matches; the resource URL is the real one
CLAIM_GRACE = timedelta(seconds=60)
_UINT = re.compile(r"^[0-9]{1,78}$")
_NONCE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_SIGNATURE = re.compile(r"^0x(?:[0-9a-fA-F]{2})+$")
_REASON_CODE = re.compile(r"^[a-z0-9_]+$")
_UNCONFIRMED_REASONS = {"settlement_pending", "unexpected_settle_error"}


WORKFLOW_EXTRA = "workflowId"  # in the payment requirements' ``extra``: the workflow they fund


def bound_elsewhere(payload: PaymentPayload, workflow_id: str) -> str | None:
    """Why ``payload`` was not made for ``workflow_id`` (None when it was).

    A v2 payment carries the requirements it accepted and the resource it pays for; SafeRun's name the
    workflow (``extra.workflowId``, and the resource URL ``/api/workflows/<id>/escrow/fund``). A payment
    accepted for another workflow, or for requirements that name none, is refused with the reason.
    """
    named = (payload.accepted.extra or {}).get(WORKFLOW_EXTRA)
    if named != workflow_id:
        which = "no workflow" if named is None else f"workflow {named!r}"
        return (
            f"this payment was made for {which}, not for workflow {workflow_id!r} (its accepted "
            f"requirements' extra.{WORKFLOW_EXTRA}); ask this workflow's requirements (POST without "
            f"{HEADER}) and pay those"
        )
    resource = payload.resource
    if resource is not None and resource.url:
        path = unquote(urlsplit(resource.url).path).rstrip("/")
        if not path.endswith(f"/api/workflows/{workflow_id}{_ROUTE_PATH}"):
            return (
                f"this payment was made for the resource {resource.url!r}, not for workflow "
                f"{workflow_id!r}'s escrow"
            )
    return None


class FundingInProgress(Conflict):
    """Another settlement (or this same payment) is running for the workflow; retry in a moment."""


def _mask_url(url: str | None) -> str | None:
    """The URL with any user:password replaced by ***, for error bodies and logs."""
    if not url or "@" not in url:
        return url
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class FacilitatorUnavailable(SafeRunError):
    http_status = 503


def payer_party(payer: str) -> str:
    """The party id of an x402 payer: ``x402-<lower-case address>``; its source account is
    ``funding:x402-0x...`` (``rules.funding_account``)."""
    return f"x402-{normalize(payer)}"


@dataclass
class FundingAnswer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class _Adapter:
    """The SDK's ``HTTPAdapter`` over one funding request, carrying the workflow's price."""

    def __init__(self, headers: Mapping[str, str], url: str, price: AssetAmount) -> None:
        self._headers = {k.lower(): v for k, v in headers.items()}
        self._url = url
        self.price = price

    def get_header(self, name: str) -> str | None:
        return self._headers.get(name.lower())

    def get_method(self) -> str:
        return "POST"

    def get_path(self) -> str:
        return _ROUTE_PATH

    def get_url(self) -> str:
        return self._url

    def get_accept_header(self) -> str:
        return "application/json"  # an API answer, never the SDK's browser paywall

    def get_user_agent(self) -> str:
        return self._headers.get("user-agent", "")

    def get_query_params(self) -> dict[str, str | list[str]]:
        return {}

    def get_query_param(self, name: str) -> str | None:
        return None

    def get_body(self) -> Any:
        return None


def parse_payment_header(value: str) -> PaymentPayload:
    """The decoded ``PAYMENT-SIGNATURE``, or ``InvalidInput`` naming what is wrong with it."""

    def bad(message: str) -> InvalidInput:
        return InvalidInput(HEADER, message)

    try:
        data = json.loads(safe_base64_decode(value.strip()))
    except (ValueError, UnicodeDecodeError):
        raise bad("is not base64-encoded JSON (x402 v2 payment payload expected)") from None
    if not isinstance(data, dict):
        raise bad("must encode a JSON object")
    if data.get("x402Version") != 2:
        raise bad(f"x402Version must be 2, got {data.get('x402Version')!r}")
    try:
        payload = PaymentPayload.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "payload"
        raise bad(f"is not an x402 v2 payment payload: {where}: {first.get('msg')}") from None
    if payload.accepted.scheme == "exact":
        _check_eip3009(payload.payload, bad)
    return payload


def _check_eip3009(inner: dict[str, Any], bad: Any) -> None:
    auth = inner.get("authorization")
    if not isinstance(auth, dict):
        raise bad("payload.authorization is missing (an EIP-3009 authorization is expected)")
    for name in ("from", "to"):
        if not is_address(auth.get(name)):
            raise bad(f"payload.authorization.{name} must be a 0x-prefixed 20-byte address")
    for name in ("value", "validAfter", "validBefore"):
        text = auth.get(name)
        if not isinstance(text, str) or not _UINT.fullmatch(text) or int(text) >= 2**256:
            raise bad(f"payload.authorization.{name} must be a decimal uint256 string")
    if not isinstance(auth.get("nonce"), str) or not _NONCE.fullmatch(auth["nonce"]):
        raise bad("payload.authorization.nonce must be 0x followed by 64 hex digits")
    signature = inner.get("signature")
    if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
        raise bad("payload.signature must be a 0x-prefixed hex string")


def identity_of(payload: PaymentPayload) -> PaymentIdentity | None:
    if payload.accepted.scheme != "exact":
        return None
    auth = payload.payload["authorization"]
    return PaymentIdentity.of(
        str(payload.accepted.network), payload.accepted.asset, auth["from"], auth["nonce"]
    )


class FundingService:
    """One per app (``app.state.x402_funding``): the SDK's resource server over the chosen facilitator."""

    def __init__(
        self,
        db: Database,
        settings: X402Settings | None = None,
        facilitator: FacilitatorClient | None = None,
    ) -> None:
        self.db = db
        self.settings = settings or X402Settings.from_env()
        self.facilitator = facilitator or build_facilitator(db, self.settings)
        self.resource_server = x402ResourceServer(self.facilitator)
        self.resource_server.register(self.settings.network, ExactEvmServerScheme())
        option = PaymentOption(
            scheme="exact",
            pay_to=self.settings.pay_to,
            price=lambda context: context.adapter.price,
            network=self.settings.network,
            max_timeout_seconds=self.settings.max_timeout_seconds,
            extra={"paymentFlow": "upfront"},  # settle before anything is credited
        )
        route = RouteConfig(
            accepts=option,
            description="Fund the escrow of a SafeRun workflow",
            mime_type="application/json",
        )
        self.http = x402HTTPResourceServer(self.resource_server, {f"POST {_ROUTE_PATH}": route})
        self._ready = False
        self._init_lock = threading.Lock()

    # ------------------------------------------------------------------ entry point
    async def fund(
        self, workflow_id: str, *, caller: Caller, url: str, headers: Mapping[str, str]
    ) -> FundingAnswer:
        lowered = {k.lower(): v for k, v in headers.items()}
        raw = lowered.get(HEADER.lower())
        if raw is None and lowered.get("x-payment") is not None:
            raise InvalidInput(
                "X-PAYMENT", "x402 v1 payments are not accepted: send a v2 PAYMENT-SIGNATURE header"
            )
        payload = parse_payment_header(raw) if raw is not None else None
        identity = identity_of(payload) if payload is not None else None
        checked = await asyncio.to_thread(self._precheck, workflow_id, caller, identity)
        if isinstance(checked, FundingAnswer):
            return checked
        row = checked
        await self._ensure_ready()
        price = AssetAmount(
            amount=str(row["escrow_micro"]),
            asset=self.settings.asset,
            # the requirements name the workflow they fund (``extra.workflowId``): a payment made for
            # another workflow of the same amount no longer matches them
            extra={
                "name": self.settings.asset_name,
                "version": self.settings.asset_version,
                WORKFLOW_EXTRA: row["workflow_id"],
            },
        )
        context = HTTPRequestContext(
            adapter=_Adapter(lowered, url, price), path=_ROUTE_PATH, method="POST", payment_header=raw
        )
        if payload is None:
            result = await self.http.process_http_request(context)
            return self._refused(row, result.response, identity=None)
        mismatch = bound_elsewhere(payload, row["workflow_id"])
        if mismatch is not None:  # refused before the facilitator sees it: nothing settles, nothing funded
            unpaid = {k: v for k, v in lowered.items() if k != HEADER.lower()}
            context = HTTPRequestContext(
                adapter=_Adapter(unpaid, url, price), path=_ROUTE_PATH, method="POST", payment_header=None
            )
            result = await self.http.process_http_request(context)
            answer = self._refused(row, result.response, identity=identity)
            answer.body["detail"].update(
                error="PaymentRejected", reason="payment_for_another_workflow", message=mismatch
            )
            return answer
        payer = identity.payer if identity is not None else "unknown"
        actor = caller.identity_id or f"x402:{payer}"
        # settle and credit run to the end even if the request is cancelled (a client that hangs up after
        # its money moved must still be credited)
        return await asyncio.shield(self._settle(row, context, identity, actor))

    async def _settle(
        self, row: RowMapping, context: HTTPRequestContext, identity: PaymentIdentity | None, actor: str
    ) -> FundingAnswer:
        wf = row["workflow_id"]
        if identity is not None:
            replayed = await asyncio.to_thread(self._claim, wf, identity, actor)
            if replayed is not None:  # a duplicate that lost the race to its twin, which credited it
                return replayed
        try:
            result = await self.http.process_http_request(context)
        except BaseException:
            if identity is not None:
                await asyncio.to_thread(self._release, wf, identity)
            raise
        settlement = result.before_handler_settlement
        if result.type == "payment-verified":
            # the upfront flow only reports "verified" once it settled; only exact payments get that far
            assert settlement is not None and identity is not None, "settled without a receipt or identity"
            return await asyncio.to_thread(
                self._credit, wf, identity, int(settlement.requirements.amount), settlement.result, actor
            )
        failure = _settle_failure(result.response)
        if failure is not None and failure.error_reason == ERR_NONCE_ALREADY_USED and identity is not None:
            recovered = await asyncio.to_thread(self._settled_on_local_ledger, row, identity)
            if recovered is not None:  # it settled to us before, but was never credited (a crash between)
                return await asyncio.to_thread(
                    self._credit, wf, identity, int(row["escrow_micro"]), recovered, actor, True
                )
        unconfirmed = failure is not None and _is_unconfirmed(failure)
        if identity is not None:
            await asyncio.to_thread(
                self._release, wf, identity, failure if unconfirmed else None, int(row["escrow_micro"]), actor
            )
        return self._refused(row, result.response, identity=identity, unconfirmed=unconfirmed)

    # ------------------------------------------------------------------ readiness
    async def _ensure_ready(self) -> None:
        if not self._ready:
            await asyncio.to_thread(self._initialize)

    def _initialize(self) -> None:
        with self._init_lock:
            if self._ready:
                return
            try:
                self.http.initialize()  # asks the facilitator what it supports (/supported when remote)
            except Exception as exc:
                # the URL may carry credentials (user:password@); an error body must never show them
                url = self.settings.facilitator_url
                shown = _mask_url(url)
                detail = str(exc).replace(url, shown) if url else str(exc)
                raise FacilitatorUnavailable(
                    f"the x402 facilitator is not available ({type(exc).__name__}: {detail})",
                    facilitator=self.settings.facilitator,
                    url=shown,
                ) from exc
            self._ready = True

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
