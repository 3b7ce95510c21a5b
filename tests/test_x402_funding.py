"""Escrow funding through x402 v2: the SDK's own client pays ``POST /api/workflows/{id}/escrow/fund``.

Every payment is signed by a freshly generated key (``eth_account.Account.create()``) and settled by the
SDK's facilitator over SafeRun's token ledger (``local``), or over HTTP (``remote``). Each test runs on
SQLite and on PostgreSQL (the ``db`` fixture) and checks what moved: token balances, the escrow position,
the ledger's lock postings, the payment rows and the audit trail.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from x402 import x402Client
from x402.http import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    decode_payment_required_header,
    decode_payment_response_header,
    encode_payment_signature_header,
)
from x402.http.clients.httpx import x402AsyncTransport
from x402.mechanisms.evm.asset_cache import reset_asset_contract_cache
from x402.mechanisms.evm.constants import (
    ERR_AUTHORIZATION_VALUE_MISMATCH,
    ERR_FAILED_TO_VERIFY_SIGNATURE,
    ERR_INSUFFICIENT_BALANCE,
    ERR_INVALID_SIGNATURE,
    ERR_NONCE_ALREADY_USED,
    ERR_RECIPIENT_MISMATCH,
    ERR_VALID_AFTER_FUTURE,
    ERR_VALID_BEFORE_EXPIRED,
)
from x402.mechanisms.evm.eip712 import build_typed_data_for_signing
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.mechanisms.evm.exact.eip3009_utils import (
    diagnose_eip3009_simulation_failure,
    verify_eip3009_transfer_event,
)
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.mechanisms.evm.types import ExactEIP3009Authorization, ExactEIP3009Payload, TypedDataField
from x402.mechanisms.evm.utils import create_nonce
from x402.schemas import PaymentPayload, PaymentRequirements

from saferun.api.server import create_app
from saferun.core.identity import IdentityService
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain import ledger as rules
from saferun.domain.states import WorkflowState
from saferun.errors import Conflict, InvalidAmount, InvalidInput
from saferun.payments import records
from saferun.payments.facilitator import facilitator_app, local_facilitator
from saferun.payments.funding import FundingService, payer_party
from saferun.payments.ledger_signer import LedgerEvmSigner, balance_of, mint
from saferun.payments.settings import LOCAL_PAY_TO, X402Settings
from saferun.storage import ledger as book
from saferun.storage.database import Database
from saferun.storage.schema import utcnow
from tests.helpers import make_config
from tests.serving import serve_app

SETTINGS = X402Settings()  # local facilitator, Base Sepolia USDC, the local platform address
ESCROW = 12_500_000  # 12.50 USDC = 12.50 in SafeRun micro-units


# --- fixtures and helpers -------------------------------------------------------------------------------


class Env:
    def __init__(self, db: Database, auth: str = "open") -> None:
        self.db = db
        self.orch = WorkflowOrchestrator(database=db)
        self.app = create_app(self.orch, auth=auth, sweep=False)
        self.app.state.x402_funding = FundingService(db, SETTINGS)
        self.transport = httpx.ASGITransport(app=self.app)

    def workflow(self, escrow: str = "12.50", funding: str = "x402") -> str:
        config = make_config(escrow=escrow, funding=funding)
        self.orch.initialize_workflow(config)
        return config.workflow_id

    def payer(self, amount: int = ESCROW) -> LocalAccount:
        account: LocalAccount = Account.create()
        if amount:
            mint(self.db, account.address, amount, network=SETTINGS.network, asset=SETTINGS.asset)
        return account

    def balance(self, address: str) -> int:
        return balance_of(self.db, address, network=SETTINGS.network, asset=SETTINGS.asset)

    def plain(self, **headers: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self.transport, base_url="http://test", timeout=None, headers=headers
        )

    def paying(self, account: LocalAccount, **headers: str) -> httpx.AsyncClient:
        transport = x402AsyncTransport(sdk_client(account), transport=self.transport)
        return httpx.AsyncClient(transport=transport, base_url="http://test", timeout=None, headers=headers)

    def locks(self, wf: str) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            return [e for e in book.entries(conn, wf) if e["kind"] == rules.KIND_LOCK]

    def payments(self, wf: str) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            return records.for_workflow(conn, wf)

    def claim(self, wf: str) -> Any:
        with self.db.read() as conn:
            return records.claim_of(conn, wf)


@pytest.fixture
def env(db: Database) -> Env:
    return Env(db)


@pytest.fixture(autouse=True)
def _fresh_asset_cache() -> Iterator[None]:
    """The SDK caches "the token has bytecode" process-wide; leave no answer of ours to other tests."""
    reset_asset_contract_cache()
    yield
    reset_asset_contract_cache()


def sdk_client(account: LocalAccount) -> x402Client:
    """The official client with a fresh key; escrows are larger than its default $1 cap per payment."""
    client = x402Client()
    register_exact_evm_client(client, account)
    client.set_spend_controls({"max_amount_per_payment": "$1000"})
    return client


def fund_url(wf: str) -> str:
    return f"/api/workflows/{wf}/escrow/fund"


async def requirements(env: Env, wf: str) -> tuple[PaymentRequirements, Any]:
    async with env.plain() as http:
        r = await http.post(fund_url(wf))
    assert r.status_code == 402, r.text
    required = decode_payment_required_header(r.headers[PAYMENT_REQUIRED_HEADER])
    return required.accepts[0], required.resource


async def signed_header(env: Env, wf: str, account: LocalAccount) -> str:
    """What the SDK's client sends for this workflow, built by the SDK's client itself."""
    async with env.plain() as http:
        r = await http.post(fund_url(wf))
    payload = await sdk_client(account).create_payment_payload(
        decode_payment_required_header(r.headers[PAYMENT_REQUIRED_HEADER])
    )
    return encode_payment_signature_header(payload)


def tampered_header(
    account: LocalAccount,
    req: PaymentRequirements,
    resource: Any,
    *,
    signer: LocalAccount | None = None,
    value: int | None = None,
    to: str | None = None,
    valid_after: int = 0,
    valid_before: int | None = None,
    signature: str | None = None,
) -> str:
    """An EIP-3009 payment for ``req`` with one term changed, signed with the SDK's EIP-712 helpers."""
    authorization = ExactEIP3009Authorization(
        from_address=account.address,
        to=to or req.pay_to,
        value=str(int(req.amount) if value is None else value),
        valid_after=str(valid_after),
        valid_before=str(valid_before if valid_before is not None else int(time.time()) + 300),
        nonce=create_nonce(),
    )
    domain, types, primary, message = build_typed_data_for_signing(
        authorization, SETTINGS.chain_id, req.asset, req.extra["name"], req.extra["version"]
    )
    fields = {
        name: [TypedDataField(name=f["name"], type=f["type"]) for f in fs] for name, fs in types.items()
    }
    if signature is None:
        raw = EthAccountSigner(signer or account).sign_typed_data(domain, fields, primary, message)
        signature = "0x" + raw.hex()
    inner = ExactEIP3009Payload(authorization=authorization, signature=signature).to_dict()
    return encode_payment_signature_header(
        PaymentPayload(x402_version=2, payload=inner, accepted=req, resource=resource)
    )


