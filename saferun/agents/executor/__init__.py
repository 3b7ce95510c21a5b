"""The executor agent: runs tasks through a model provider and records everything a checkpoint needs."""

from saferun.agents.executor.agent import ExecutorAgent
from saferun.agents.executor.pricing import ModelPrice
from saferun.agents.executor.providers import (
    AnthropicProvider,
    Completion,
    OfflineProvider,
    Provider,
    ProviderError,
    make_provider,
    register_provider,
)
from saferun.agents.executor.recorder import Recorder

__all__ = [
    "AnthropicProvider",
    "Completion",
    "ExecutorAgent",
    "ModelPrice",
    "OfflineProvider",
    "Provider",
    "ProviderError",
    "Recorder",
    "make_provider",
    "register_provider",
]
