"""The embedded x402 platform: the seed's Jobs, Escrow, Artifacts, Identity and Marketplace calls on SafeRun's
database.

``EmbeddedPlatform(db)`` is what ``X402Integration`` delegates to when no ``X402_API_URL`` is set, and what
the server's ``/x402`` API serves (``saferun.api.platform``). It implements ``saferun.platform.base.Platform``
(Jobs, Escrow, Artifacts, Identity, Marketplace). Every method is one unit of work (one
``db.transaction()``), and answers a plain-JSON ``dict`` (or list, or bool) shaped like the seed's examples;
amounts are answered as decimal strings (``"90.00"``) next to exact integer micro-units (``"amount_micro"``),
never as floats.

**Idempotency.** Every mutating call takes an optional ``idempotency_key``. A repeat with the same key
and the same arguments answers the first call's result and changes nothing (``platform_requests``); the
same key with other arguments is ``IdempotencyConflict``. Escrow movements are also keyed in the ledger
itself (``x402:<key>``), and a workflow's lock always uses the engine's key ``lock:<workflow_id>``, so a
workflow's escrow is locked at most once whoever locks it.

**Escrow** lives on the engine's double-entry ledger: ``escrow_id`` is the engine's ``escrow_<workflow_id>``
and its money sits in the account ``escrow:<workflow_id>``. A lock draws from ``funding:<poster>``;
releases and splits pay ``wallet:<recipient>`` with postings of kind ``release``, so the engine's escrow
invariant (locked = released + refunded + held) keeps holding.

**Identities.** Parties must be registered identities with the role they act in (poster, executor,
supervisor): an unknown one is ``NotFound``, one without the role ``InvalidInput`` naming the argument.
``strict_identities=False`` skips those checks for jobs and escrow (open mode, where workflows name
people nobody registered); the marketplace always needs registered supervisors.

**Layout.** ``EmbeddedPlatform`` is composed of one mixin per primitive: ``embedded_jobs`` (Jobs),
``embedded_escrow`` (Escrow), ``embedded_records`` (Artifacts, Identity) and ``embedded_marketplace``
(Marketplace), over ``embedded_core`` (argument checks, the caller's scope, ``_mutate``, ``_party``). Import
the platform and its constants from this module.
"""

from __future__ import annotations

from saferun.domain.policy import Caller
from saferun.platform.embedded_core import (
    ESCROW_ID_PREFIX,
    JOB_STATUSES,
    MAX_TEXT,
    MAX_WORKFLOW_ID,
    EmbeddedCore,
    escrow_id_for,
)
from saferun.platform.embedded_escrow import EscrowCalls
from saferun.platform.embedded_jobs import JobCalls
from saferun.platform.embedded_marketplace import MarketplaceCalls
from saferun.platform.embedded_records import ArtifactCalls, IdentityCalls
from saferun.storage.database import Database

__all__ = [
    "ESCROW_ID_PREFIX",
    "JOB_STATUSES",
    "MAX_TEXT",
    "MAX_WORKFLOW_ID",
    "EmbeddedPlatform",
    "escrow_id_for",
]


class EmbeddedPlatform(JobCalls, EscrowCalls, ArtifactCalls, IdentityCalls, MarketplaceCalls, EmbeddedCore):
    """The x402 platform inside SafeRun's own database (see the module docstring).

    ``caller``: who is calling through the ``/x402`` API. With one, every call follows
    ``saferun.domain.platform_policy`` (the caller's own platform's workflows only, money only by the
    engine's rules, approval quality only from the outcome); a workflow or job outside the caller's scope
    answers exactly like an unknown one. Without one (the engine and in-process library use) the calls
    are the engine's own and are not scoped.
    """

    def __init__(self, db: Database, *, strict_identities: bool = True, caller: Caller | None = None) -> None:
        self.db = db
        self.strict_identities = strict_identities
        self.caller = caller

    async def close(self) -> None:
        """Nothing to release: the database handle is shared per process."""