async def pay(env: Env, wf: str, header: str) -> httpx.Response:
    async with env.plain() as http:
        return await http.post(fund_url(wf), headers={"PAYMENT-SIGNATURE": header})


def receipt(response: httpx.Response) -> Any:
    return decode_payment_response_header(response.headers[PAYMENT_RESPONSE_HEADER])


# --- the protocol ---------------------------------------------------------------------------------------


async def test_unpaid_request_gets_402_with_the_workflows_escrow_as_requirements(env: Env) -> None:
    wf = env.workflow(escrow="12.50")
    async with env.plain() as http:
        r = await http.post(fund_url(wf))
    assert r.status_code == 402
    required = decode_payment_required_header(r.headers[PAYMENT_REQUIRED_HEADER])
    assert required.x402_version == 2
    (req,) = required.accepts
    assert req.scheme == "exact"
    assert req.network == "eip155:84532"
    assert req.amount == "12500000"  # 12.50 USDC in 6-decimal units = the escrow in micro-units
    assert req.asset == SETTINGS.asset
    assert req.pay_to == LOCAL_PAY_TO
    assert req.extra["paymentFlow"] == "upfront"
    assert (req.extra["name"], req.extra["version"]) == ("USDC", "2")
    assert required.resource is not None and required.resource.url.endswith(fund_url(wf))
    detail = r.json()["detail"]
    assert detail["reason"] == "payment_required"
    assert detail["amount_micro"] == ESCROW and detail["pay_to"] == LOCAL_PAY_TO
    assert env.orch.escrow_position(wf).locked == 0


