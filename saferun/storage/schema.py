"""One SQLAlchemy Core schema for SQLite and PostgreSQL (in the spirit of DBOS's system database).

Rules the tables keep:
- money columns are ``BigInteger`` micro-units; there is no float money column anywhere;
- JSON columns are ``JSON`` on SQLite and ``JSONB`` on PostgreSQL;
- timestamps are stored as UTC and always read back timezone-aware (``UTCDateTime``);
- the schema is created and changed only by Alembic revisions (``saferun/storage/migrations``);
  ``metadata`` here is what those revisions must produce, and a test checks that they agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class _PostgresVariant(TypeDecorator[Any]):
    """``impl`` on SQLite, PostgreSQL's own type (named ``pg_type``) there, as ``with_variant`` would give.

    Why not ``with_variant``: it needs the PostgreSQL type object when this module is imported, and
    importing ``sqlalchemy.dialects.postgresql`` (it loads every PostgreSQL driver's dialect) costs each
    process ~18 ms of ``import saferun``, SQLite ones included (issue 12, target 5). Here the PostgreSQL
    type is built when a PostgreSQL dialect first asks for it."""

    cache_ok = True
    pg_type = ""

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects import postgresql

            return dialect.type_descriptor(getattr(postgresql, self.pg_type)())
        return dialect.type_descriptor(self.impl_instance)


class _JSONColumn(_PostgresVariant):
    impl = JSON
    cache_ok = True  # SQLAlchemy reads it from each class's own body
    pg_type = "JSONB"
    # JSON writes Python None as JSON null (none_as_null=False), not SQL NULL: keep that
    should_evaluate_none = True


class _BlobColumn(_PostgresVariant):
    impl = LargeBinary
    cache_ok = True
    pg_type = "BYTEA"


JSONType = _JSONColumn()
Blob = _BlobColumn()


class UTCDateTime(TypeDecorator[datetime]):
    """Store naive UTC, hand back aware UTC: SQLite has no time zones, and comparisons must agree."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


workflows = Table(
    "workflows",
    metadata,
    Column("workflow_id", String(64), primary_key=True),
    Column("name", String(500), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("state", String(32), nullable=False, index=True),
    Column("config", JSONType, nullable=False),
    Column("poster_id", String(200), nullable=False),
    Column("executor_id", String(200), nullable=False),
    Column("supervisor_id", String(200), nullable=True),
    Column("escrow_micro", BigInteger, nullable=False),
    # how many configured checkpoints have been approved (or passed, when no approval is required)
    Column("current_checkpoint", Integer, nullable=False, default=0),
    Column("job_id", String(64), nullable=True),
    Column("escrow_id", String(80), nullable=True),  # "escrow_" + a workflow id of up to 64
    Column("last_approved_snapshot_id", String(64), nullable=True),
    Column("result_uri", String(200), nullable=True),
    # None: the embedded platform holds the workflow's jobs and money; else the remote x402 platform's
    # URL, which receives them through platform_outbox
    Column("platform_url", String(500), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("rollback_claimed_by", String(200), nullable=True),
    Column("rollback_claimed_at", UTCDateTime, nullable=True),
    Column("version", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("completed_at", UTCDateTime, nullable=True),
    # the audit chain's anchor: its length and latest hash, written with every event, so a deleted tail
    # event (which leaves a shorter, still self-consistent chain) is detected
    Column("audit_seq", Integer, nullable=False, default=0, server_default="0"),
    Column("audit_head", String(64), nullable=True),
)

transitions = Table(
    "transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workflow_id", String(64), ForeignKey("workflows.workflow_id"), nullable=False, index=True),
    Column("from_state", String(32), nullable=True),
    Column("to_state", String(32), nullable=False),
    Column("event", String(64), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=True),
    Column("at", UTCDateTime, nullable=False),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("snapshot_id", String(64), primary_key=True),
    Column("workflow_id", String(64), ForeignKey("workflows.workflow_id"), nullable=False),
    Column("sequence", Integer, nullable=False),
    # the configured checkpoint this snapshot belongs to, and the label the agent gave its state
    Column("checkpoint_id", String(200), nullable=False),
    Column("label", String(200), nullable=False),
    # captured | approved | modified | rejected | expired | restored
    Column("status", String(32), nullable=False),
    Column("artifact_uri", String(200), nullable=False),
    Column("raw_size_bytes", BigInteger, nullable=False),
    Column("compressed_size_bytes", BigInteger, nullable=False),
    Column("new_bytes", BigInteger, nullable=False),
    Column("parent_snapshot_id", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("workflow_id", "sequence"),
)

approval_requests = Table(
    "approval_requests",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("workflow_id", String(64), ForeignKey("workflows.workflow_id"), nullable=False, index=True),
    Column("snapshot_id", String(64), ForeignKey("snapshots.snapshot_id"), nullable=False),
    Column("checkpoint_id", String(200), nullable=False),
    Column("checkpoint_name", String(500), nullable=False),
    Column("summary", Text, nullable=False),
    Column("decision_needed", Text, nullable=False),
    Column("context", JSONType, nullable=False),
    Column("parameters", JSONType, nullable=False),
    # the JSON Schema a modification is checked against (declared by the agent or inferred); NULL on rows
    # written before it existed, which are read as inferred from ``parameters``
    Column("parameter_schema", JSONType, nullable=True),
    Column("recommendation", String(32), nullable=True),
    Column("confidence", Float, nullable=True),
    Column("risk", JSONType, nullable=False),
    # ``recommendation.risk_level(risk)`` (low | medium | high | critical, NULL when none is named), kept
    # beside the JSON so the queue's risk filter is an index range, not a JSON scan (revision 0011)
    Column("risk_level", String(16), nullable=True),
    Column("alerts", JSONType, nullable=False),
    Column("supervisor_id", String(200), nullable=True),
    Column("job_id", String(64), nullable=True),  # the x402 approval sub-job
    Column("on_timeout", String(16), nullable=False),
    # pending | decided | expired | cancelled | closed (a sibling item of its checkpoint was rejected)
    Column("status", String(16), nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
    Column("decided_at", UTCDateTime, nullable=True),
    # the escalation ladder (issue 16): rungs applied so far, and when the next one is due (NULL: none
    # left, or no ladder), so a sweep finds due rungs with an index range whatever the queue's size
    Column("escalation_step", Integer, nullable=False, server_default="0", default=0),
    Column("next_escalation_at", UTCDateTime, nullable=True),
    # M-of-N quorum (issue 16, revision 0018): the rule the request is decided by (approvals, of, rejections,
    # distinct_teams) from its checkpoint or the approval policy; NULL: one person decides, as always
    Column("quorum", JSONType, nullable=True),
    # several requests at one checkpoint (parallel tool calls, a LangGraph step's interrupts): the group
    # they share and each item's stable key; both NULL on a single-request checkpoint (revision 0019)
    Column("group_id", String(64), nullable=True),
    Column("item_key", String(200), nullable=True),
)
Index("ix_approval_requests_escalation", approval_requests.c.next_escalation_at)
Index("ix_approval_requests_group", approval_requests.c.group_id)

approval_responses = Table(
    "approval_responses",
    metadata,
    Column("response_id", String(64), primary_key=True),
    Column("request_id", String(64), ForeignKey("approval_requests.request_id"), nullable=False, unique=True),
    Column("workflow_id", String(64), ForeignKey("workflows.workflow_id"), nullable=False, index=True),
    Column("decision", String(16), nullable=False),
    Column("rationale", Text, nullable=False),
    Column("approved_by", String(200), nullable=False),
    Column("modifications", JSONType, nullable=True),
    Column("automatic", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    # the review digest of what the decider was shown (saferun/domain/review_digest); None: no human
    Column("review_digest", String(80), nullable=True),
)

# one row per vote on a quorum request (issue 16, revision 0018); each is bound to the workflow's audit chain
# by the ``vote`` event that recorded it, and (request_id, voter) is unique: nobody votes twice
approval_votes = Table(
    "approval_votes",
    metadata,
    Column("vote_id", String(64), primary_key=True),
    Column("request_id", String(64), ForeignKey("approval_requests.request_id"), nullable=False),
    Column("workflow_id", String(64), ForeignKey("workflows.workflow_id"), nullable=False, index=True),
    Column("voter", String(200), nullable=False),
    Column("vote", String(16), nullable=False),  # APPROVED | REJECTED
    Column("rationale", Text, nullable=False),
    Column("team", String(100), nullable=True),  # the voter's team when they voted (distinct_teams)
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("request_id", "voter"),
)

saga_steps = Table(
    "saga_steps",
    metadata,
    Column("step_id", String(64), primary_key=True),
    Column("workflow_id", String(64), ForeignKey("workflows.workflow_id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("name", String(200), nullable=False),
    Column("compensation", String(200), nullable=False),
    Column("args", JSONType, nullable=False),
    # pending (undo possible) | committed (an approval made it permanent) | compensating | compensated
    # | failed
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("claimed_by", String(200), nullable=True),
    Column("claimed_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    UniqueConstraint("workflow_id", "seq"),
)

ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    Column("txn_id", String(64), primary_key=True),
    Column("idempotency_key", String(300), nullable=False, unique=True),
    Column("workflow_id", String(64), nullable=True, index=True),
    Column("kind", String(32), nullable=False),
    Column("memo", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
)

ledger_legs = Table(
    "ledger_legs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("txn_id", String(64), ForeignKey("ledger_transactions.txn_id"), nullable=False, index=True),
    Column("account", String(300), nullable=False, index=True),
    Column("amount_micro", BigInteger, nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("workflow_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("payload", Text, nullable=False),  # canonical JSON text: exactly the bytes that were hashed
    Column("at", String(40), nullable=False),  # ISO text: hashed as written, so no round-trip drift
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

blobs = Table(
    "blobs",
    metadata,
    Column("sha256", String(64), primary_key=True),
    # chunk (key = sha256 of its bytes) | index (key = sha256 of the part it reassembles)
    # | manifest (key = sha256 of the manifest's canonical bytes)
    # | delta (key = sha256 of the part; data = base key, chain depth and copy/insert operations)
    Column("kind", String(16), nullable=False),
    Column("codec", String(16), nullable=False),  # zstd | raw
    Column("raw_size", BigInteger, nullable=False),
    Column("stored_size", BigInteger, nullable=False),
    Column("data", Blob, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("uri", String(200), primary_key=True),
    Column("artifact_type", String(64), nullable=False),
    Column("metadata", JSONType, nullable=False),
    Column("raw_size", BigInteger, nullable=False),
    Column("compressed_size", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    sqlite_with_rowid=False,  # looked up by key only: one b-tree on SQLite (migration 0021)
)

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("parent_job_id", String(64), ForeignKey("jobs.job_id"), nullable=True, index=True),
    Column("job_type", String(64), nullable=False),
    Column("workflow_id", String(64), nullable=True, index=True),
    Column("status", String(32), nullable=False),
    # why it has that status ("created", a decision, a refund's reason); the database copies it into the
    # job's history (``job_events``) whenever the status is written (revision 0024)
    Column("status_reason", Text, nullable=False, server_default="", default=""),
    Column("data", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

Index(
    "ix_snapshots_workflow_checkpoint", snapshots.c.workflow_id, snapshots.c.checkpoint_id, snapshots.c.status
)
# The list queries' indexes (revision 0011): each list is an index range read in its sort order, so a page
# costs the same at 100,000 rows as at 10 (tests/test_query_plans.py checks the plans on both databases).
# The pending queue, soonest expiry first, keyset (expires_at, request_id); also the expiry sweep's index.
Index(
    "ix_approval_requests_queue",
    approval_requests.c.status,
    approval_requests.c.expires_at,
    approval_requests.c.request_id,
)
# ... filtered to one assignee ("assigned to me") or one risk level
Index(
    "ix_approval_requests_assigned_queue",
    approval_requests.c.status,
    approval_requests.c.supervisor_id,
    approval_requests.c.expires_at,
    approval_requests.c.request_id,
)
Index(
    "ix_approval_requests_risk_queue",
    approval_requests.c.status,
    approval_requests.c.risk_level,
    approval_requests.c.expires_at,
    approval_requests.c.request_id,
)
# workflows newest first, keyset (created_at, workflow_id), all or of one state
Index("ix_workflows_created", workflows.c.created_at, workflows.c.workflow_id)
Index("ix_workflows_state_created", workflows.c.state, workflows.c.created_at, workflows.c.workflow_id)
# /api/stats' active parties (COUNT DISTINCT over workflows not ended) and the visibility rule's "mine"
# terms read these instead of every workflow row (revision 0015)
Index("ix_workflows_executor_state", workflows.c.executor_id, workflows.c.state)
Index("ix_workflows_supervisor_state", workflows.c.supervisor_id, workflows.c.state)
Index("ix_workflows_poster", workflows.c.poster_id)

# --- identities and authorization (revision 0002) -------------------------------------------------------

identities = Table(
    "identities",
    metadata,
    # chosen by the admin ("human_789") or generated ("id_<hex>"); the same ids workflows name as poster,
    # executor and supervisor
    Column("identity_id", String(200), primary_key=True),
    Column("display_name", String(500), nullable=False, default=""),
    Column("roles", JSONType, nullable=False),  # sorted list of role names (saferun.domain.policy.Role)
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    # the team a person belongs to, for a quorum's "different teams" rule (revision 0018); NULL: none
    Column("team", String(100), nullable=True),
)

# which groups an identity is in, for M-of-N quorum votes (revision 0018); keyed group first, so the
# members of one group are an index range
identity_groups = Table(
    "identity_groups",
    metadata,
    Column("group_name", String(100), primary_key=True),
    Column("identity_id", String(200), ForeignKey("identities.identity_id"), primary_key=True),
)
Index("ix_identity_groups_identity", identity_groups.c.identity_id)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("identity_id", String(200), ForeignKey("identities.identity_id"), nullable=False, index=True),
    # hex SHA-256 of the key's 32 random bytes; the plaintext is shown once and never stored
    Column("key_hash", String(64), nullable=False),
    Column("label", String(200), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
)

sessions = Table(
    "sessions",
    metadata,
    # hex SHA-256 of the cookie value: a leaked table opens no session
    Column("session_id_hash", String(64), primary_key=True),
    Column("identity_id", String(200), ForeignKey("identities.identity_id"), nullable=False, index=True),
    # the key the session was signed in with: revoking the key ends its sessions
    Column("key_id", String(64), ForeignKey("api_keys.key_id"), nullable=True, index=True),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)

# --- the embedded x402 platform: job history, idempotent requests, marketplace (revision 0003) ---------

job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), ForeignKey("jobs.job_id"), nullable=False, index=True),
    Column("status", String(32), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("at", UTCDateTime, nullable=False),
)

# --- who stored an artifact through the platform API (revision 0012) ----------------------------------
# Artifacts are content-addressed and shared; a platform identity reads back through /x402 only what it
# stored itself (or what a workflow it may see references): knowing a hash is not a key.
platform_artifacts = Table(
    "platform_artifacts",
    metadata,
    Column("uri", String(200), primary_key=True),
    Column("platform_id", String(200), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
)

# --- which platforms a poster lets draw on its funding account (revision 0013) ------------------------
platform_grants = Table(
    "platform_grants",
    metadata,
    Column("poster_id", String(200), ForeignKey("identities.identity_id"), primary_key=True),
    Column("platform_id", String(200), ForeignKey("identities.identity_id"), primary_key=True),
    Column("granted_by", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

platform_requests = Table(
    "platform_requests",
    metadata,
    # the client-supplied idempotency key of one mutating platform call, and the answer it got
    Column("idempotency_key", String(200), primary_key=True),
    Column("operation", String(64), nullable=False),
    Column("request_hash", String(64), nullable=False),  # SHA-256 of the call's canonical arguments
    Column("response", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

supervisor_profiles = Table(
    "supervisor_profiles",
    metadata,
    Column("supervisor_id", String(200), ForeignKey("identities.identity_id"), primary_key=True),
    Column("specialties", JSONType, nullable=False),  # sorted list of workflow types
    Column("available", Boolean, nullable=False, default=True),
    Column("price_per_approval_micro", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

supervisor_ratings = Table(
    "supervisor_ratings",
    metadata,
    Column("supervisor_id", String(200), ForeignKey("identities.identity_id"), primary_key=True),
    Column("workflow_id", String(64), primary_key=True),
    Column("rating", Integer, nullable=False),  # 1..5
    Column("review", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
)

approval_quality = Table(
    "approval_quality",
    metadata,
    Column("supervisor_id", String(200), ForeignKey("identities.identity_id"), primary_key=True),
    Column("workflow_id", String(64), primary_key=True),
    Column("quality_score", Float, nullable=False),  # 0..1; a score, not money
    Column("created_at", UTCDateTime, nullable=False),
)

supervisor_assignments = Table(
    "supervisor_assignments",
    metadata,
    Column("workflow_id", String(64), primary_key=True),
    Column("supervisor_id", String(200), ForeignKey("identities.identity_id"), nullable=False, index=True),
    Column("assigned_at", UTCDateTime, nullable=False),
)

platform_outbox = Table(
    "platform_outbox",
    metadata,
    # One call the engine owes a remote x402 platform, written in the same transaction as the local
    # change it mirrors and delivered after commit (a transactional outbox). The idempotency key is
    # derived from what the call is (``lock:<wf>``, ``release:<wf>:<checkpoint>``), so a redelivery after
    # a crash or a lost response can never pay twice on the platform.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workflow_id", String(64), nullable=False, index=True),
    Column("operation", String(64), nullable=False),
    Column("arguments", JSONType, nullable=False),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("status", String(16), nullable=False, index=True),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("result", JSONType, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
)

# --- escrow funding through x402 (revision 0005; saferun/payments) ---------------------------------------

x402_token_transfers = Table(
    "x402_token_transfers",
    metadata,
    # The local facilitator's token ledger: SafeRun's stand-in for an EIP-3009 token contract on a chain.
    # Each row is one ERC-20 Transfer (a mint comes from the zero address); a balance is the SUM of what an
    # address received minus what it sent, never stored. Amounts are atomic token units (USDC has 6
    # decimals, so one unit is one SafeRun micro-unit). Addresses are lower-case hex.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tx_hash", String(66), nullable=False, unique=True),
    Column("network", String(64), nullable=False),
    Column("asset", String(42), nullable=False),
    Column("from_address", String(42), nullable=False),
    Column("to_address", String(42), nullable=False),
    Column("amount", BigInteger, nullable=False),
    # the EIP-3009 authorization nonce it consumed (NULL for a mint): an authorization is used once
    Column("nonce", String(66), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("network", "asset", "from_address", "nonce"),
)
Index(
    "ix_x402_token_transfers_receiver",
    x402_token_transfers.c.network,
    x402_token_transfers.c.asset,
    x402_token_transfers.c.to_address,
)

x402_payments = Table(
    "x402_payments",
    metadata,
    # Every x402 payment that settled (or may have settled) for a workflow's escrow, identified by what
    # the payer signed: one EIP-3009 authorization (payer, nonce) of one token on one network.
    Column("payment_id", String(64), primary_key=True),
    Column("workflow_id", String(64), ForeignKey("workflows.workflow_id"), nullable=False, index=True),
    Column("network", String(64), nullable=False),
    Column("asset", String(42), nullable=False),
    Column("payer", String(42), nullable=False),
    Column("nonce", String(66), nullable=False),
    Column("pay_to", String(42), nullable=False),
    Column("amount_micro", BigInteger, nullable=False),
    # credited (the escrow lock was posted) | unapplied (settled, but the workflow could no longer take it)
    # | unconfirmed (outcome unknown: the facilitator did not answer, or broadcast without confirming)
    Column("status", String(16), nullable=False),
    Column("tx_hash", String(100), nullable=True),
    Column("ledger_txn_id", String(64), nullable=True),
    Column("receipt", JSONType, nullable=True),  # the settlement answer sent as PAYMENT-RESPONSE
    Column("reason", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("network", "asset", "payer", "nonce"),
)

x402_funding_claims = Table(
    "x402_funding_claims",
    metadata,
    # The one payment a workflow is settling right now: a second payment is refused before it settles,
    # so no money moves for a workflow that is being (or has been) funded. A claim expires, so a process
    # that died mid-settlement cannot block its workflow forever.
    Column("workflow_id", String(64), ForeignKey("workflows.workflow_id"), primary_key=True),
    Column("network", String(64), nullable=False),
    Column("asset", String(42), nullable=False),
    Column("payer", String(42), nullable=False),
    Column("nonce", String(66), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# --- notifications: notices, their deliveries, decision links, e-mail addresses (revision 0006) ----------

notifications = Table(
    "notifications",
    metadata,
    # One notice that a request is waiting, was decided, expired or was cancelled, written in the same
    # transaction as that change (saferun/notifications), so it exists exactly when the change does: a
    # crash can lose neither the change nor its notice.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # waiting | decided | expired | cancelled
    Column("request_id", String(64), ForeignKey("approval_requests.request_id"), nullable=False),
    Column("workflow_id", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # when the one dispatcher that won it fanned it out into deliveries (NULL: not yet)
    Column("dispatched_at", UTCDateTime, nullable=True, index=True),
    UniqueConstraint("request_id", "kind"),
)

notification_deliveries = Table(
    "notification_deliveries",
    metadata,
    # One notice to one destination (a webhook URL or an e-mail address), retried with backoff until it is
    # delivered or gives up. ``next_attempt_at`` doubles as the lease of the process sending it.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("notification_id", Integer, ForeignKey("notifications.id"), nullable=False, index=True),
    Column("channel", String(16), nullable=False),  # webhook | own_webhook (a supervisor's) | email
    Column("target", String(2000), nullable=False),
    Column("format", String(16), nullable=False),  # json | slack (webhook), text (email)
    Column("status", String(16), nullable=False),  # pending | delivered | failed | skipped
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    UniqueConstraint("notification_id", "channel", "target"),
)
Index(
    "ix_notification_deliveries_due",
    notification_deliveries.c.status,
    notification_deliveries.c.next_attempt_at,
)

decision_links = Table(
    "decision_links",
    metadata,
    # A single-use link that decides one request as its assigned supervisor without signing in. Only the
    # SHA-256 of the token is stored (like API keys): a copy of this table decides nothing.
    Column("token_hash", String(64), primary_key=True),
    Column("request_id", String(64), ForeignKey("approval_requests.request_id"), nullable=False, index=True),
    Column("supervisor_id", String(200), nullable=False),
    Column("delivery_id", Integer, ForeignKey("notification_deliveries.id"), nullable=True, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),  # the request's own expiry
    Column("used_at", UTCDateTime, nullable=True),
    Column("decision", String(16), nullable=True),
)

identity_emails = Table(
    "identity_emails",
    metadata,
    # where an identity's notices go (``saferun identities email``); SAFERUN_NOTIFY_EMAILS is the fallback
    Column("identity_id", String(200), ForeignKey("identities.identity_id"), primary_key=True),
    Column("email", String(320), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# -- LangGraph checkpointer (saferun.integrations.langgraph.checkpoint) ---------------------------------
# LangGraph's own checkpoint model, kept as LangGraph defines it: a checkpoint row per (thread, namespace,
# id) without its channel values, one row per (channel, version) pointing at a content-addressed artifact
# (so an unchanged channel is never rewritten and an append-only one costs about one chunk), and the
# pending writes of a step. ``run_id`` is lifted out of the metadata so ``delete_for_runs`` is one DELETE.
lg_checkpoints = Table(
    "lg_checkpoints",
    metadata,
    Column("thread_id", String(255), primary_key=True),
    Column("checkpoint_ns", String(255), primary_key=True),
    Column("checkpoint_id", String(64), primary_key=True),
    Column("parent_checkpoint_id", String(64), nullable=True),
    Column("run_id", String(255), nullable=True, index=True),
    Column("checkpoint_type", String(32), nullable=False),
    Column("checkpoint", Blob, nullable=False),
    Column("metadata_type", String(32), nullable=False),
    Column("metadata", Blob, nullable=False),
    # {channel: version} on PostgreSQL, so one statement reads a checkpoint (migration 0022); NULL on SQLite
    Column("channel_versions", JSONType, nullable=True),
)

lg_blobs = Table(
    "lg_blobs",
    metadata,
    Column("thread_id", String(255), nullable=False),
    Column("checkpoint_ns", String(255), nullable=False),
    Column("channel", String(255), nullable=False),
    Column("version", String(255), nullable=False),
    Column("value_type", String(32), nullable=False),
    Column("artifact_uri", String(100), nullable=True),  # None for LangGraph's "empty" channel
    # the sha256 of the channel's part in that artifact: a read fetches and checks it without the
    # manifest (revision 0025; NULL in older rows, read through the manifest)
    Column("part_key", String(64), nullable=True),
    # version before channel: a step's rows (versions start with a growing counter) append together
    PrimaryKeyConstraint("thread_id", "checkpoint_ns", "version", "channel"),
    sqlite_with_rowid=False,  # looked up by key only: one b-tree on SQLite (migration 0021)
)

lg_writes = Table(
    "lg_writes",
    metadata,
    Column("thread_id", String(255), primary_key=True),
    Column("checkpoint_ns", String(255), primary_key=True),
    Column("checkpoint_id", String(64), primary_key=True),
    Column("task_id", String(255), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("channel", String(255), nullable=False),
    Column("value_type", String(32), nullable=False),
    Column("value", Blob, nullable=False),
    Column("task_path", Text, nullable=False),
    sqlite_with_rowid=False,  # looked up by key only: one b-tree on SQLite (migration 0021)
)

signing_keys = Table(
    "signing_keys",
    metadata,
    # Ed25519 keys that sign exported decision records (issue 16). The newest unretired key with a private
    # half signs; every key ever used stays here, public half only once retired, so old bundles verify.
    Column("key_id", String(64), primary_key=True),  # sha256 of the raw public key, hex, first 32 chars
    Column("algorithm", String(16), nullable=False),  # "Ed25519"
    Column("public_key", String(64), nullable=False),  # raw 32 bytes, hex
    Column("private_key", Text, nullable=True),  # PKCS#8 PEM; None for a key held outside the database
    Column("created_at", UTCDateTime, nullable=False),
    Column("retired_at", UTCDateTime, nullable=True),
)

# --- counts kept by the database (revision 0017; saferun/storage/counters.py) -----------------------------

counters = Table(
    "counters",
    metadata,
    # How many rows of a kind there are, kept by triggers on workflows, approval_requests and
    # approval_responses in the transaction that changes them, so /api/stats, a list's ``total`` and the
    # queue's badge read a few dozen rows instead of counting 100,000. A count is the SUM of ``n`` over its
    # (kind, key) rows: on PostgreSQL each change appends a signed delta row (no row lock for concurrent
    # writers to queue on, no deadlock between opposite transitions), and ``counters.compact`` folds them;
    # on SQLite (one writer at a time) each (kind, key) is one row updated in place.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("key", String(200), nullable=False),
    Column("n", BigInteger, nullable=False),
)
Index("ix_counters_kind_key", counters.c.kind, counters.c.key)
# SQLite only (revision 0023): its one row per count is what each trigger's UPSERT lands on
Index("ux_counters_kind_key", counters.c.kind, counters.c.key, unique=True).ddl_if(dialect="sqlite")
