"""``ExecutorAgent``: does the work and records what an ``ExecutionState`` needs while doing it.

The model behind it is a *provider*. The default is ``OfflineProvider``: deterministic, no key, no
network, so every example and test runs anywhere; it answers with a structured plan derived from the
task text. (Provider choice by configuration, including Anthropic's SDK, is a later issue.)
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from saferun.core.state_machine.models import ExecutionState


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


class Provider(Protocol):
    name: str

    async def complete(self, prompt: str) -> Completion: ...


class OfflineProvider:
    """A deterministic stand-in for a model: same prompt, same answer; token counts are word counts."""

    name = "offline"

    async def complete(self, prompt: str) -> Completion:
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
        words = prompt.split()
        text = f"Plan {digest}: " + "; ".join(f"step {i + 1}: {w}" for i, w in enumerate(words[:5]))
        return Completion(text=text, input_tokens=len(words), output_tokens=len(text.split()), cost_usd=0.0)


@dataclass
class ExecutorAgent:
    agent_id: str
    provider: Provider = field(default_factory=OfflineProvider)
    memory: dict[str, Any] = field(default_factory=lambda: {"conversation": [], "facts": {}})
    api_calls: list[dict[str, Any]] = field(default_factory=list)
    decision_trace: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    tokens_used: int = 0
    cost_usd: float = 0.0
    elapsed: float = 0.0

    async def execute_task(self, task: str, context: dict[str, Any]) -> dict[str, Any]:
        """Run one task; returns ``{"task", "result", "agent_id"}`` and records telemetry on the agent."""
        started = time.perf_counter()
        prompt = f"{task}\nContext: {sorted(context)}" if context else task
        self.memory["conversation"].append(f"task: {task}")
        self.decision_trace.append(f"Asked {self.provider.name} provider to handle: {task}")
        completion = await self.provider.complete(prompt)
        self.api_calls.append(
            {
                "timestamp": datetime.now(UTC).isoformat(),
                "endpoint": f"provider:{self.provider.name}",
                "method": "complete",
                "status": 200,
                "payload_summary": task[:200],
                "response_summary": completion.text[:200],
            }
        )
        self.memory["conversation"].append(f"result: {completion.text}")
        self.tokens_used += completion.input_tokens + completion.output_tokens
        self.cost_usd += completion.cost_usd
        self.elapsed += time.perf_counter() - started
        self.outputs[task] = completion.text
        self.decision_trace.append(f"Produced a result of {len(completion.text)} characters")
        return {"task": task, "result": completion.text, "agent_id": self.agent_id}

    def snapshot(self, checkpoint_id: str, **extra: Any) -> ExecutionState:
        """The agent's state as recorded so far, ready for ``create_checkpoint``."""
        return ExecutionState(
            checkpoint_id=checkpoint_id,
            agent_memory=self.memory,
            api_calls=self.api_calls,
            intermediate_outputs=self.outputs,
            decision_trace=self.decision_trace,
            resource_consumption={
                "tokens_used": self.tokens_used,
                "api_calls": len(self.api_calls),
                "execution_time_seconds": round(self.elapsed, 6),
                "estimated_cost_usd": self.cost_usd,
            },
            **extra,
        )