async def test_the_sdk_client_funds_the_escrow_once_and_the_workflow_can_start(env: Env) -> None:
    wf = env.workflow()
    account = env.payer(20_000_000)
    with pytest.raises(Conflict) as refused:
        env.orch.start_execution(wf)
    assert refused.value.fields["reason"] == "escrow_not_funded"

    async with env.paying(account) as http:
        r = await http.post(fund_url(wf))
    assert r.status_code == 200, r.text
    settled = receipt(r)
    assert settled.success and settled.payer.lower() == account.address.lower()
    assert settled.network == "eip155:84532" and settled.transaction.startswith("0x")
    body = r.json()
    assert body["funded"] is True and body["replayed"] is False
    assert body["amount_micro"] == ESCROW and body["transaction"] == settled.transaction

    # the token moved once, from the payer to the platform
    assert env.balance(account.address) == 20_000_000 - ESCROW
    assert env.balance(LOCAL_PAY_TO) >= ESCROW
    # the escrow is locked once, from the payer's x402 funding source
    position = env.orch.escrow_position(wf)
    assert (position.locked, position.held) == (ESCROW, ESCROW)
    (lock,) = env.locks(wf)
    assert lock["idempotency_key"] == rules.lock_key(wf)
    assert sorted((leg["account"], leg["amount_micro"]) for leg in lock["legs"]) == sorted(
        [(rules.funding_account(payer_party(account.address)), -ESCROW), (rules.escrow_account(wf), ESCROW)]
    )
    (payment,) = env.payments(wf)
    assert payment["status"] == records.CREDITED and payment["tx_hash"] == settled.transaction
    assert payment["payer"] == account.address.lower() and payment["ledger_txn_id"] == lock["txn_id"]
    assert env.claim(wf) is None
    funded = [e for e in env.orch.audit_events(wf) if e["kind"] == "escrow_funded"]
    assert len(funded) == 1 and funded[0]["payload"]["transaction"] == settled.transaction

    started = env.orch.start_execution(wf)
    assert started.current_state is WorkflowState.EXECUTING


async def test_the_same_payment_sent_again_is_answered_with_its_receipt_and_moves_nothing(env: Env) -> None:
    wf = env.workflow()
    account = env.payer()
    header = await signed_header(env, wf, account)
    first = await pay(env, wf, header)
    assert first.status_code == 200, first.text
    again = await pay(env, wf, header)
    assert again.status_code == 200, again.text
    assert again.json()["replayed"] is True
    assert receipt(again).transaction == receipt(first).transaction
    assert env.balance(account.address) == 0
    assert len(env.locks(wf)) == 1 and env.orch.escrow_position(wf).locked == ESCROW
    assert len(env.payments(wf)) == 1


async def test_payments_are_listed_per_workflow(env: Env) -> None:
    wf = env.workflow()
    account = env.payer()
    async with env.paying(account) as http:
        assert (await http.post(fund_url(wf))).status_code == 200
    async with env.plain() as http:
        listed = (await http.get(f"/api/workflows/{wf}/escrow/payments")).json()
        missing = await http.get("/api/workflows/wf_nope/escrow/payments")
    (payment,) = listed["payments"]
    assert payment["status"] == "credited" and payment["amount_micro"] == ESCROW
    assert payment["payer"] == account.address.lower()
    assert missing.status_code == 404


# --- verification failures: 402 naming the reason, nothing moved ---------------------------------------


def _wrong_amount(account: LocalAccount, req: PaymentRequirements, resource: Any) -> str:
    return tampered_header(account, req, resource, value=int(req.amount) - 1)


def _expired(account: LocalAccount, req: PaymentRequirements, resource: Any) -> str:
    return tampered_header(account, req, resource, valid_before=int(time.time()) - 60)


def _not_yet_valid(account: LocalAccount, req: PaymentRequirements, resource: Any) -> str:
    return tampered_header(account, req, resource, valid_after=int(time.time()) + 3600)


def _signed_by_another_key(account: LocalAccount, req: PaymentRequirements, resource: Any) -> str:
    return tampered_header(account, req, resource, signer=Account.create())


def _garbage_signature(account: LocalAccount, req: PaymentRequirements, resource: Any) -> str:
    return tampered_header(account, req, resource, signature="0x" + "ab" * 65)  # 65 bytes, impossible v


def _wrong_recipient(account: LocalAccount, req: PaymentRequirements, resource: Any) -> str:
    return tampered_header(account, req, resource, to=Account.create().address)


def _honest(account: LocalAccount, req: PaymentRequirements, resource: Any) -> str:
    return tampered_header(account, req, resource)


@pytest.mark.parametrize(
    ("make", "balance", "reason"),
    [
        (_wrong_amount, ESCROW, ERR_AUTHORIZATION_VALUE_MISMATCH),
        (_expired, ESCROW, ERR_VALID_BEFORE_EXPIRED),
        (_not_yet_valid, ESCROW, ERR_VALID_AFTER_FUTURE),
        (_signed_by_another_key, ESCROW, ERR_INVALID_SIGNATURE),
        (_garbage_signature, ESCROW, ERR_FAILED_TO_VERIFY_SIGNATURE),
        (_wrong_recipient, ESCROW, ERR_RECIPIENT_MISMATCH),
        (_honest, ESCROW - 1, ERR_INSUFFICIENT_BALANCE),
    ],
    ids=[
        "wrong_amount",
        "expired",
        "not_yet_valid",
        "bad_signature",
        "garbage_signature",
        "wrong_recipient",
        "insufficient_balance",
    ],
)
async def test_a_payment_the_facilitator_refuses_is_a_402_naming_the_reason(
    env: Env, make: Any, balance: int, reason: str
) -> None:
    wf = env.workflow()
    account = env.payer(balance)
    req, resource = await requirements(env, wf)
    r = await pay(env, wf, make(account, req, resource))
    assert r.status_code == 402, r.text
    detail = r.json()["detail"]
    assert detail["reason"] == reason
    assert detail["error"] == "PaymentRejected" and reason in detail["message"]
    assert receipt(r).success is False and receipt(r).error_reason == reason
    # nothing moved, nothing was recorded, and the workflow is free for a good payment
    assert env.balance(account.address) == balance
    assert env.orch.escrow_position(wf).locked == 0 and env.locks(wf) == []
    assert env.payments(wf) == [] and env.claim(wf) is None
    good = env.payer()
    async with env.paying(good) as http:
        assert (await http.post(fund_url(wf))).status_code == 200
    assert env.orch.escrow_position(wf).locked == ESCROW


