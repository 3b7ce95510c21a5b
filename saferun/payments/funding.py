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

This module holds ``FundingService`` itself: the SDK resource server over the facilitator, and the order of
the steps above (``fund`` and ``_settle``). The steps live beside it: ``funding_request`` (the header and
the requirements), ``funding_bookkeeping`` (the precheck, the claim and the credit, in the database) and
``funding_answers`` (what the caller is told). Their public names are importable from here too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

from sqlalchemy import RowMapping
from x402 import x402ResourceServer
from x402.http import HTTPRequestContext, x402HTTPResourceServer
from x402.mechanisms.evm.constants import ERR_NONCE_ALREADY_USED
from x402.mechanisms.evm.exact import ExactEvmServerScheme

from saferun.domain.policy import Caller
from saferun.errors import InvalidInput, SafeRunError
from saferun.payments.facilitator import FacilitatorClient, build_facilitator
from saferun.payments.funding_answers import (
    FundingAnswer,
    _is_unconfirmed,
    _settle_failure,
    payer_party,
)
from saferun.payments.funding_bookkeeping import (
    CLAIM_GRACE,
    FundingBookkeeping,
    FundingInProgress,
)
from saferun.payments.funding_request import (
    _ROUTE_PATH,
    HEADER,
    WORKFLOW_EXTRA,
    _Adapter,
    bound_elsewhere,
    identity_of,
    parse_payment_header,
    price_of,
    routes,
)
from saferun.payments.records import PaymentIdentity
from saferun.payments.settings import X402Settings
from saferun.storage.database import Database

# the public names, wherever they now live; the steps' private helpers are imported from their modules
__all__ = [
    "CLAIM_GRACE",
    "HEADER",
    "WORKFLOW_EXTRA",
    "FacilitatorUnavailable",
    "FundingAnswer",
    "FundingInProgress",
    "FundingService",
    "bound_elsewhere",
    "identity_of",
    "parse_payment_header",
    "payer_party",
]


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


class FundingService(FundingBookkeeping):
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
        self.http = x402HTTPResourceServer(self.resource_server, routes(self.settings))
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
        price = price_of(row, self.settings)
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
