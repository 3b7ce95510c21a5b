"""The embedded platform's Marketplace calls: supervisor profiles, finding and assigning a workflow's
supervisor (four eyes: never its poster or executor), and rating supervisors.

One mixin of ``saferun.platform.embedded.EmbeddedPlatform``, apart because it is the one part that
matches parties to workflows (``saferun.core.parties``, ``saferun.storage.marketplace``); it always needs
registered supervisors, whatever ``strict_identities`` says.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select

from saferun.core import parties
from saferun.domain import ledger as rules
from saferun.domain.money import format_micro, to_micro
from saferun.domain.policy import Role
from saferun.domain.reputation import MAX_RATING, MIN_RATING
from saferun.errors import Conflict, Forbidden, InvalidInput, NotFound
from saferun.platform.embedded_core import MAX_TEXT, EmbeddedCore, _iso, _text, _workflow_id
from saferun.storage import jobs as job_store
from saferun.storage import marketplace as market
from saferun.storage.schema import ledger_legs, ledger_transactions, workflows


class MarketplaceCalls(EmbeddedCore):
    """Marketplace: ``register_supervisor``, ``find_supervisors``, ``request_supervisor``,
    ``assign_supervisor``, ``rate_supervisor``."""

    async def register_supervisor(
        self,
        supervisor_id: str,
        specialties: list[str],
        price_per_approval: Any,
        available: bool = True,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Create or replace a supervisor's marketplace profile (not a seed call: the CLI's and tests')."""
        if isinstance(specialties, str) or not isinstance(specialties, list | tuple) or not specialties:
            raise InvalidInput("specialties", "must be a non-empty list of workflow types")
        types = [_text(s, f"specialties[{i}]", 64, required=True) for i, s in enumerate(specialties)]
        price = to_micro(price_per_approval, "price_per_approval")
        if not isinstance(available, bool):
            raise InvalidInput("available", f"must be true or false, got {available!r}")

        def work(conn: Connection) -> dict[str, Any]:
            supervisor = self._party(conn, supervisor_id, "supervisor_id", Role.SUPERVISOR, strict=True)
            profile = market.upsert_profile(
                conn, supervisor, specialties=types, available=available, price_per_approval_micro=price
            )
            return self._profile_dict(profile, market.reputations(conn, [supervisor])[supervisor])

        args = {
            "supervisor_id": supervisor_id,
            "specialties": sorted(set(types)),
            "price": price,
            "available": available,
        }
        return self._mutate("register_supervisor", args, idempotency_key, work)

    def _find(
        self, conn: Connection, workflow_type: str, min_reputation: float, exclude: set[str] | None = None
    ) -> list[dict[str, Any]]:
        found = parties.candidates(conn, workflow_type, min_reputation, exclude or ())
        return [self._profile_dict(profile, reputation) for profile, reputation in found]

    async def find_supervisors(self, workflow_type: str, min_reputation: float = 0.0) -> list[dict[str, Any]]:
        """Available supervisors for ``workflow_type`` with at least ``min_reputation``, best first."""
        workflow_type = _text(workflow_type, "workflow_type", 64, required=True)
        if isinstance(min_reputation, bool) or not isinstance(min_reputation, int | float | Decimal):
            raise InvalidInput("min_reputation", f"must be a number between 0 and 1, got {min_reputation!r}")
        if not 0 <= float(min_reputation) <= 1:
            raise InvalidInput("min_reputation", f"must be between 0 and 1, got {min_reputation!r}")
        self._may("find_supervisors")
        with self.db.read() as conn:
            return self._find(conn, workflow_type, float(min_reputation))

    @staticmethod
    def _workflow_parties(conn: Connection, workflow_id: str) -> tuple[bool, set[str], str | None]:
        """``(known, poster/executor ids, engine's supervisor)`` of a workflow, from every place that names
        them: the engine's workflow row, the platform's jobs, and the escrow lock's funding leg."""
        parties: set[str] = set()
        known = False
        supervisor = None
        row = conn.execute(select(workflows).where(workflows.c.workflow_id == workflow_id)).mappings().first()
        if row is not None:
            known = True
            parties |= {row["poster_id"], row["executor_id"]}
            supervisor = row["supervisor_id"]
        for job in job_store.for_workflow(conn, workflow_id):
            known = True
            executor = (job["data"] or {}).get("executor_id")
            if executor:
                parties.add(executor)
        lock_legs = conn.execute(
            select(ledger_legs.c.account)
            .join(ledger_transactions, ledger_transactions.c.txn_id == ledger_legs.c.txn_id)
            .where(ledger_transactions.c.idempotency_key == rules.lock_key(workflow_id))
        ).all()
        for (account,) in lock_legs:
            known = True
            if account.startswith(rules.FUNDING_PREFIX):
                parties.add(account[len(rules.FUNDING_PREFIX) :])
        return known, parties, supervisor

    async def request_supervisor(
        self, supervisor_id: str, workflow_id: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Assign ``supervisor_id`` to a workflow that has none (four eyes: never its poster or executor)."""
        workflow_id = _workflow_id(workflow_id)

        def work(conn: Connection) -> dict[str, Any]:
            supervisor = self._party(conn, supervisor_id, "supervisor_id", Role.SUPERVISOR, strict=True)
            profile = market.get_profile(conn, supervisor)
            if profile is None:
                raise NotFound(
                    f"supervisor {supervisor!r} has no marketplace profile", supervisor_id=supervisor
                )
            known, named, engine_supervisor = self._workflow_parties(conn, workflow_id)
            if not known:
                raise NotFound(
                    f"workflow {workflow_id!r} is unknown to the platform", workflow_id=workflow_id
                )
            assignment = market.get_assignment(conn, workflow_id)
            current = assignment["supervisor_id"] if assignment is not None else engine_supervisor
            if current is not None and current != supervisor:
                raise Conflict(
                    f"workflow {workflow_id!r} already has supervisor {current!r}",
                    workflow_id=workflow_id,
                    supervisor_id=current,
                )
            if supervisor in named:
                raise Forbidden(
                    "four_eyes",
                    f"{supervisor!r} posts or executes workflow {workflow_id!r} and cannot supervise it",
                )
            if assignment is None:
                if not profile["available"]:
                    raise Conflict(f"supervisor {supervisor!r} is not available", supervisor_id=supervisor)
                parties.record_assignment(conn, workflow_id, supervisor, "saferun:marketplace")
                assignment = market.get_assignment(conn, workflow_id)
            return {
                "workflow_id": workflow_id,
                "supervisor_id": supervisor,
                "status": "assigned",
                "price_per_approval": format_micro(profile["price_per_approval_micro"]),
                "assigned_at": _iso(assignment["assigned_at"]) if assignment is not None else None,
            }

        args = {"supervisor_id": supervisor_id, "workflow_id": workflow_id}
        guard = self._workflow_guard(workflow_id, "assigns its supervisor")
        return self._mutate("request_supervisor", args, idempotency_key, work, guard)

    async def assign_supervisor(
        self,
        workflow_id: str,
        workflow_type: str,
        min_reputation: float = 0.0,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Automatic assignment for a workflow that names no supervisor: the best eligible one.

        Eligible means what ``find_supervisors`` lists, minus the workflow's poster and executor. A
        workflow that already has a supervisor keeps it (the answer names it); none eligible is
        ``NotFound``.
        """
        workflow_id = _workflow_id(workflow_id)
        workflow_type = _text(workflow_type, "workflow_type", 64, required=True)
        if isinstance(min_reputation, bool) or not isinstance(min_reputation, int | float | Decimal):
            raise InvalidInput("min_reputation", f"must be a number between 0 and 1, got {min_reputation!r}")

        def work(conn: Connection) -> dict[str, Any]:
            known, named, engine_supervisor = self._workflow_parties(conn, workflow_id)
            if not known:
                raise NotFound(
                    f"workflow {workflow_id!r} is unknown to the platform", workflow_id=workflow_id
                )
            assignment = market.get_assignment(conn, workflow_id)
            current = assignment["supervisor_id"] if assignment is not None else engine_supervisor
            if current is None:
                candidates = self._find(conn, workflow_type, float(min_reputation), exclude=named)
                if not candidates:
                    raise NotFound(
                        f"no available supervisor for {workflow_type!r} may supervise workflow "
                        f"{workflow_id!r}",
                        workflow_id=workflow_id,
                        workflow_type=workflow_type,
                    )
                current = candidates[0]["supervisor_id"]
                parties.record_assignment(conn, workflow_id, current, "saferun:marketplace")
            return {"workflow_id": workflow_id, "supervisor_id": current, "status": "assigned"}

        args = {
            "workflow_id": workflow_id,
            "workflow_type": workflow_type,
            "min": repr(float(min_reputation)),
        }
        guard = self._workflow_guard(workflow_id, "assigns its supervisor")
        return self._mutate("assign_supervisor", args, idempotency_key, work, guard)

    async def rate_supervisor(
        self,
        supervisor_id: str,
        workflow_id: str,
        rating: int,
        review: str = "",
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One rating (1-5) per supervisor and workflow; it moves the supervisor's reputation."""
        workflow_id = _workflow_id(workflow_id)
        if isinstance(rating, bool) or not isinstance(rating, int) or not MIN_RATING <= rating <= MAX_RATING:
            raise InvalidInput(
                "rating", f"must be a whole number from {MIN_RATING} to {MAX_RATING}, got {rating!r}"
            )
        review = _text(review, "review", MAX_TEXT)

        def work(conn: Connection) -> dict[str, Any]:
            supervisor = self._party(conn, supervisor_id, "supervisor_id", Role.SUPERVISOR, strict=True)
            self._require_worked_on(conn, supervisor, workflow_id)
            existing = market.get_rating(conn, supervisor, workflow_id)
            if existing is None:
                market.add_rating(conn, supervisor, workflow_id, rating, review)
            elif existing["rating"] != rating or existing["review"] != review:
                raise Conflict(
                    f"supervisor {supervisor!r} was already rated for workflow {workflow_id!r}",
                    supervisor_id=supervisor,
                    workflow_id=workflow_id,
                )
            return {
                "supervisor_id": supervisor,
                "workflow_id": workflow_id,
                "rating": rating,
                "review": review,
                "reputation": market.reputations(conn, [supervisor])[supervisor],
            }

        args = {
            "supervisor_id": supervisor_id,
            "workflow_id": workflow_id,
            "rating": rating,
            "review": review,
        }
        guard = self._workflow_guard(workflow_id, "takes its poster's rating")
        return self._mutate("rate_supervisor", args, idempotency_key, work, guard)