async def test_a_used_authorization_replayed_to_another_workflow_is_refused(env: Env) -> None:
    first, second = env.workflow(), env.workflow()  # same escrow, but the requirements name the workflow
    account = env.payer(2 * ESCROW)
    header = await signed_header(env, first, account)
    assert (await pay(env, first, header)).status_code == 200
    r = await pay(env, second, header)
    assert r.status_code == 402, r.text
    assert r.json()["detail"]["reason"] == "payment_for_another_workflow"
    assert env.balance(account.address) == ESCROW  # paid once
    assert env.orch.escrow_position(second).locked == 0 and env.payments(second) == []
    assert env.claim(second) is None


async def test_a_payment_signed_for_another_workflow_of_the_same_amount_funds_nothing(env: Env) -> None:
    """Issue 9: the requirements and the resource name the workflow; a payment made (and not yet used)
    for workflow A, sent to workflow B of the same escrow, is 402 with the reason, before it settles."""
    a, b = env.workflow(), env.workflow()
    req_a, _ = await requirements(env, a)
    req_b, resource_b = await requirements(env, b)
    assert req_a.extra["workflowId"] == a and req_b.extra["workflowId"] == b
    assert (req_a.amount, req_a.pay_to) == (req_b.amount, req_b.pay_to)  # otherwise identical
    account = env.payer(ESCROW)
    for_a = await signed_header(env, a, account)
    r = await pay(env, b, for_a)
    assert r.status_code == 402, r.text
    detail = r.json()["detail"]
    assert detail["reason"] == "payment_for_another_workflow" and repr(a) in detail["message"]
    assert PAYMENT_REQUIRED_HEADER in r.headers  # B's own requirements, to pay again properly
    again = decode_payment_required_header(r.headers[PAYMENT_REQUIRED_HEADER]).accepts[0]
    assert again.extra["workflowId"] == b
    # requirements naming B but a resource naming A: refused too
    resource_a = resource_b.model_copy(update={"url": str(resource_b.url).replace(fund_url(b), fund_url(a))})
    mixed = await pay(env, b, tampered_header(account, req_b, resource_a))
    assert mixed.status_code == 402 and mixed.json()["detail"]["reason"] == "payment_for_another_workflow"
    unnamed = req_b.model_copy(update={"extra": {k: v for k, v in req_b.extra.items() if k != "workflowId"}})
    bare = await pay(env, b, tampered_header(account, unnamed, resource_b))
    assert bare.status_code == 402 and "made for no workflow" in bare.json()["detail"]["message"]
    assert env.balance(account.address) == ESCROW  # nothing settled
    for wf in (a, b):
        assert env.orch.escrow_position(wf).locked == 0 and env.payments(wf) == [] and env.claim(wf) is None
    assert (await pay(env, a, for_a)).status_code == 200  # the payment still funds the workflow it was for


async def test_a_second_payment_for_a_funded_workflow_is_refused_before_it_settles(env: Env) -> None:
    wf = env.workflow()
    first, second = env.payer(), env.payer()
    async with env.paying(first) as http:
        assert (await http.post(fund_url(wf))).status_code == 200
    r = await pay(env, wf, await _fresh_header(env, wf, second))
    assert r.status_code == 409, r.text
    assert r.json()["detail"]["reason"] == "already_funded"
    assert PAYMENT_RESPONSE_HEADER not in r.headers  # it never reached the facilitator
    assert env.balance(second.address) == ESCROW
    assert len(env.locks(wf)) == 1 and len(env.payments(wf)) == 1


async def _fresh_header(env: Env, wf: str, account: LocalAccount) -> str:
    """A valid payment matching ``wf``'s requirements, even when ``wf`` no longer answers 402."""
    req, resource = await twin_requirements(env, wf)
    return tampered_header(account, req, resource)


async def twin_requirements(env: Env, wf: str) -> tuple[PaymentRequirements, Any]:
    """``wf``'s requirements when it no longer answers 402 (a funded workflow answers 409): a workflow
    with the same escrow's, renamed to ``wf`` (they differ only in the workflow they name)."""
    twin = env.workflow()
    req, resource = await requirements(env, twin)
    req = req.model_copy(update={"extra": {**req.extra, "workflowId": wf}})
    resource = resource.model_copy(update={"url": str(resource.url).replace(fund_url(twin), fund_url(wf))})
    return req, resource


