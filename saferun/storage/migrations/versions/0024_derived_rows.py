"""Rows that follow from other rows are written by the database (issue 12, target 1)

A checkpoint -> decision cycle wrote, beside the rows that carry its facts, rows that only restate them:

- ``job_events``: a job's status history, one row per status the ``jobs`` row is given;
- the approval sub-job (``jobs``): the x402 projection of an approval request (its id is on the request);
- the sub-job's outcome on a decision: ``completed``, with the decision as its reason;
- ``notifications``: the outbox notice that a request is waiting, or left ``pending`` (decided, expired,
  cancelled, closed), which must commit with that change;
- ``transitions``: the state history the event stream reads, which is the chain's ``transition`` events
  (and the creation) in table form;
- when the workflow gets a new approved state: the saga's pending steps made permanent, and the snapshot
  approved if it was only captured (a request's).

Each was its own statement from Python, in the same transaction as the row it follows from. Now a trigger
writes it, in that statement: with the milestone probe moved onto a read the decision runs anyway, the
cycle drops from 22 statements to 12 on SQLite (each statement costs the engine its execution path; on
PostgreSQL each is also a round trip) and the derived rows can no longer disagree with their source,
whichever code path (engine, bulk loader, a future one) writes the source.

``jobs.status_reason`` is new: why the job has its status (``created``, a decision, a refund's reason). The
history trigger copies it into ``job_events.reason``, so the history is what it was. Existing rows get the
reason of their last event.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 22:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the job data of an approval sub-job, in the order the engine wrote it
_SUBJOB_DATA = ("checkpoint_id", "supervisor_id", "request_id", "snapshot_id")


# a new approved state: the saga's earlier steps become permanent, and the snapshot that is now the approved
# state, if it was only captured (a request's), is approved (a modified or passed one keeps its status)
_APPROVED_STATE = (
    "UPDATE saga_steps SET status = 'committed' WHERE workflow_id = NEW.workflow_id AND status = 'pending'; "
    "UPDATE snapshots SET status = 'approved' WHERE snapshot_id = NEW.last_approved_snapshot_id "
    "AND status = 'captured';"
)


def _sqlite() -> list[str]:
    subjob_data = ", ".join(f"'{k}', NEW.{k}" for k in _SUBJOB_DATA)
    job_event = (
        "INSERT INTO job_events (job_id, status, reason, at) "
        "VALUES (NEW.job_id, NEW.status, NEW.status_reason, NEW.updated_at);"
    )
    # audit ``at`` is ISO text (2026-12-07T22:30:00.123456+00:00); a DateTime column holds the same
    # instant as 'YYYY-MM-DD HH:MM:SS.ffffff'
    audit_at = "replace(substr(NEW.at, 1, 26), 'T', ' ')"
    now = "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"  # microseconds, as the DateTime columns
    return [
        f"CREATE TRIGGER derived_jobs_ins AFTER INSERT ON jobs BEGIN {job_event} END",
        f"CREATE TRIGGER derived_jobs_upd AFTER UPDATE OF status ON jobs BEGIN {job_event} END",
        "CREATE TRIGGER derived_approval_requests_ins AFTER INSERT ON approval_requests BEGIN "
        "INSERT INTO jobs (job_id, parent_job_id, job_type, workflow_id, status, status_reason, data, "
        "created_at, updated_at) SELECT NEW.job_id, (SELECT w.job_id FROM workflows AS w WHERE "
        f"w.workflow_id = NEW.workflow_id), 'approval', NEW.workflow_id, 'open', 'created', json_object("
        f"{subjob_data}), NEW.created_at, NEW.created_at WHERE NEW.job_id IS NOT NULL; "
        "INSERT INTO notifications (kind, request_id, workflow_id, created_at, dispatched_at) "
        "SELECT 'waiting', NEW.request_id, NEW.workflow_id, NEW.created_at, NULL "
        "WHERE NEW.status = 'pending'; "
        "END",
        "CREATE TRIGGER derived_approval_requests_upd AFTER UPDATE OF status ON approval_requests "
        "WHEN OLD.status = 'pending' AND NEW.status <> 'pending' BEGIN "
        "INSERT INTO notifications (kind, request_id, workflow_id, created_at, dispatched_at) "
        f"VALUES (NEW.status, NEW.request_id, NEW.workflow_id, coalesce(NEW.decided_at, {now}), NULL); END",
        "CREATE TRIGGER derived_approval_responses_ins AFTER INSERT ON approval_responses BEGIN "
        "UPDATE jobs SET status = 'completed', status_reason = lower(NEW.decision), updated_at = "
        "NEW.created_at WHERE job_id = (SELECT r.job_id FROM approval_requests AS r "
        "WHERE r.request_id = NEW.request_id); END",
        "CREATE TRIGGER derived_audit_events_ins AFTER INSERT ON audit_events "
        "WHEN NEW.kind IN ('transition', 'workflow_created') BEGIN "
        "INSERT INTO transitions (workflow_id, from_state, to_state, event, actor, reason, at) VALUES ("
        "NEW.workflow_id, json_extract(NEW.payload, '$.from'), "
        "coalesce(json_extract(NEW.payload, '$.to'), 'initialized'), "
        "coalesce(json_extract(NEW.payload, '$.event'), 'create'), NEW.actor, "
        f"json_extract(NEW.payload, '$.reason'), {audit_at}); END",
        "CREATE TRIGGER derived_workflows_upd AFTER UPDATE OF last_approved_snapshot_id ON workflows "
        "WHEN NEW.last_approved_snapshot_id IS NOT OLD.last_approved_snapshot_id BEGIN "
        f"{_APPROVED_STATE} END",
    ]


def _postgresql() -> list[str]:
    subjob_data = ", ".join(f"'{k}', NEW.{k}" for k in _SUBJOB_DATA)
    utc_now = "(clock_timestamp() AT TIME ZONE 'UTC')"

    def function(name: str, body: str) -> str:
        return (
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql "
            f"AS $$ BEGIN {body} RETURN NULL; END $$"
        )

    return [
        function(
            "derived_job_event",
            "INSERT INTO job_events (job_id, status, reason, at) "
            "VALUES (NEW.job_id, NEW.status, NEW.status_reason, NEW.updated_at);",
        ),
        "CREATE TRIGGER derived_jobs_ins AFTER INSERT ON jobs FOR EACH ROW "
        "EXECUTE FUNCTION derived_job_event()",
        "CREATE TRIGGER derived_jobs_upd AFTER UPDATE OF status ON jobs FOR EACH ROW "
        "EXECUTE FUNCTION derived_job_event()",
        function(
            "derived_approval_request",
            "IF NEW.job_id IS NOT NULL THEN INSERT INTO jobs (job_id, parent_job_id, job_type, workflow_id, "
            "status, status_reason, data, created_at, updated_at) VALUES (NEW.job_id, (SELECT w.job_id FROM "
            "workflows AS w WHERE w.workflow_id = NEW.workflow_id), 'approval', NEW.workflow_id, 'open', "
            f"'created', jsonb_build_object({subjob_data}), NEW.created_at, NEW.created_at); END IF; "
            "IF NEW.status = 'pending' THEN INSERT INTO notifications (kind, request_id, workflow_id, "
            "created_at, dispatched_at) VALUES ('waiting', NEW.request_id, NEW.workflow_id, NEW.created_at, "
            "NULL); END IF;",
        ),
        "CREATE TRIGGER derived_approval_requests_ins AFTER INSERT ON approval_requests FOR EACH ROW "
        "EXECUTE FUNCTION derived_approval_request()",
        function(
            "derived_approval_request_left",
            "INSERT INTO notifications (kind, request_id, workflow_id, created_at, dispatched_at) VALUES "
            f"(NEW.status, NEW.request_id, NEW.workflow_id, coalesce(NEW.decided_at, {utc_now}), NULL);",
        ),
        "CREATE TRIGGER derived_approval_requests_upd AFTER UPDATE OF status ON approval_requests "
        "FOR EACH ROW "
        "WHEN (OLD.status = 'pending' AND NEW.status <> 'pending') "
        "EXECUTE FUNCTION derived_approval_request_left()",
        function(
            "derived_approval_response",
            "UPDATE jobs SET status = 'completed', status_reason = lower(NEW.decision), updated_at = "
            "NEW.created_at WHERE job_id = (SELECT r.job_id FROM approval_requests AS r "
            "WHERE r.request_id = NEW.request_id);",
        ),
        "CREATE TRIGGER derived_approval_responses_ins AFTER INSERT ON approval_responses FOR EACH ROW "
        "EXECUTE FUNCTION derived_approval_response()",
        function(
            "derived_transition",
            "INSERT INTO transitions (workflow_id, from_state, to_state, event, actor, reason, at) VALUES ("
            "NEW.workflow_id, NEW.payload::jsonb ->> 'from', "
            "coalesce(NEW.payload::jsonb ->> 'to', 'initialized'), "
            "coalesce(NEW.payload::jsonb ->> 'event', 'create'), NEW.actor, NEW.payload::jsonb ->> 'reason', "
            "(NEW.at::timestamptz AT TIME ZONE 'UTC'));",
        ),
        "CREATE TRIGGER derived_audit_events_ins AFTER INSERT ON audit_events FOR EACH ROW "
        "WHEN (NEW.kind = 'transition' OR NEW.kind = 'workflow_created') "
        "EXECUTE FUNCTION derived_transition()",
        function("derived_approved_state", _APPROVED_STATE),
        "CREATE TRIGGER derived_workflows_upd AFTER UPDATE OF last_approved_snapshot_id ON workflows "
        "FOR EACH ROW WHEN (NEW.last_approved_snapshot_id IS DISTINCT FROM OLD.last_approved_snapshot_id) "
        "EXECUTE FUNCTION derived_approved_state()",
    ]


TRIGGERS = (
    ("derived_jobs_ins", "jobs"),
    ("derived_jobs_upd", "jobs"),
    ("derived_approval_requests_ins", "approval_requests"),
    ("derived_approval_requests_upd", "approval_requests"),
    ("derived_approval_responses_ins", "approval_responses"),
    ("derived_audit_events_ins", "audit_events"),
    ("derived_workflows_upd", "workflows"),
)
FUNCTIONS = (
    "derived_job_event",
    "derived_approval_request",
    "derived_approval_request_left",
    "derived_approval_response",
    "derived_transition",
    "derived_approved_state",
)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("status_reason", sa.Text(), nullable=False, server_default=""))
    op.execute(
        "UPDATE jobs SET status_reason = coalesce((SELECT e.reason FROM job_events AS e "
        "WHERE e.job_id = jobs.job_id ORDER BY e.id DESC LIMIT 1), '')"
    )
    for statement in _postgresql() if op.get_bind().dialect.name == "postgresql" else _sqlite():
        op.execute(statement)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, table in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if postgresql else ""))
    if postgresql:
        for name in FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.execute("ALTER TABLE jobs DROP COLUMN status_reason")  # SQLite >= 3.35 too, keeping the table as is
