"""The reconciliation agent: a rejected workflow's compensations and cleanup, reported in full."""

from saferun.agents.reconciliation.agent import ReconciliationAgent, ReconciliationReport
from saferun.agents.reconciliation.cleanup import CleanupRegistry, cleanup, cleanup_registry

__all__ = ["CleanupRegistry", "ReconciliationAgent", "ReconciliationReport", "cleanup", "cleanup_registry"]