# --- bad input ------------------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("header", "needle"),
    [
        ("%%% not base64 %%%", "base64"),
        (_b64("not json"), "base64-encoded JSON"),
        (_b64("[1, 2]"), "JSON object"),
        (_b64(json.dumps({"x402Version": 1, "scheme": "exact"})), "x402Version must be 2"),
        (_b64(json.dumps({"x402Version": 2, "payload": {}})), "accepted"),
    ],
)
async def test_a_malformed_payment_header_is_a_422_naming_it_and_nothing_moves(
    env: Env, header: str, needle: str
) -> None:
    wf = env.workflow()
    r = await pay(env, wf, header)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["field"] == "PAYMENT-SIGNATURE" and needle in detail["message"]
    assert env.orch.escrow_position(wf).locked == 0 and env.claim(wf) is None


async def test_malformed_authorization_fields_are_named(env: Env) -> None:
    wf = env.workflow()
    account = env.payer()
    good = json.loads(base64.b64decode(await signed_header(env, wf, account)))
    for path, bad_value, needle in [
        (("authorization", "nonce"), "0x1234", "nonce"),
        (("authorization", "value"), "12.5", "value"),
        (("authorization", "from"), "bob", "from"),
        (("signature",), 42, "signature"),
    ]:
        broken = json.loads(json.dumps(good))
        target = broken["payload"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = bad_value
        r = await pay(env, wf, _b64(json.dumps(broken)))
        assert r.status_code == 422, r.text
        assert r.json()["detail"]["field"] == "PAYMENT-SIGNATURE" and needle in r.json()["detail"]["message"]
    async with env.plain() as http:
        v1 = await http.post(fund_url(wf), headers={"X-PAYMENT": _b64("{}")})
    assert v1.status_code == 422 and v1.json()["detail"]["field"] == "X-PAYMENT"
    assert env.balance(account.address) == ESCROW and env.orch.escrow_position(wf).locked == 0


async def test_funding_rules(env: Env) -> None:
    ledger_funded = env.workflow(funding="ledger")
    no_escrow = env.workflow(escrow="0")
    async with env.plain() as http:
        assert (await http.post(fund_url("wf_missing"))).status_code == 404
        r = await http.post(fund_url(ledger_funded))
        assert r.status_code == 409 and r.json()["detail"]["reason"] == "not_x402_funded"
        r = await http.post(fund_url(no_escrow))
        assert r.status_code == 409 and r.json()["detail"]["reason"] == "no_escrow"
    # an x402 workflow locks nothing at creation; a ledger one locks at once, as before
    assert env.orch.escrow_position(ledger_funded).locked == ESCROW
    assert env.orch.escrow_position(env.workflow()).locked == 0


async def test_with_api_keys_only_the_poster_may_fund(db: Database) -> None:
    ids = IdentityService(db)
    _, poster = ids.create_identity_with_key("poster", roles=["poster"])
    _, reviewer = ids.create_identity_with_key("reviewer", roles=["supervisor"])
    env = Env(db, auth="keys")
    wf = env.workflow()
    account = env.payer()
    async with env.paying(account) as anonymous:
        assert (await anonymous.post(fund_url(wf))).status_code == 401
    async with env.paying(account, authorization=f"Bearer {reviewer.api_key}") as http:
        r = await http.post(fund_url(wf))
    assert r.status_code == 403 and r.json()["detail"]["rule"] == "poster_role"
    assert env.balance(account.address) == ESCROW
    async with env.paying(account, authorization=f"Bearer {poster.api_key}") as http:
        r = await http.post(fund_url(wf))
    assert r.status_code == 200, r.text
    funded = [e for e in env.orch.audit_events(wf) if e["kind"] == "escrow_funded"]
    assert funded[0]["actor"] == "poster"


# --- concurrency: one payment credits once, a second payment never settles -------------------------------


async def test_concurrent_duplicates_of_one_signed_payment_credit_once(env: Env) -> None:
    wf = env.workflow()
    account = env.payer(5 * ESCROW)
    header = await signed_header(env, wf, account)
    answers = await asyncio.gather(*(pay(env, wf, header) for _ in range(6)))
    fresh = [a for a in answers if a.status_code == 200 and not a.json()["replayed"]]
    assert len(fresh) == 1, [a.text for a in answers]
    for a in answers:
        assert a.status_code in (200, 409), a.text
        if a.status_code == 409:
            assert a.json()["detail"]["reason"] == "payment_in_progress"
        else:
            assert receipt(a).transaction == receipt(fresh[0]).transaction
    assert env.balance(account.address) == 4 * ESCROW  # debited once
    assert len(env.locks(wf)) == 1 and env.orch.escrow_position(wf).locked == ESCROW
    assert len(env.payments(wf)) == 1 and env.claim(wf) is None
    # once the dust settles, every retry of that header gets the original receipt
    late = await pay(env, wf, header)
    assert late.status_code == 200 and late.json()["replayed"] is True


async def test_concurrent_different_payments_fund_once_and_the_loser_keeps_its_money(env: Env) -> None:
    wf = env.workflow()
    payers = [env.payer() for _ in range(4)]
    req, resource = await requirements(env, wf)
    headers = [tampered_header(p, req, resource) for p in payers]
    answers = await asyncio.gather(*(pay(env, wf, h) for h in headers))
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409], [a.text for a in answers]
    for a in answers:
        if a.status_code == 409:
            assert a.json()["detail"]["reason"] in ("funding_in_progress", "already_funded")
            assert PAYMENT_RESPONSE_HEADER not in a.headers
    assert sorted(env.balance(p.address) for p in payers) == [0, ESCROW, ESCROW, ESCROW]
    assert len(env.locks(wf)) == 1 and len(env.payments(wf)) == 1


