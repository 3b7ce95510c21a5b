"""What every call of the embedded x402 platform shares: argument checks, the caller's scope, one
transaction per call (idempotent under a key), and the party checks.

``EmbeddedCore`` is the base of the per-primitive mixins (``embedded_jobs``, ``embedded_escrow``,
``embedded_records``, ``embedded_marketplace``) that ``saferun.platform.embedded.EmbeddedPlatform`` is
composed from; it lives apart so each mixin can import it without importing ``embedded`` (which imports
them). The module docstring of ``saferun.platform.embedded`` explains idempotency, escrow and identities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, RowMapping, select

from saferun.core import parties
from saferun.domain import platform_policy as rules_of
from saferun.domain.canonical import check_json
from saferun.domain.money import format_micro, to_micro
from saferun.domain.platform_policy import Terms, on_platform
from saferun.domain.policy import Caller, Refusal, Role
from saferun.errors import Forbidden, InvalidInput, NotFound, SafeRunError
from saferun.platform import scope
from saferun.storage import identities as id_store
from saferun.storage import jobs as job_store
from saferun.storage import platform_requests as requests
from saferun.storage.database import Database
from saferun.storage.schema import workflows

ESCROW_ID_PREFIX = "escrow_"
JOB_STATUSES = ("open", "running", "completed", "failed", "cancelled")
MAX_WORKFLOW_ID = 64
MAX_TEXT = 2000


def escrow_id_for(workflow_id: str) -> str:
    return ESCROW_ID_PREFIX + workflow_id


def _text(value: Any, field: str, max_len: int, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise InvalidInput(field, "must be a non-empty string")
    if len(value) > max_len:
        raise InvalidInput(field, f"must be at most {max_len} characters")
    return value


def _workflow_id(value: Any, field: str = "workflow_id") -> str:
    value = _text(value, field, MAX_WORKFLOW_ID, required=True)
    if ":" in value or any(ord(ch) < 32 for ch in value):
        raise InvalidInput(field, f"{value!r} must not contain ':' or control characters")
    return value


def _json_dict(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(field, f"must be a JSON object, got {type(value).__name__}")
    check_json(value, field)
    return value


def _amount(value: Any, field: str) -> int:
    return to_micro(value, field, allow_zero=False)


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def _enforce(refusal: Refusal | None) -> None:
    if refusal is not None:
        raise Forbidden(refusal.rule, refusal.message)


class EmbeddedCore:
    """The shared private methods of ``EmbeddedPlatform`` (see ``saferun.platform.embedded``)."""

    # set by ``EmbeddedPlatform.__init__``
    db: Database
    strict_identities: bool
    caller: Caller | None

    # --- the caller's scope (saferun.domain.platform_policy) --------------------------------------------

    def _may(self, operation: str) -> None:
        if self.caller is not None:
            _enforce(rules_of.may_call(self.caller, operation))

    def _workflow_in_scope(self, conn: Connection, workflow_id: str, unknown: SafeRunError) -> Terms | None:
        """The workflow's terms; ``unknown`` (raised) when it is unknown or not the caller's platform's."""
        terms = scope.workflow_terms(conn, workflow_id)
        if self.caller is None:
            return terms
        if terms is None or not on_platform(self.caller, terms.platform_id):
            raise unknown
        return terms

    def _job_in_scope(self, conn: Connection, job_id: str) -> tuple[RowMapping, Terms | None]:
        job = job_store.get(conn, job_id)
        if self.caller is None:
            return job, None
        owner, terms = scope.job_owner(conn, job)
        if not on_platform(self.caller, owner):
            raise NotFound(f"job {job_id!r} does not exist", job_id=job_id)
        return job, terms

    def _workflow_guard(self, workflow_id: str, action: str) -> Callable[[Connection], object]:
        """The caller's own platform's workflow, not one the engine runs; unknown or foreign is 404."""

        def guard(conn: Connection) -> None:
            if self.caller is None:
                return
            unknown = NotFound(
                f"workflow {workflow_id!r} is unknown to the platform", workflow_id=workflow_id
            )
            self._changes(self._workflow_in_scope(conn, workflow_id, unknown), action)

        return guard

    def _changes(self, terms: Terms | None, action: str) -> None:
        """A caller changes nothing of a workflow this server's engine runs (rule ``engine_workflow``)."""
        if self.caller is not None and terms is not None:
            _enforce(rules_of.engine_refusal(terms, action))

    # --- plumbing ---------------------------------------------------------------------------------------

    def _mutate(
        self,
        operation: str,
        arguments: dict[str, Any],
        idempotency_key: str | None,
        work: Callable[[Connection], dict[str, Any]],
        guard: Callable[[Connection], object] | None = None,
    ) -> dict[str, Any]:
        """Run ``work`` in one transaction; under a key, replay an earlier answer instead of redoing it.

        ``guard`` (the caller's scope) runs first, so a key never replays a foreign call's answer."""
        self._may(operation)
        key = None if idempotency_key is None else requests.validate_key(idempotency_key)
        digest = requests.request_hash(operation, arguments) if key is not None else ""
        with self.db.transaction() as conn:
            if guard is not None:
                guard(conn)
            if key is not None:
                prior = requests.replay(conn, key, operation, digest)
                if prior is not None:
                    return prior
            result = work(conn)
            if key is not None:
                requests.record(conn, key, operation, digest, result)
            return result

    def _party(self, conn: Connection, user_id: Any, field: str, role: Role | None, *, strict: bool) -> str:
        """``user_id`` if well-formed and (when ``strict``) registered, enabled and holding ``role``."""
        user_id = id_store.validate_identity_id(user_id, field)
        if not strict:
            return user_id
        row = (
            conn.execute(select(id_store.identities).where(id_store.identities.c.identity_id == user_id))
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(f"{field}: identity {user_id!r} does not exist", field=field, identity_id=user_id)
        if row["disabled"]:
            raise InvalidInput(field, f"identity {user_id!r} is disabled")
        if role is not None and role not in id_store.roles_of(row):
            raise InvalidInput(field, f"identity {user_id!r} does not have the {role.value} role")
        return user_id

    # --- shared by Identity and Marketplace -------------------------------------------------------------

    @staticmethod
    def _require_worked_on(conn: Connection, supervisor: str, workflow_id: str) -> None:
        row = conn.execute(select(workflows).where(workflows.c.workflow_id == workflow_id)).mappings().first()
        if not parties.worked_on(conn, supervisor, row, workflow_id):
            raise Forbidden(
                "supervised_workflow",
                f"{supervisor!r} did not supervise workflow {workflow_id!r} (not assigned to it and decided "
                "none of its approvals), so it cannot be rated or scored for it",
            )

    @staticmethod
    def _profile_dict(profile: Any, reputation: float) -> dict[str, Any]:
        return {
            "supervisor_id": profile["supervisor_id"],
            "reputation": reputation,
            "specialties": list(profile["specialties"]),
            "available": bool(profile["available"]),
            "price_per_approval": format_micro(profile["price_per_approval_micro"]),
            "price_per_approval_micro": int(profile["price_per_approval_micro"]),
        }
