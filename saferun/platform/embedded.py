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
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, RowMapping, select

from saferun.core import parties
from saferun.domain import ledger as rules
from saferun.domain import platform_policy as rules_of
from saferun.domain.canonical import check_json
from saferun.domain.ids import new_id
from saferun.domain.ledger import position_from_entries
from saferun.domain.money import format_micro, to_micro
from saferun.domain.platform_policy import Terms, on_platform
from saferun.domain.policy import Caller, Refusal, Role, parse_roles
from saferun.domain.reputation import MAX_RATING, MIN_RATING
from saferun.errors import (
    ArtifactNotFound,
    Conflict,
    Forbidden,
    InvalidAmount,
    InvalidInput,
    NotFound,
    SafeRunError,
)
from saferun.platform import scope
from saferun.storage import audit
from saferun.storage import identities as id_store
from saferun.storage import jobs as job_store
from saferun.storage import ledger as book
from saferun.storage import marketplace as market
from saferun.storage import platform_requests as requests
from saferun.storage.database import Database
from saferun.storage.schema import ledger_legs, ledger_transactions, workflows
from saferun.storage.visibility import artifact_visible

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


class EmbeddedPlatform:
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

    # --- Jobs ---------------------------------------------------------------------------------------------

    def _job_dict(self, conn: Connection, job_id: str) -> dict[str, Any]:
        row = job_store.get(conn, job_id)
        return {
            "job_id": row["job_id"],
            "job_type": row["job_type"],
            "parent_job_id": row["parent_job_id"],
            "workflow_id": row["workflow_id"],
            "status": row["status"],
            "data": row["data"],
            "created_at": _iso(row["created_at"]),
            "updated_at": _iso(row["updated_at"]),
            "history": [
                {"status": e["status"], "reason": e["reason"], "at": _iso(e["at"])}
                for e in job_store.history(conn, job_id)
            ],
            "subjobs": [child["job_id"] for child in job_store.children(conn, job_id)],
        }

    async def create_job(
        self,
        job_type: str,
        job_data: dict[str, Any],
        escrow_amount: Any,
        executor_id: str,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        job_type = _text(job_type, "job_type", 64, required=True)
        job_data = _json_dict(job_data, "job_data")
        escrow_micro = to_micro(escrow_amount, "escrow_amount")
        wf = job_data.get("workflow_id")
        workflow_id = None if wf is None else _workflow_id(wf, "job_data.workflow_id")

        def guard(conn: Connection) -> None:
            if workflow_id is None or self.caller is None:
                return
            terms = scope.workflow_terms(conn, workflow_id)
            if terms is None:
                return
            if not on_platform(self.caller, terms.platform_id):
                raise Conflict(
                    f"job_data.workflow_id: {workflow_id!r} is already a workflow of another platform",
                    field="job_data.workflow_id",
                )
            self._changes(terms, "records its jobs")

        def work(conn: Connection) -> dict[str, Any]:
            executor = self._party(
                conn, executor_id, "executor_id", Role.EXECUTOR, strict=self.strict_identities
            )
            data: dict[str, Any] = {
                "workflow_id": workflow_id,
                "executor_id": executor,
                "escrow_amount": format_micro(escrow_micro),
                "escrow_micro": escrow_micro,
                "job_data": job_data,
            }
            if self.caller is not None:  # the job's (and its workflow's) platform: who may act on it
                owner = self.caller.identity_id if self.caller.has(Role.PLATFORM) else None
                data[scope.OWNER_FIELD] = owner
            job_id = job_store.create(conn, job_type=job_type, workflow_id=workflow_id, data=data)
            return self._job_dict(conn, job_id)

        args = {
            "job_type": job_type,
            "job_data": job_data,
            "escrow": escrow_micro,
            "executor_id": executor_id,
        }
        return self._mutate("create_job", args, idempotency_key, work, guard)

    async def create_approval_subjob(
        self,
        parent_job_id: str,
        checkpoint_id: str,
        supervisor_id: str,
        approval_data: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        parent_job_id = _text(parent_job_id, "parent_job_id", 64, required=True)
        checkpoint_id = _text(checkpoint_id, "checkpoint_id", 200, required=True)
        approval_data = _json_dict(approval_data, "approval_data")

        def guard(conn: Connection) -> None:
            _, terms = self._job_in_scope(conn, parent_job_id)
            self._changes(terms, "records its approvals")

        def work(conn: Connection) -> dict[str, Any]:
            parent = job_store.get(conn, parent_job_id)
            supervisor = self._party(
                conn, supervisor_id, "supervisor_id", Role.SUPERVISOR, strict=self.strict_identities
            )
            if supervisor == (parent["data"] or {}).get("executor_id"):
                raise Forbidden(
                    "four_eyes",
                    f"supervisor {supervisor!r} executes job {parent_job_id!r} and cannot approve it",
                )
            terms = scope.workflow_terms(conn, parent["workflow_id"]) if parent["workflow_id"] else None
            if terms is not None and supervisor == terms.poster_id:
                raise Forbidden(
                    "four_eyes",
                    f"supervisor {supervisor!r} posts workflow {terms.workflow_id!r} and cannot approve it",
                )
            job_id = job_store.create(
                conn,
                job_type="approval",
                workflow_id=parent["workflow_id"],
                parent_job_id=parent_job_id,
                data={
                    "checkpoint_id": checkpoint_id,
                    "supervisor_id": supervisor,
                    "approval_data": approval_data,
                },
            )
            return self._job_dict(conn, job_id)

        args = {
            "parent_job_id": parent_job_id,
            "checkpoint_id": checkpoint_id,
            "supervisor_id": supervisor_id,
            "approval_data": approval_data,
        }
        return self._mutate("create_approval_subjob", args, idempotency_key, work, guard)

    async def get_job(self, job_id: str) -> dict[str, Any]:
        job_id = _text(job_id, "job_id", 64, required=True)
        self._may("get_job")
        with self.db.read() as conn:
            self._job_in_scope(conn, job_id)
            return self._job_dict(conn, job_id)

    async def update_job_status(
        self, job_id: str, status: str, reason: str = "", *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Move a job to ``status`` (one of ``JOB_STATUSES``), adding it to the job's history."""
        job_id = _text(job_id, "job_id", 64, required=True)
        if status not in JOB_STATUSES:
            raise InvalidInput("status", f"must be one of {', '.join(JOB_STATUSES)}, got {status!r}")
        reason = _text(reason, "reason", MAX_TEXT)

        def guard(conn: Connection) -> None:
            _, terms = self._job_in_scope(conn, job_id)
            self._changes(terms, "records its jobs")

        def work(conn: Connection) -> dict[str, Any]:
            job_store.get(conn, job_id)
            job_store.set_status(conn, job_id, status, reason)
            return self._job_dict(conn, job_id)

        args = {"job_id": job_id, "status": status, "reason": reason}
        return self._mutate("update_job_status", args, idempotency_key, work, guard)

    # --- Escrow -------------------------------------------------------------------------------------------

    @staticmethod
    def _escrow_workflow(escrow_id: Any) -> str:
        if not isinstance(escrow_id, str) or not escrow_id.startswith(ESCROW_ID_PREFIX):
            raise InvalidInput("escrow_id", f"must look like 'escrow_<workflow_id>', got {escrow_id!r}")
        return _workflow_id(escrow_id[len(ESCROW_ID_PREFIX) :], "escrow_id")

    @staticmethod
    def _held(conn: Connection, escrow_id: str, workflow_id: str) -> int:
        position = book.escrow_position(conn, workflow_id)
        if position.locked == 0:
            raise NotFound(f"escrow {escrow_id!r} does not exist (nothing was locked)", escrow_id=escrow_id)
        return position.held

    def _escrow_guard(self, escrow_id: str, workflow_id: str) -> Callable[[Connection], object]:
        """A foreign escrow answers exactly like one that was never locked."""
        unknown = NotFound(f"escrow {escrow_id!r} does not exist (nothing was locked)", escrow_id=escrow_id)
        return lambda conn: self._workflow_in_scope(conn, workflow_id, unknown)

    def _check_payout(
        self, conn: Connection, workflow_id: str, payouts: list[tuple[str, int]], held: int
    ) -> None:
        """A caller's release or split pays only what approved checkpoints earned (or the payer back at
        settlement): ``saferun.domain.platform_policy.check_payout`` on this server's records."""
        if self.caller is None:
            return
        terms = scope.workflow_terms(conn, workflow_id)
        assert terms is not None  # the guard found it
        paid, payer = scope.escrow_paid(conn, workflow_id)
        _enforce(rules_of.check_payout(terms, payouts, paid, held, payer))

    @staticmethod
    def _ledger_key(operation: str, idempotency_key: str | None) -> str:
        return (
            f"x402:{idempotency_key}" if idempotency_key is not None else f"x402:{operation}:{new_id('op')}"
        )

    async def lock_escrow(
        self,
        workflow_id: str,
        amount: Any,
        poster_id: str,
        executor_id: str,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        workflow_id = _workflow_id(workflow_id)
        micro = _amount(amount, "amount")

        def guard(conn: Connection) -> None:
            unknown = NotFound(
                f"workflow {workflow_id!r} has no job on this platform", workflow_id=workflow_id
            )
            self._workflow_in_scope(conn, workflow_id, unknown)

        def work(conn: Connection) -> dict[str, Any]:
            strict = self.strict_identities
            poster = self._party(conn, poster_id, "poster_id", Role.POSTER, strict=strict)
            executor = self._party(conn, executor_id, "executor_id", Role.EXECUTOR, strict=strict)
            if self.caller is not None:
                terms = scope.workflow_terms(conn, workflow_id)
                assert terms is not None  # the guard found it
                _enforce(rules_of.check_lock(terms, poster, executor, micro))
                _enforce(rules_of.check_poster_grant(self.caller, poster, scope.grants_of(conn, poster)))
            # the engine's key: a workflow's escrow is locked once, whoever locks it
            txn = book.post(
                conn,
                rules.lock(workflow_id, poster, micro),
                idempotency_key=rules.lock_key(workflow_id),
                workflow_id=workflow_id,
            )
            return {
                "escrow_id": escrow_id_for(workflow_id),
                "workflow_id": workflow_id,
                "amount": format_micro(micro),
                "amount_micro": micro,
                "status": "locked",
                "poster_id": poster,
                "executor_id": executor,
                "txn_id": txn,
            }

        args = {
            "workflow_id": workflow_id,
            "amount": micro,
            "poster_id": poster_id,
            "executor_id": executor_id,
        }
        return self._mutate("lock_escrow", args, idempotency_key, work, guard)

    async def release_escrow(
        self,
        escrow_id: str,
        amount: Any,
        recipient_id: str,
        reason: str,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        workflow_id = self._escrow_workflow(escrow_id)
        micro = _amount(amount, "amount")
        reason = _text(reason, "reason", 200)

        def work(conn: Connection) -> dict[str, Any]:
            recipient = self._party(conn, recipient_id, "recipient_id", None, strict=self.strict_identities)
            held = self._held(conn, escrow_id, workflow_id)
            if micro > held:
                raise InvalidAmount(
                    "amount",
                    f"{format_micro(micro)} is more than escrow {escrow_id!r} still holds "
                    f"({format_micro(held)})",
                )
            self._check_payout(conn, workflow_id, [(recipient, micro)], held)
            posting = rules.Posting(
                rules.KIND_RELEASE,
                (
                    rules.Leg(rules.escrow_account(workflow_id), -micro),
                    rules.Leg(rules.wallet_account(recipient), micro),
                ),
                memo=f"release to {recipient}: {reason}",
            )
            txn = book.post(
                conn,
                posting,
                idempotency_key=self._ledger_key("release", idempotency_key),
                workflow_id=workflow_id,
            )
            return {
                "escrow_id": escrow_id,
                "release_id": txn,
                "amount": format_micro(micro),
                "amount_micro": micro,
                "recipient_id": recipient,
                "reason": reason,
                "status": "released",
                "remaining": format_micro(held - micro),
                "remaining_micro": held - micro,
            }

        args = {"escrow_id": escrow_id, "amount": micro, "recipient_id": recipient_id, "reason": reason}
        guard = self._escrow_guard(escrow_id, workflow_id)
        return self._mutate("release_escrow", args, idempotency_key, work, guard)

    async def split_payment(
        self,
        escrow_id: str,
        splits: list[dict[str, Any]],
        *,
        total: Any = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Pay several recipients out of one escrow in one posting (all or nothing).

        The parts must not exceed what the escrow holds; when ``total`` is given they must add up to it
        exactly (the seed's 90 + 10 of a 100 escrow).
        """
        workflow_id = self._escrow_workflow(escrow_id)
        if not isinstance(splits, list | tuple) or not splits:
            raise InvalidInput("splits", "must be a non-empty list of {recipient_id, amount, reason}")
        parts: list[tuple[str, int, str]] = []
        for i, split in enumerate(splits):
            field = f"splits[{i}]"
            if not isinstance(split, dict):
                raise InvalidInput(field, f"must be an object, got {type(split).__name__}")
            unknown = set(split) - {"recipient_id", "amount", "reason"}
            if unknown:
                raise InvalidInput(field, f"unknown keys {sorted(unknown)}")
            if "recipient_id" not in split or "amount" not in split:
                raise InvalidInput(field, "needs recipient_id and amount")
            recipient = id_store.validate_identity_id(split["recipient_id"], f"{field}.recipient_id")
            parts.append(
                (
                    recipient,
                    _amount(split["amount"], f"{field}.amount"),
                    _text(split.get("reason"), f"{field}.reason", 200),
                )
            )
        split_total = sum(micro for _, micro, _ in parts)
        expected = None if total is None else _amount(total, "total")
        if expected is not None and split_total != expected:
            raise InvalidAmount(
                "splits", f"add up to {format_micro(split_total)}, not the total {format_micro(expected)}"
            )

        def work(conn: Connection) -> dict[str, Any]:
            for i, (recipient, _, _) in enumerate(parts):
                self._party(conn, recipient, f"splits[{i}].recipient_id", None, strict=self.strict_identities)
            held = self._held(conn, escrow_id, workflow_id)
            if split_total > held:
                raise InvalidAmount(
                    "splits",
                    f"add up to {format_micro(split_total)}, more than escrow {escrow_id!r} still holds "
                    f"({format_micro(held)})",
                )
            self._check_payout(conn, workflow_id, [(r, m) for r, m, _ in parts], held)
            legs = [rules.Leg(rules.escrow_account(workflow_id), -split_total)]
            legs += [rules.Leg(rules.wallet_account(recipient), micro) for recipient, micro, _ in parts]
            posting = rules.Posting(rules.KIND_RELEASE, tuple(legs), memo=f"split payment of {escrow_id}")
            txn = book.post(
                conn,
                posting,
                idempotency_key=self._ledger_key("split", idempotency_key),
                workflow_id=workflow_id,
            )
            return {
                "escrow_id": escrow_id,
                "split_id": txn,
                "status": "split",
                "total": format_micro(split_total),
                "total_micro": split_total,
                "payments": [
                    {"recipient_id": r, "amount": format_micro(m), "amount_micro": m, "reason": why}
                    for r, m, why in parts
                ],
                "remaining": format_micro(held - split_total),
                "remaining_micro": held - split_total,
            }

        args = {"escrow_id": escrow_id, "splits": [list(p) for p in parts], "total": expected}
        guard = self._escrow_guard(escrow_id, workflow_id)
        return self._mutate("split_payment", args, idempotency_key, work, guard)

    async def get_escrow(self, escrow_id: str) -> dict[str, Any]:
        """Where an escrow's money is now (locked / released / refunded / held)."""
        workflow_id = self._escrow_workflow(escrow_id)
        self._may("get_escrow")
        with self.db.read() as conn:
            gone = f"escrow {escrow_id!r} does not exist (nothing was locked)"
            unknown = NotFound(gone, escrow_id=escrow_id)
            terms = self._workflow_in_scope(conn, workflow_id, unknown)
            if terms is None or not terms.engine:
                position = book.escrow_position(conn, workflow_id)
            else:  # a workflow this server's engine runs: its postings are checked against its chain
                entries = book.entries(conn, workflow_id)
                audit.check_read(conn, workflow_id, postings=entries)
                position = position_from_entries(workflow_id, entries)
        if position.locked == 0:
            raise NotFound(f"escrow {escrow_id!r} does not exist (nothing was locked)", escrow_id=escrow_id)
        return {
            "escrow_id": escrow_id,
            "workflow_id": workflow_id,
            "locked": format_micro(position.locked),
            "released": format_micro(position.released),
            "refunded": format_micro(position.refunded),
            "held": format_micro(position.held),
            "held_micro": position.held,
            "invariant_holds": position.invariant_holds(),
        }

    # --- Artifacts ----------------------------------------------------------------------------------------

    async def create_artifact(
        self,
        artifact_type: str,
        content: str | bytes,
        metadata: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Store ``content`` (text is stored as its UTF-8 bytes) as a content-addressed artifact."""
        if isinstance(content, str):
            data = content.encode("utf-8")
        elif isinstance(content, bytes | bytearray | memoryview):
            data = bytes(content)
        else:
            raise InvalidInput("content", f"must be text or bytes, got {type(content).__name__}")
        metadata = _json_dict(metadata, "metadata")

        def work(conn: Connection) -> dict[str, Any]:
            stored = self.db.artifacts.put_bytes(conn, data, artifact_type=artifact_type, metadata=metadata)
            if self.caller is not None and self.caller.authenticated and self.caller.has(Role.PLATFORM):
                scope.hold_artifact(conn, stored.uri, self.caller.identity_id)
            return {
                "artifact_id": stored.sha256,
                "uri": stored.uri,
                "size_bytes": stored.raw_size,
                "compressed_size_bytes": stored.compressed_size,
            }

        args = {
            "artifact_type": artifact_type,
            "content_sha256": hashlib.sha256(data).hexdigest(),
            "metadata": metadata,
        }
        return self._mutate("create_artifact", args, idempotency_key, work)

    async def get_artifact(self, artifact_uri: str) -> dict[str, Any]:
        """The stored value: ``content`` is its text, or base64 when the bytes are not UTF-8
        (``content_encoding`` says which)."""
        if not isinstance(artifact_uri, str):
            raise InvalidInput("artifact_uri", f"must be a string, got {type(artifact_uri).__name__}")
        self._may("get_artifact")
        with self.db.read() as conn:
            self._artifact_in_scope(conn, artifact_uri)
            data = self.db.artifacts.get_bytes(conn, artifact_uri)
            info = self.db.artifacts.info(conn, artifact_uri) or {}
        try:
            content, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            content, encoding = base64.b64encode(data).decode("ascii"), "base64"
        return {
            "uri": artifact_uri,
            "content": content,
            "content_encoding": encoding,
            "artifact_type": info.get("artifact_type"),
            "metadata": info.get("metadata") or {},
        }

    def _artifact_in_scope(self, conn: Connection, uri: str) -> None:
        """A platform reads an artifact it stored itself, or one a workflow it may see references; any
        other answers exactly like a missing one (knowing a hash is not a key)."""
        caller = self.caller
        if caller is None or not caller.authenticated or caller.is_admin:
            return
        if self.db.artifacts.info(conn, uri) is None:
            return  # get_bytes answers the missing artifact itself
        if scope.holds_artifact(conn, uri, caller.identity_id) or artifact_visible(conn, caller, uri):
            return
        raise ArtifactNotFound(uri)

    # --- Identity -----------------------------------------------------------------------------------------

    async def verify_identity(self, user_id: str, role: str) -> bool:
        """Whether ``user_id`` is a registered, enabled identity with ``role`` (unknown identity: False)."""
        # a malformed id is 422, as everywhere else, not "not verified" (that is for ids no one holds)
        user_id = id_store.validate_identity_id(user_id, "user_id")
        if not isinstance(role, str):
            raise InvalidInput("role", f"must be a role name, got {type(role).__name__}")
        (wanted,) = parse_roles([role], "role")
        self._may("verify_identity")
        with self.db.read() as conn:
            row = (
                conn.execute(select(id_store.identities).where(id_store.identities.c.identity_id == user_id))
                .mappings()
                .first()
            )
        return row is not None and not row["disabled"] and wanted in id_store.roles_of(row)

    async def get_user_profile(self, user_id: str) -> dict[str, Any]:
        user_id = id_store.validate_identity_id(user_id, "user_id")
        self._may("get_user_profile")
        with self.db.read() as conn:
            row = id_store.get_identity(conn, user_id)
            reputation = market.reputations(conn, [user_id])[user_id]
            profile = market.get_profile(conn, user_id)
            ratings = market.rating_count(conn, user_id)
        return {
            "user_id": user_id,
            "display_name": row["display_name"],
            "roles": sorted(r.value for r in id_store.roles_of(row)),
            "disabled": bool(row["disabled"]),
            "reputation": reputation,
            "ratings_count": ratings,
            "supervisor_profile": None if profile is None else self._profile_dict(profile, reputation),
            "created_at": _iso(row["created_at"]),
        }

    async def record_approval_quality(
        self, supervisor_id: str, workflow_id: str, quality_score: Any, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        workflow_id = _workflow_id(workflow_id)
        if isinstance(quality_score, bool) or not isinstance(quality_score, int | float | Decimal):
            raise InvalidInput("quality_score", f"must be a number between 0 and 1, got {quality_score!r}")
        score = float(quality_score)
        if not math.isfinite(score) or not 0 <= score <= 1:
            raise InvalidInput("quality_score", f"must be between 0 and 1, got {quality_score!r}")

        def work(conn: Connection) -> dict[str, Any]:
            supervisor = self._party(conn, supervisor_id, "supervisor_id", Role.SUPERVISOR, strict=True)
            self._require_worked_on(conn, supervisor, workflow_id)
            if self.caller is not None:  # only the outcome sets it, never the caller
                terms = scope.workflow_terms(conn, workflow_id)
                assert terms is not None  # the guard found it
                _enforce(rules_of.check_quality(terms, supervisor, score))
            existing = market.get_quality(conn, supervisor, workflow_id)
            if existing is None:
                market.add_quality(conn, supervisor, workflow_id, score)
            elif existing["quality_score"] != score:
                raise Conflict(
                    f"approval quality of {supervisor!r} on workflow {workflow_id!r} was already recorded",
                    supervisor_id=supervisor,
                    workflow_id=workflow_id,
                )
            return {
                "supervisor_id": supervisor,
                "workflow_id": workflow_id,
                "quality_score": score,
                "reputation": market.reputations(conn, [supervisor])[supervisor],
            }

        args = {"supervisor_id": supervisor_id, "workflow_id": workflow_id, "quality_score": repr(score)}
        guard = self._workflow_guard(workflow_id, "scores its supervisor's approvals")
        return self._mutate("record_approval_quality", args, idempotency_key, work, guard)

    @staticmethod
    def _require_worked_on(conn: Connection, supervisor: str, workflow_id: str) -> None:
        row = conn.execute(select(workflows).where(workflows.c.workflow_id == workflow_id)).mappings().first()
        if not parties.worked_on(conn, supervisor, row, workflow_id):
            raise Forbidden(
                "supervised_workflow",
                f"{supervisor!r} did not supervise workflow {workflow_id!r} (not assigned to it and decided "
                "none of its approvals), so it cannot be rated or scored for it",
            )

    # --- Marketplace --------------------------------------------------------------------------------------

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

    async def close(self) -> None:
        """Nothing to release: the database handle is shared per process."""