async def test_a_live_claim_refuses_other_payments_and_an_expired_one_is_taken_over(env: Env) -> None:
    wf = env.workflow()
    stranger = records.PaymentIdentity.of(
        SETTINGS.network, SETTINGS.asset, Account.create().address, create_nonce()
    )
    with env.db.transaction() as conn:
        records.add_claim(conn, wf, stranger, utcnow() + timedelta(hours=1))
    account = env.payer()
    header = await _fresh_header(env, wf, account)
    r = await pay(env, wf, header)
    assert r.status_code == 409 and r.json()["detail"]["reason"] == "funding_in_progress"
    assert env.balance(account.address) == ESCROW
    with env.db.transaction() as conn:
        records.drop_claim(conn, wf)
        records.add_claim(conn, wf, stranger, utcnow() - timedelta(seconds=1))
    r = await pay(env, wf, header)
    assert r.status_code == 200, r.text
    expired = [e for e in env.orch.audit_events(wf) if e["kind"] == "x402_claim_expired"]
    assert len(expired) == 1 and expired[0]["payload"]["payer"] == stranger.payer


async def test_a_payment_that_settles_for_a_workflow_already_funded_is_recorded_and_surfaced(
    env: Env,
) -> None:
    """The race the claim exists to prevent, forced: the payment settles, then finds the escrow locked."""
    wf = env.workflow()
    first, late = env.payer(), env.payer()
    async with env.paying(first) as http:
        assert (await http.post(fund_url(wf))).status_code == 200
    req, resource = await twin_requirements(env, wf)
    payload = PaymentPayload.model_validate_json(base64.b64decode(tampered_header(late, req, resource)))
    service: FundingService = env.app.state.x402_funding
    settled = await service.facilitator.settle(payload, req)
    assert settled.success
    identity = records.PaymentIdentity.of(
        req.network, req.asset, late.address, payload.payload["authorization"]["nonce"]
    )
    answer = await asyncio.to_thread(service._credit, wf, identity, ESCROW, settled, "test")
    assert answer.status == 409
    assert answer.body["detail"]["reason"] == "already_funded"
    assert answer.body["detail"]["transaction"] == settled.transaction
    assert PAYMENT_RESPONSE_HEADER in answer.headers
    statuses = sorted(p["status"] for p in env.payments(wf))
    assert statuses == [records.CREDITED, records.UNAPPLIED]
    assert len(env.locks(wf)) == 1 and env.orch.escrow_position(wf).locked == ESCROW
    assert [e["kind"] for e in env.orch.audit_events(wf)].count("x402_payment_unapplied") == 1


async def test_a_payment_settled_by_an_attempt_that_stopped_before_crediting_is_credited_on_retry(
    env: Env,
) -> None:
    """A process settled the payment, then died before its credit transaction: the local ledger shows the
    authorization paid to the platform, so sending the same header again credits it (once)."""
    wf = env.workflow()
    account = env.payer()
    header = await signed_header(env, wf, account)
    payload = PaymentPayload.model_validate_json(base64.b64decode(header))
    service: FundingService = env.app.state.x402_funding
    settled = await service.facilitator.settle(payload, payload.accepted)  # ... and then the crash
    assert settled.success and env.balance(account.address) == 0
    assert env.orch.escrow_position(wf).locked == 0
    r = await pay(env, wf, header)
    assert r.status_code == 200, r.text
    assert receipt(r).transaction == settled.transaction
    assert env.balance(account.address) == 0  # paid once
    assert env.orch.escrow_position(wf).locked == ESCROW and len(env.locks(wf)) == 1
    (funded,) = [e for e in env.orch.audit_events(wf) if e["kind"] == "escrow_funded"]
    assert funded["payload"]["recovered"] is True
    again = await pay(env, env.workflow(), header)  # the same payment elsewhere: made for another workflow
    assert again.status_code == 402 and again.json()["detail"]["reason"] == "payment_for_another_workflow"


