"""The monitor agent: per-workflow rules over live telemetry that bring in a human when they fire."""

from saferun.agents.monitor.agent import MonitorAgent, Observation, load_config
from saferun.agents.monitor.telemetry import telemetry_from_state
from saferun.domain.monitor_rules import Alert, MonitorConfig, Telemetry, Verdict

__all__ = [
    "Alert",
    "MonitorAgent",
    "MonitorConfig",
    "Observation",
    "Telemetry",
    "Verdict",
    "load_config",
    "telemetry_from_state",
]
