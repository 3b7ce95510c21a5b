"""What a funding request carries and what it is asked to pay: the x402 side of ``POST .../escrow/fund``.

- the ``PAYMENT-SIGNATURE`` header, parsed and checked (``parse_payment_header``) into the SDK's
  ``PaymentPayload`` and the authorization it spends (``identity_of``);
- the payment requirements: the SDK route table (``routes``), the workflow's price with the workflow it
  funds in ``extra.workflowId`` (``price_of``), and the SDK ``HTTPAdapter`` over the request (``_Adapter``);
- the binding of a payment to its workflow (``bound_elsewhere``).

Separate from ``funding`` because none of it touches the database or the facilitator: it is pure
translation between HTTP and the SDK's types, and ``FundingService`` composes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError
from sqlalchemy import RowMapping
from x402.http import PaymentOption, RouteConfig
from x402.http.utils import safe_base64_decode
from x402.schemas import AssetAmount, PaymentPayload

from saferun.errors import InvalidInput
from saferun.payments.records import PaymentIdentity
from saferun.payments.settings import X402Settings, is_address

HEADER = "PAYMENT-SIGNATURE"
_ROUTE_PATH = "/escrow/fund"  # what the SDK's route table matches; the resource URL is the real one
_UINT = re.compile(r"^[0-9]{1,78}$")
_NONCE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_SIGNATURE = re.compile(r"^0x(?:[0-9a-fA-F]{2})+$")


WORKFLOW_EXTRA = "workflowId"  # in the payment requirements' ``extra``: the workflow they fund


def routes(settings: X402Settings) -> dict[str, RouteConfig]:
    """The SDK's route table: the one funding route, priced per request by the adapter's ``price``."""
    option = PaymentOption(
        scheme="exact",
        pay_to=settings.pay_to,
        price=lambda context: context.adapter.price,
        network=settings.network,
        max_timeout_seconds=settings.max_timeout_seconds,
        extra={"paymentFlow": "upfront"},  # settle before anything is credited
    )
    route = RouteConfig(
        accepts=option,
        description="Fund the escrow of a SafeRun workflow",
        mime_type="application/json",
    )
    return {f"POST {_ROUTE_PATH}": route}


def price_of(row: RowMapping, settings: X402Settings) -> AssetAmount:
    """The workflow's escrow in the token's units, with the token's EIP-712 domain and the workflow."""
    return AssetAmount(
        amount=str(row["escrow_micro"]),
        asset=settings.asset,
        # the requirements name the workflow they fund (``extra.workflowId``): a payment made for
        # another workflow of the same amount no longer matches them
        extra={
            "name": settings.asset_name,
            "version": settings.asset_version,
            WORKFLOW_EXTRA: row["workflow_id"],
        },
    )


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