# --- the token ledger behind the local facilitator -------------------------------------------------------


def test_mint_and_balances(db: Database) -> None:
    account = Account.create()
    assert balance_of(db, account.address, network=SETTINGS.network, asset=SETTINGS.asset) == 0
    mint(db, account.address, 7, network=SETTINGS.network, asset=SETTINGS.asset)
    mint(db, account.address.lower(), 5, network=SETTINGS.network, asset=SETTINGS.asset)
    assert balance_of(db, account.address, network=SETTINGS.network, asset=SETTINGS.asset) == 12
    assert balance_of(db, account.address, network="eip155:1", asset=SETTINGS.asset) == 0
    with pytest.raises(InvalidInput):
        mint(db, "not-an-address", 1, network=SETTINGS.network, asset=SETTINGS.asset)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidAmount):
            mint(db, account.address, bad, network=SETTINGS.network, asset=SETTINGS.asset)  # type: ignore[arg-type]


async def test_the_ledger_signer_answers_like_the_token_contract(env: Env) -> None:
    """Receipts carry the ERC-20 Transfer the SDK checks, and the SDK's Multicall3 diagnosis works."""
    signer = LedgerEvmSigner(env.db, SETTINGS)
    assert signer.get_code(SETTINGS.asset) and signer.get_code(Account.create().address) == b""
    assert signer.get_chain_id() == 84532
    wf = env.workflow()
    account = env.payer()
    header = await signed_header(env, wf, account)
    r = await pay(env, wf, header)
    tx = receipt(r).transaction
    mined = signer.wait_for_transaction_receipt(tx)
    assert mined.status == 1
    assert verify_eip3009_transfer_event(
        mined.logs, SETTINGS.asset, from_address=account.address, to=LOCAL_PAY_TO, value=ESCROW
    )
    authorization = PaymentPayload.model_validate_json(base64.b64decode(header)).payload["authorization"]
    auth = ExactEIP3009Authorization(
        from_address=authorization["from"],
        to=authorization["to"],
        value=authorization["value"],
        valid_after=authorization["validAfter"],
        valid_before=authorization["validBefore"],
        nonce=authorization["nonce"],
    )
    diagnosis = diagnose_eip3009_simulation_failure(signer, SETTINGS.asset, auth, ESCROW, "USDC", "2")
    assert diagnosis == ERR_NONCE_ALREADY_USED
    broke = env.payer(1)
    auth.from_address, auth.nonce = broke.address, create_nonce()
    assert diagnose_eip3009_simulation_failure(signer, SETTINGS.asset, auth, ESCROW, "USDC", "2") == (
        ERR_INSUFFICIENT_BALANCE
    )


