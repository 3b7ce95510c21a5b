"""The embedded platform's Jobs calls: a workflow's main job, its approval sub-jobs, and their status
history (``saferun.storage.jobs``).

One mixin of ``saferun.platform.embedded.EmbeddedPlatform``, apart from the money (``embedded_escrow``)
and the people (``embedded_records``, ``embedded_marketplace``) because it touches only the job tables.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from saferun.domain.money import format_micro, to_micro
from saferun.domain.platform_policy import on_platform
from saferun.domain.policy import Role
from saferun.errors import Conflict, Forbidden, InvalidInput
from saferun.platform import scope
from saferun.platform.embedded_core import (
    JOB_STATUSES,
    MAX_TEXT,
    EmbeddedCore,
    _iso,
    _json_dict,
    _text,
    _workflow_id,
)
from saferun.storage import jobs as job_store


class JobCalls(EmbeddedCore):
    """Jobs: ``create_job``, ``create_approval_subjob``, ``get_job``, ``update_job_status``."""

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
