"""Escrow funding through x402 v2 payments (docs/x402-funding.md).

- ``settings``: ``X402Settings`` from ``SAFERUN_X402_*`` (network, token, payTo, local/remote facilitator).
- ``token_ledger`` / ``ledger_signer``: the local facilitator's token balances and the SDK
  ``FacilitatorEvmSigner`` over them; ``mint`` and ``balance_of`` for tests, demos and the CLI.
- ``facilitator``: the SDK facilitator, local (in-process) or remote (HTTP), and ``facilitator_app`` to
  serve one over HTTP.
- ``funding``: ``FundingService``, the credit-once service behind ``POST /api/workflows/{id}/escrow/fund``.
- ``records``: the rows of settled payments and of in-flight funding claims.
"""

from saferun.payments.ledger_signer import LedgerEvmSigner, balance_of, mint
from saferun.payments.settings import X402Settings

__all__ = ["LedgerEvmSigner", "X402Settings", "balance_of", "mint"]
