"""A ``FacilitatorEvmSigner`` whose "chain" is SafeRun's own ledger of token balances.

The x402 SDK's exact-EVM facilitator (``ExactEvmFacilitatorScheme``) does every offline check itself
(scheme, network, recipient, amount, validity window, EIP-712 signature) and asks its signer only what a
chain would answer. ``LedgerEvmSigner`` answers those questions from ``x402_token_transfers`` the way the
USDC contract (FiatToken v2) would on a real chain, so the SDK's code runs unchanged and with no network:

- ``get_code``: bytecode at the token and at Multicall3, none anywhere else (every payer is an EOA);
- ``read_contract(token, "transferWithAuthorization", ...)``: a simulation that reverts with USDC's own
  revert strings (``FiatTokenV2: authorization is not yet valid`` / ``is expired`` / ``is used or
  canceled`` / ``invalid signature``, ``ERC20: transfer amount exceeds balance``), which the SDK maps to
  its ``invalid_exact_evm_*`` reasons; ``balanceOf``, ``name``, ``version``, ``decimals`` and
  ``authorizationState`` as views;
- ``read_contract(Multicall3, "tryAggregate", ...)``: the SDK's fallback diagnosis, decoding each call's
  calldata and answering it like the token would (an ``Error(string)`` payload for a revert);
- ``write_contract(token, "transferWithAuthorization", ...)``: the same checks, then the transfer, in one
  database transaction; the transaction hash is derived from the authorization (one authorization, one
  hash) and ``wait_for_transaction_receipt`` returns a receipt whose log is the matching ERC-20
  ``Transfer`` event the SDK checks before it reports success.

Test and demo balances come from ``mint(db, address, amount)``; ``balance_of(db, address)`` reads one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from eth_abi import decode, encode
from eth_utils import keccak, to_checksum_address
from x402.mechanisms.evm.constants import (
    AUTHORIZATION_STATE_ABI,
    BALANCE_OF_ABI,
    MULTICALL3_ADDRESS,
    NAME_ABI,
    TRANSFER_WITH_AUTHORIZATION_BYTES_ABI,
    TRANSFER_WITH_AUTHORIZATION_VRS_ABI,
    TX_STATUS_SUCCESS,
    VERSION_ABI,
)
from x402.mechanisms.evm.eip712 import hash_eip3009_authorization
from x402.mechanisms.evm.exact.eip3009_utils import ERC20_TRANSFER_EVENT_TOPIC
from x402.mechanisms.evm.types import (
    ExactEIP3009Authorization,
    TransactionReceipt,
    TypedDataDomain,
    TypedDataField,
)
from x402.mechanisms.evm.verify import verify_eoa_signature, verify_typed_data_strict

from saferun.errors import InvalidAmount, InvalidInput
from saferun.payments import token_ledger
from saferun.payments.settings import LOCAL_FACILITATOR, ZERO_ADDRESS, X402Settings, is_address, normalize
from saferun.storage.database import Database

DECIMALS_ABI = [
    {
        "inputs": [],
        "name": "decimals",
        "outputs": [{"name": "", "type": "uint8"}],
        "stateMutability": "view",
        "type": "function",
    }
]
# every token function the ledger answers, for decoding Multicall3 calldata by selector
_TOKEN_ABIS = (
    TRANSFER_WITH_AUTHORIZATION_VRS_ABI,
    TRANSFER_WITH_AUTHORIZATION_BYTES_ABI,
    BALANCE_OF_ABI,
    NAME_ABI,
    VERSION_ABI,
    AUTHORIZATION_STATE_ABI,
    DECIMALS_ABI,
)
_ERROR_STRING = bytes.fromhex("08c379a0")  # Error(string)
_CODE = bytes.fromhex("6080604052")  # any non-empty bytecode: "a contract lives here"

NOT_YET_VALID = "FiatTokenV2: authorization is not yet valid"
EXPIRED = "FiatTokenV2: authorization is expired"
USED = "FiatTokenV2: authorization is used or canceled"
INVALID_SIGNATURE = "FiatTokenV2: invalid signature"
EXCEEDS_BALANCE = "ERC20: transfer amount exceeds balance"
TO_ZERO = "ERC20: transfer to the zero address"


class ContractRevert(Exception):
    """What a reverted ``eth_call``/transaction raises; the message carries the contract's reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"execution reverted: {reason}")
        self.reason = reason


