"""SafeRun: supervised autonomy for AI agents.

Agents run on their own until a checkpoint; SafeRun stores their complete state durably, waits for a
human to approve, modify or reject, rolls back with compensations on rejection, and moves escrowed money
exactly as the work is approved.
"""

from saferun.core.rollback.reconciliation import CompensationRegistry, compensation, registry
from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResponse,
    CheckpointConfig,
    CheckpointSnapshot,
    ExecutionState,
    WorkflowConfig,
    WorkflowExecution,
)
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.states import WorkflowState
from saferun.errors import ApprovalExpired, ApprovalRejected, SafeRunError
from saferun.supervised import Decision, SupervisedRun, attach, current_run, supervised

__version__ = "0.1.0"

__all__ = [
    "ApprovalDecision",
    "ApprovalExpired",
    "ApprovalRejected",
    "ApprovalRequest",
    "ApprovalResponse",
    "CheckpointConfig",
    "CheckpointSnapshot",
    "CompensationRegistry",
    "Decision",
    "ExecutionState",
    "SafeRunError",
    "SupervisedRun",
    "WorkflowConfig",
    "WorkflowExecution",
    "WorkflowOrchestrator",
    "WorkflowState",
    "__version__",
    "attach",
    "compensation",
    "current_run",
    "registry",
    "supervised",
]
