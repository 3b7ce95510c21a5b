"""The supervisor agent: approval requests with a recommendation, and a human's decision as a response."""

from saferun.agents.supervisor.agent import SupervisorAgent
from saferun.domain.recommendation import Advice, Recommendation, recommend

__all__ = ["Advice", "Recommendation", "SupervisorAgent", "recommend"]