# --- the remote facilitator, over real HTTP -------------------------------------------------------------


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` on a free loopback port under uvicorn, in a thread; yields its base URL."""
    with serve_app(app) as url:
        yield url


async def test_remote_facilitator_configured_by_url_over_real_http(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SafeRun (uvicorn) asks a facilitator served over HTTP (uvicorn) to verify and settle."""
    with serving(facilitator_app(local_facilitator(db, SETTINGS))) as facilitator_url:
        monkeypatch.setenv("SAFERUN_X402_FACILITATOR", "remote")
        monkeypatch.setenv("SAFERUN_X402_FACILITATOR_URL", facilitator_url)
        monkeypatch.setenv("SAFERUN_X402_PAY_TO", LOCAL_PAY_TO)
        orch = WorkflowOrchestrator(database=db)
        app = create_app(orch, auth="open", sweep=False)  # the funding service is built from the settings
        with serving(app) as saferun_url:
            config = make_config(escrow="12.50", funding="x402")
            orch.initialize_workflow(config)
            wf = config.workflow_id
            account: LocalAccount = Account.create()
            mint(db, account.address, ESCROW, network=SETTINGS.network, asset=SETTINGS.asset)
            broke: LocalAccount = Account.create()

            transport = x402AsyncTransport(sdk_client(broke))
            async with httpx.AsyncClient(transport=transport, base_url=saferun_url, timeout=None) as http:
                refused = await http.post(fund_url(wf))
            assert refused.status_code == 402, refused.text
            assert refused.json()["detail"]["reason"] == ERR_INSUFFICIENT_BALANCE

            transport = x402AsyncTransport(sdk_client(account))
            async with httpx.AsyncClient(transport=transport, base_url=saferun_url, timeout=None) as http:
                r = await http.post(fund_url(wf))
            assert r.status_code == 200, r.text
            assert receipt(r).success and receipt(r).payer.lower() == account.address.lower()

            service = app.state.x402_funding
            assert service.settings.facilitator == "remote"
            assert service.settings.facilitator_url == facilitator_url
    assert balance_of(db, account.address, network=SETTINGS.network, asset=SETTINGS.asset) == 0
    assert orch.escrow_position(wf).locked == ESCROW
    assert orch.start_execution(wf).current_state is WorkflowState.EXECUTING


async def test_an_unreachable_remote_facilitator_is_a_503_and_nothing_moves(db: Database) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # bound, never listening: connections are refused; its password must never reach the error body
    dead = f"http://facuser:s3cret-pw@127.0.0.1:{sock.getsockname()[1]}"
    try:
        env = Env(db)
        env.app.state.x402_funding = FundingService(
            db, X402Settings(facilitator="remote", facilitator_url=dead, pay_to=LOCAL_PAY_TO)
        )
        wf = env.workflow()
        async with env.plain() as http:
            r = await http.post(fund_url(wf))
        assert r.status_code == 503, r.text
        assert r.json()["detail"]["error"] == "FacilitatorUnavailable"
        assert "s3cret-pw" not in r.text and "facuser" not in r.text
        assert env.orch.escrow_position(wf).locked == 0
    finally:
        sock.close()


def test_settings_are_checked() -> None:
    with pytest.raises(InvalidInput) as bad:
        X402Settings(facilitator="remote")
    assert bad.value.field == "SAFERUN_X402_FACILITATOR_URL"
    with pytest.raises(InvalidInput) as bad:
        X402Settings(network="base-sepolia")
    assert bad.value.field == "SAFERUN_X402_NETWORK"
    with pytest.raises(InvalidInput) as bad:
        X402Settings(pay_to="0x0000000000000000000000000000000000000000")
    assert bad.value.field == "SAFERUN_X402_PAY_TO"
    assert X402Settings(pay_to=LOCAL_PAY_TO.lower()).pay_to == LOCAL_PAY_TO  # EIP-55 on the wire


async def test_a_workflow_created_over_rest_for_x402_waits_until_paid(env: Env) -> None:
    """The whole poster flow over HTTP: create with ``funding="x402"``, see start refused, pay, start."""
    body = {
        "name": "paid by x402",
        "checkpoint_names": ["one"],
        "escrow_amount": "7.25",
        "poster_id": "poster",
        "executor_id": "agent",
        "supervisor_id": "reviewer",
        "funding": "x402",
    }
    async with env.plain() as http:
        created = await http.post("/api/workflows", json=body)
        assert created.status_code == 201, created.text
        assert "fund its escrow" in created.json()["message"]
        wf = created.json()["workflow_id"]
        early = await http.post(f"/api/workflows/{wf}/start")
        assert early.status_code == 409 and "escrow_not_funded" in early.text
        bad = await http.post("/api/workflows", json={**body, "funding": "cash"})
        assert bad.status_code == 422 and "funding" in bad.text
    account = env.payer(10_000_000)
    async with env.paying(account) as http:
        paid = await http.post(fund_url(wf))
        assert paid.status_code == 200, paid.text
        started = await http.post(f"/api/workflows/{wf}/start")
        assert started.status_code == 200 and started.json()["status"] == "executing"
    assert env.balance(account.address) == 10_000_000 - 7_250_000


async def test_unearned_escrow_goes_back_to_the_payer_not_to_someone_else(env: Env) -> None:
    """A failed x402-funded workflow refunds the payer's funding account, the one the escrow came from."""
    wf = env.workflow()
    account = env.payer(20_000_000)
    async with env.paying(account) as http:
        assert (await http.post(fund_url(wf))).status_code == 200
    env.orch.start_execution(wf)
    env.orch.fail_workflow(wf, "the agent gave up before any milestone")
    payer_account = rules.funding_account(payer_party(account.address))
    refund = next(e for e in env.orch.ledger_entries(wf) if e["kind"] == "refund")
    assert {(leg["account"], leg["amount_micro"]) for leg in refund["legs"]} == {
        (rules.escrow_account(wf), -ESCROW),
        (payer_account, ESCROW),
    }
    assert env.orch.escrow_position(wf).held == 0


async def test_a_workflow_on_a_remote_platform_owes_it_the_lock_once_funded(env: Env) -> None:
    """The credit enqueues the platform's lock_escrow in its transaction, as a ledger lock does."""
    from saferun.storage import outbox
    from saferun.storage.schema import workflows

    wf = env.workflow()
    with env.db.transaction() as conn:  # as an orchestrator with a remote X402Integration would have made it
        conn.execute(
            workflows.update().where(workflows.c.workflow_id == wf).values(platform_url="https://p.example")
        )
    account = env.payer(20_000_000)
    async with env.paying(account) as http:
        assert (await http.post(fund_url(wf))).status_code == 200
    with env.db.read() as conn:
        owed = [(r["operation"], r["idempotency_key"]) for r in outbox.for_workflow(conn, wf)]
    assert owed == [("lock_escrow", f"lock:{wf}")]
