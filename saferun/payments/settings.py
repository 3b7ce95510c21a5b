"""What an x402 escrow payment looks like here: network, token, recipient, facilitator (from the environment).

===================================  =============================================================
``SAFERUN_X402_FACILITATOR``         ``local`` (default): the SDK's facilitator in-process, settling on
                                     SafeRun's own token ledger (no network). ``remote``: the SDK's HTTP
                                     facilitator client at ``SAFERUN_X402_FACILITATOR_URL``.
``SAFERUN_X402_FACILITATOR_URL``     base URL of the remote facilitator (``/verify``, ``/settle``,
                                     ``/supported`` below it); required for ``remote``.
``SAFERUN_X402_NETWORK``             CAIP-2 network, default ``eip155:84532`` (Base Sepolia).
``SAFERUN_X402_ASSET``               the EIP-3009 token, default Base Sepolia USDC
                                     ``0x036CbD53842c5426634e7929541eC2318f3dCF7e``.
``SAFERUN_X402_ASSET_NAME``          its EIP-712 domain name (default ``USDC``) ...
``SAFERUN_X402_ASSET_VERSION``       ... and version (default ``2``).
``SAFERUN_X402_PAY_TO``              the platform address escrow payments go to. Optional for ``local``
                                     (a fixed, documented local address, ``LOCAL_PAY_TO``); required
                                     for ``remote``, where real money moves.
``SAFERUN_X402_MAX_TIMEOUT_SECONDS`` how long a signed authorization may take to settle (default 300).
===================================  =============================================================

The token must have 6 decimals (like USDC): one atomic unit is one SafeRun micro-unit, so the amount a
workflow asks for is exactly its ``escrow_micro``, with no conversion and no rounding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from saferun.config import Settings, get_settings
from saferun.errors import InvalidInput

FACILITATORS = ("local", "remote")
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
# Fixed, public addresses for the local (simulated) token ledger. Nobody holds their keys: on the local
# ledger money only moves through signed authorizations, and these two never sign one.
LOCAL_PAY_TO = "0x5Afe2000000000000000000000000000000e5C20"
LOCAL_FACILITATOR = "0x5AFe2000000000000000000000000000000fAC11"

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_NETWORK = re.compile(r"^eip155:[1-9][0-9]{0,18}$")


def is_address(value: object) -> bool:
    return isinstance(value, str) and _ADDRESS.fullmatch(value) is not None


def normalize(address: str) -> str:
    """The stored form of an address: lower-case hex (comparisons ignore EIP-55 checksums)."""
    return address.lower()


@dataclass(frozen=True, slots=True)
class X402Settings:
    facilitator: Literal["local", "remote"] = "local"
    facilitator_url: str | None = None
    network: str = "eip155:84532"
    asset: str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
    asset_name: str = "USDC"
    asset_version: str = "2"
    pay_to: str = LOCAL_PAY_TO
    max_timeout_seconds: int = 300

    def __post_init__(self) -> None:
        if self.facilitator not in FACILITATORS:
            raise InvalidInput(
                "SAFERUN_X402_FACILITATOR",
                f"must be one of {', '.join(FACILITATORS)}, not {self.facilitator!r}",
            )
        if self.facilitator == "remote" and not self.facilitator_url:
            raise InvalidInput(
                "SAFERUN_X402_FACILITATOR_URL", "is required when SAFERUN_X402_FACILITATOR=remote"
            )
        if self.facilitator_url and not self.facilitator_url.startswith(("http://", "https://")):
            raise InvalidInput(
                "SAFERUN_X402_FACILITATOR_URL", f"must be an http(s) URL, not {self.facilitator_url!r}"
            )
        if not _NETWORK.fullmatch(self.network):
            raise InvalidInput(
                "SAFERUN_X402_NETWORK", f"must be an EVM CAIP-2 id like eip155:84532, not {self.network!r}"
            )
        if not is_address(self.asset):
            raise InvalidInput(
                "SAFERUN_X402_ASSET", f"must be a 0x-prefixed 20-byte address, not {self.asset!r}"
            )
        if not is_address(self.pay_to) or normalize(self.pay_to) == ZERO_ADDRESS:
            raise InvalidInput(
                "SAFERUN_X402_PAY_TO", f"must be a non-zero 0x-prefixed address, not {self.pay_to!r}"
            )
        if not self.asset_name or not self.asset_version:
            raise InvalidInput("SAFERUN_X402_ASSET_NAME", "the token's EIP-712 name and version must be set")
        if not 10 <= self.max_timeout_seconds <= 86_400:
            raise InvalidInput("SAFERUN_X402_MAX_TIMEOUT_SECONDS", "must be between 10 and 86400 seconds")
        # EIP-55 form on the wire: what the SDK's clients sign and what explorers show
        from eth_utils import to_checksum_address  # on first use: eth_utils costs ~60 ms at import

        object.__setattr__(self, "asset", to_checksum_address(self.asset))
        object.__setattr__(self, "pay_to", to_checksum_address(self.pay_to))

    @property
    def chain_id(self) -> int:
        return int(self.network.split(":", 1)[1])

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> X402Settings:
        s = settings or get_settings()
        facilitator = s.x402_facilitator.strip().lower()
        if facilitator == "remote" and not s.x402_pay_to:
            raise InvalidInput(
                "SAFERUN_X402_PAY_TO", "is required with a remote facilitator: it is where real payments go"
            )
        return cls(
            facilitator=facilitator,  # type: ignore[arg-type]  # checked in __post_init__
            facilitator_url=s.x402_facilitator_url or None,
            network=s.x402_network.strip(),
            asset=s.x402_asset.strip(),
            asset_name=s.x402_asset_name,
            asset_version=s.x402_asset_version,
            pay_to=(s.x402_pay_to or LOCAL_PAY_TO).strip(),
            max_timeout_seconds=s.x402_max_timeout_seconds,
        )
