"""Escrow funding through x402 v2 payments (docs/x402-funding.md).

- ``settings``: ``X402Settings`` from ``SAFERUN_X402_*`` (network, token, payTo, local/remote facilitator).
- ``token_ledger`` / ``ledger_signer``: the local facilitator's token balances and the SDK
  ``FacilitatorEvmSigner`` over them; ``mint`` and ``balance_of`` for tests, demos and the CLI.
- ``facilitator``: the SDK facilitator, local (in-process) or remote (HTTP), and ``facilitator_app`` to
  serve one over HTTP.
- ``funding``: ``FundingService``, the credit-once service behind ``POST /api/workflows/{id}/escrow/fund``.
  Its steps: ``funding_request`` (the payment header and requirements), ``funding_bookkeeping`` (precheck,
  claim and credit, in the database), ``funding_answers`` (what the caller is told).
- ``records``: the rows of settled payments and of in-flight funding claims.
"""


from __future__ import annotations

from typing import TYPE_CHECKING, Any

from saferun.payments.settings import X402Settings

if TYPE_CHECKING:
    from saferun.payments.ledger_signer import LedgerEvmSigner, balance_of, mint

__all__ = ["LedgerEvmSigner", "X402Settings", "balance_of", "mint"]

_LAZY = {"LedgerEvmSigner", "balance_of", "mint"}


def __getattr__(name: str) -> Any:
    """Load ``ledger_signer`` (and the x402 EVM stack, ~0.5 s) on first use, not on ``import saferun``."""
    if name in _LAZY:
        from saferun.payments import ledger_signer

        return getattr(ledger_signer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