class TransactionNotFound(Exception):
    pass


class LedgerEvmSigner:
    """``FacilitatorEvmSigner`` over ``x402_token_transfers`` for one token on one network."""

    def __init__(
        self,
        db: Database,
        settings: X402Settings | None = None,
        *,
        facilitator_address: str = LOCAL_FACILITATOR,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.settings = settings or X402Settings.from_env()
        self.network = self.settings.network
        self.token = normalize(self.settings.asset)
        self.facilitator_address = to_checksum_address(facilitator_address)
        self.clock = clock

    # ------------------------------------------------------------------ chain facts
    def get_addresses(self) -> list[str]:
        return [self.facilitator_address]

    def get_chain_id(self) -> int:
        return self.settings.chain_id

    def get_code(self, address: str) -> bytes:
        return _CODE if normalize(address) in (self.token, normalize(MULTICALL3_ADDRESS)) else b""

    def get_balance(self, address: str, token_address: str) -> int:
        if normalize(token_address) != self.token:
            return 0
        with self.db.read() as conn:
            return token_ledger.balance(conn, self.network, self.token, address)

    # ------------------------------------------------------------------ calls
    def read_contract(self, address: str, abi: list[dict[str, Any]], function_name: str, *args: Any) -> Any:
        target = normalize(address)
        if target == normalize(MULTICALL3_ADDRESS) and function_name == "tryAggregate":
            require_success, calls = args
            return self._try_aggregate(bool(require_success), calls)
        if target != self.token:
            raise ContractRevert(f"no contract at {address} on the SafeRun token ledger")
        with self.db.read() as conn:
            return self._token_call(conn, function_name, args, write=False)

    def write_contract(
        self,
        address: str,
        abi: list[dict[str, Any]],
        function_name: str,
        *args: Any,
        data_suffix: str | None = None,
    ) -> str:
        if normalize(address) != self.token or function_name != "transferWithAuthorization":
            raise ContractRevert(f"{function_name} on {address} is not supported by the SafeRun token ledger")
        with self.db.transaction() as conn:
            return str(self._token_call(conn, function_name, args, write=True))

    def send_transaction(self, to: str, data: bytes) -> str:
        # only used to deploy ERC-4337 smart wallets (ERC-6492), which the local ledger does not host
        raise ContractRevert("the SafeRun token ledger does not deploy contracts")

    def wait_for_transaction_receipt(self, tx_hash: str) -> TransactionReceipt:
        with self.db.read() as conn:
            row = token_ledger.by_hash(conn, tx_hash)
        if row is None:
            raise TransactionNotFound(f"transaction {tx_hash} is not on the SafeRun token ledger")
        log = {
            "address": to_checksum_address(row["asset"]),
            "topics": [ERC20_TRANSFER_EVENT_TOPIC, _topic(row["from_address"]), _topic(row["to_address"])],
            "data": "0x" + int(row["amount"]).to_bytes(32, "big").hex(),
        }
        return TransactionReceipt(
            status=TX_STATUS_SUCCESS, block_number=int(row["id"]), tx_hash=row["tx_hash"], logs=[log]
        )

    def verify_typed_data(
        self,
        address: str,
        domain: TypedDataDomain,
        types: dict[str, list[TypedDataField]],
        primary_type: str,
        message: dict[str, Any],
        signature: bytes,
    ) -> bool:
        return verify_typed_data_strict(self, address, domain, types, primary_type, message, signature)

    # ------------------------------------------------------------------ the token contract
    def _token_call(self, conn: Any, function_name: str, args: tuple[Any, ...], *, write: bool) -> Any:
        if function_name == "transferWithAuthorization":
            return self._transfer_with_authorization(conn, args, write=write)
        if function_name == "balanceOf":
            return token_ledger.balance(conn, self.network, self.token, args[0])
        if function_name == "authorizationState":
            authorizer, nonce = args
            return (
                token_ledger.by_authorization(conn, self.network, self.token, authorizer, _hex32(nonce))
                is not None
            )
        if function_name == "name":
            return self.settings.asset_name
        if function_name == "version":
            return self.settings.asset_version
        if function_name == "decimals":
            return 6
        raise ContractRevert(f"function {function_name} is not supported by the SafeRun token ledger")

    def _transfer_with_authorization(self, conn: Any, args: tuple[Any, ...], *, write: bool) -> str | None:
        """FiatToken v2's ``transferWithAuthorization``, both overloads (v, r, s) and (bytes signature)."""
        if len(args) == 9:
            sender, to, value, valid_after, valid_before, nonce, v, r, s = args
            signature = bytes(r) + bytes(s) + bytes([int(v)])
        elif len(args) == 7:
            sender, to, value, valid_after, valid_before, nonce, signature = args
            signature = bytes(signature)
        else:
            raise ContractRevert("transferWithAuthorization: wrong number of arguments")
        value, valid_after, valid_before = int(value), int(valid_after), int(valid_before)
        nonce_hex = _hex32(nonce)
        now = int(self.clock())
        if now <= valid_after:
            raise ContractRevert(NOT_YET_VALID)
        if now >= valid_before:
            raise ContractRevert(EXPIRED)
        if write:
            token_ledger.debit_lock(conn, self.network, self.token, sender)
        if token_ledger.by_authorization(conn, self.network, self.token, sender, nonce_hex) is not None:
            raise ContractRevert(USED)
        authorization = ExactEIP3009Authorization(
            from_address=sender,
            to=to,
            value=str(value),
            valid_after=str(valid_after),
            valid_before=str(valid_before),
            nonce=nonce_hex,
        )
        digest = hash_eip3009_authorization(
            authorization,
            self.settings.chain_id,
            to_checksum_address(self.token),
            self.settings.asset_name,
            self.settings.asset_version,
        )
        try:
            valid = len(signature) == 65 and verify_eoa_signature(digest, signature, sender)
        except ValueError:
            valid = False
        if not valid:
            raise ContractRevert(INVALID_SIGNATURE)
        if normalize(to) == ZERO_ADDRESS:
            raise ContractRevert(TO_ZERO)
        if value > token_ledger.balance(conn, self.network, self.token, sender):
            raise ContractRevert(EXCEEDS_BALANCE)
        if not write:
            return None
        tx_hash = authorization_tx_hash(self.network, self.token, sender, nonce_hex)
        inserted = token_ledger.insert(
            conn,
            tx_hash=tx_hash,
            network=self.network,
            asset=self.token,
            from_address=sender,
            to_address=to,
            amount=value,
            nonce=nonce_hex,
        )
        if inserted is None:  # a concurrent transaction consumed the same authorization first
            raise ContractRevert(USED)
        return tx_hash

    def _try_aggregate(self, require_success: bool, calls: Any) -> list[tuple[bool, bytes]]:
        out: list[tuple[bool, bytes]] = []
        with self.db.read() as conn:
            for target, call_data in calls:
                try:
                    if normalize(target) != self.token:
                        raise ContractRevert(f"no contract at {target} on the SafeRun token ledger")
                    function, inputs, outputs = _decode_call(bytes(call_data))
                    result = self._token_call(conn, function, inputs, write=False)
                    out.append((True, encode(outputs, [result]) if outputs else b""))
                except ContractRevert as revert:
                    if require_success:
                        raise
                    out.append((False, _ERROR_STRING + encode(["string"], [revert.reason])))
        return out


# --- balances for tests, demos and the CLI --------------------------------------------------------------


def mint(
    db: Database,
    address: str,
    amount: int,
    *,
    network: str | None = None,
    asset: str | None = None,
) -> str:
    """Credit ``amount`` atomic units (= micro-units for a 6-decimal token) to ``address`` on the local
    token ledger, as a Transfer from the zero address; returns the mint's transaction hash.

    ``network``/``asset`` default to the configured ones (``SAFERUN_X402_NETWORK``/``_ASSET``). Local
    ledger only: a remote facilitator settles on a real chain, where SafeRun cannot create money.
    """
    if not is_address(address):
        raise InvalidInput("address", f"must be a 0x-prefixed 20-byte address, got {address!r}")
    if normalize(address) == ZERO_ADDRESS:
        raise InvalidInput("address", "cannot mint to the zero address")
    if type(amount) is not int or amount <= 0:
        raise InvalidAmount("amount", f"must be a positive int of atomic units, got {amount!r}")
    net, token = _token(network, asset)
    tx_hash = "0x" + keccak(text=f"saferun-mint:{uuid.uuid4().hex}").hex()
    with db.transaction() as conn:
        # the zero address's balance is minus the supply; keep the supply within a BigInteger column
        if -token_ledger.balance(conn, net, token, ZERO_ADDRESS) + amount > token_ledger.INT64_MAX:
            raise InvalidAmount("amount", "the total supply would not fit in 64 bits")
        token_ledger.insert(
            conn,
            tx_hash=tx_hash,
            network=net,
            asset=token,
            from_address=ZERO_ADDRESS,
            to_address=address,
            amount=amount,
            nonce=None,
        )
    return tx_hash


def balance_of(db: Database, address: str, *, network: str | None = None, asset: str | None = None) -> int:
    """Atomic units ``address`` holds on the local token ledger (0 when it never received any)."""
    if not is_address(address):
        raise InvalidInput("address", f"must be a 0x-prefixed 20-byte address, got {address!r}")
    net, token = _token(network, asset)
    with db.read() as conn:
        return token_ledger.balance(conn, net, token, address)


def authorization_tx_hash(network: str, asset: str, authorizer: str, nonce: str) -> str:
    """The transaction hash of the transfer that consumes one authorization: derived, so unique."""
    text = f"saferun-transfer:{network}:{normalize(asset)}:{normalize(authorizer)}:{nonce.lower()}"
    return "0x" + keccak(text=text).hex()


def _token(network: str | None, asset: str | None) -> tuple[str, str]:
    if network is None or asset is None:
        configured = X402Settings.from_env()
        network = network or configured.network
        asset = asset or configured.asset
    if not is_address(asset):
        raise InvalidInput("asset", f"must be a 0x-prefixed 20-byte address, got {asset!r}")
    return network, normalize(asset)


def _topic(address: str) -> str:
    return "0x" + "00" * 12 + normalize(address)[2:]


def _hex32(nonce: Any) -> str:
    raw = (
        bytes(nonce) if isinstance(nonce, bytes | bytearray) else bytes.fromhex(str(nonce).removeprefix("0x"))
    )
    if len(raw) != 32:
        raise ContractRevert("nonce must be 32 bytes")
    return "0x" + raw.hex()


def _selector_table() -> dict[bytes, tuple[str, list[str], list[str]]]:
    table: dict[bytes, tuple[str, list[str], list[str]]] = {}
    for abi in _TOKEN_ABIS:
        for entry in abi:
            inputs = [item["type"] for item in entry["inputs"]]
            outputs = [item["type"] for item in entry["outputs"]]
            selector = keccak(text=f"{entry['name']}({','.join(inputs)})")[:4]
            table[selector] = (entry["name"], inputs, outputs)
    return table


_SELECTORS = _selector_table()


def _decode_call(call_data: bytes) -> tuple[str, tuple[Any, ...], list[str]]:
    found = _SELECTORS.get(call_data[:4])
    if found is None:
        raise ContractRevert(f"unknown function selector 0x{call_data[:4].hex()}")
    name, inputs, outputs = found
    try:
        args = tuple(decode(inputs, call_data[4:])) if inputs else ()
    except Exception as exc:
        raise ContractRevert(f"malformed calldata for {name}: {exc}") from None
    return name, args, outputs
