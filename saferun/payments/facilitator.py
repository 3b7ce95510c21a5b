"""The facilitator that verifies and settles escrow payments: ``local`` or ``remote`` (see ``settings``).

- ``local``: the SDK's own ``x402FacilitatorSync`` with its exact-EVM scheme over ``LedgerEvmSigner``, so
  verification and settlement are the SDK's code and the "chain" is SafeRun's token ledger. The
  scheme re-runs the transfer simulation at settle time (``simulate_in_settle``), so a settle performs
  the full verification (balance and nonce included) before it moves anything. Its calls touch the
  database, so they run in a worker thread and never block the server's event loop.
- ``remote``: the SDK's ``HTTPFacilitatorClient`` at ``SAFERUN_X402_FACILITATOR_URL`` (a hosted
  facilitator, or ``facilitator_app`` below served by another SafeRun), as ``NoRedirectFacilitatorClient``:
  the SDK's clients follow redirects, which would re-send the URL's credentials and the signed payment to
  wherever the facilitator points; here a redirect is ``RedirectRefused`` (``saferun.outbound``).

``facilitator_app`` serves any facilitator over HTTP in the shape the SDK's client expects
(``GET /supported``, ``POST /verify``, ``POST /settle`` with ``{x402Version, paymentPayload,
paymentRequirements}``), so the remote mode can be run and tested end to end without a third party.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from x402 import x402FacilitatorSync
from x402.http import FacilitatorConfig, HTTPFacilitatorClient
from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme, ExactEvmSchemeConfig
from x402.schemas import (
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    SupportedResponse,
    VerifyResponse,
)

from saferun.outbound import refuse_redirects, refuse_redirects_async
from saferun.payments.ledger_signer import LedgerEvmSigner
from saferun.payments.settings import X402Settings
from saferun.storage.database import Database


class FacilitatorClient(Protocol):
    """What ``x402ResourceServer`` needs from a facilitator (the SDK's async protocol)."""

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse: ...

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse: ...

    def get_supported(self) -> SupportedResponse: ...


class ThreadedFacilitator:
    """An SDK sync facilitator behind the SDK's async client protocol, each call in a worker thread."""

    def __init__(self, facilitator: x402FacilitatorSync) -> None:
        self.facilitator = facilitator

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        return await asyncio.to_thread(self.facilitator.verify, payload, requirements)

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        return await asyncio.to_thread(self.facilitator.settle, payload, requirements)

    def get_supported(self) -> SupportedResponse:
        return self.facilitator.get_supported()


class NoRedirectFacilitatorClient(HTTPFacilitatorClient):
    """The SDK's HTTP facilitator client with both of its httpx clients following no redirect."""

    PEER = "x402 facilitator"

    def _get_sync_client(self) -> httpx.Client:
        hooks = {"response": [refuse_redirects(self.PEER)]}
        return httpx.Client(timeout=self._timeout, follow_redirects=False, event_hooks=hooks)

    def _get_async_client(self) -> httpx.AsyncClient:
        if self._http_client is None:
            hooks = {"response": [refuse_redirects_async(self.PEER)]}
            self._http_client = httpx.AsyncClient(
                timeout=self._timeout, follow_redirects=False, event_hooks=hooks
            )
        client: httpx.AsyncClient = self._http_client
        return client


def local_facilitator(db: Database, settings: X402Settings) -> x402FacilitatorSync:
    """The SDK's facilitator, exact EVM scheme, settling on SafeRun's token ledger."""
    signer = LedgerEvmSigner(db, settings)
    scheme = ExactEvmFacilitatorScheme(signer, ExactEvmSchemeConfig(simulate_in_settle=True))
    facilitator = x402FacilitatorSync()
    facilitator.register([settings.network], scheme)
    return facilitator


def build_facilitator(db: Database, settings: X402Settings) -> FacilitatorClient:
    if settings.facilitator == "remote":
        assert settings.facilitator_url is not None  # X402Settings refuses remote without a URL
        return NoRedirectFacilitatorClient(FacilitatorConfig(url=settings.facilitator_url))
    return ThreadedFacilitator(local_facilitator(db, settings))


def facilitator_app(facilitator: x402FacilitatorSync) -> FastAPI:
    """A FastAPI app serving ``facilitator`` over HTTP in the SDK facilitator client's shape."""
    app = FastAPI(title="SafeRun x402 facilitator")

    def _answer(model: Any) -> JSONResponse:
        return JSONResponse(model.model_dump(mode="json", by_alias=True, exclude_none=True))

    async def _parse(request: Request) -> tuple[PaymentPayload, PaymentRequirements] | JSONResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict) or body.get("x402Version") != 2:
                raise ValueError("x402Version must be 2")
            payload = PaymentPayload.model_validate(body.get("paymentPayload"))
            requirements = PaymentRequirements.model_validate(body.get("paymentRequirements"))
        except (ValueError, ValidationError) as exc:
            return JSONResponse({"error": f"invalid facilitator request: {exc}"}, status_code=400)
        return payload, requirements

    @app.get("/supported")
    async def supported() -> JSONResponse:
        return _answer(facilitator.get_supported())

    @app.post("/verify")
    async def verify(request: Request) -> JSONResponse:
        parsed = await _parse(request)
        if isinstance(parsed, JSONResponse):
            return parsed
        return _answer(await asyncio.to_thread(facilitator.verify, *parsed))

    @app.post("/settle")
    async def settle(request: Request) -> JSONResponse:
        parsed = await _parse(request)
        if isinstance(parsed, JSONResponse):
            return parsed
        return _answer(await asyncio.to_thread(facilitator.settle, *parsed))

    return app
