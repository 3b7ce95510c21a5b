"""The executor's flight recorder: fills every ``ExecutionState`` field as the agent works.

The agent author should not have to build checkpoint states by hand, and a reviewer should see what
really happened, so everything that goes through the ``ExecutorAgent`` lands here: the conversation
and facts (``agent_memory``), each model or tool call with a short payload and response summary
(``api_calls``), results (``intermediate_outputs``), reasoning steps (``decision_trace``), what the agent
was given (``inputs``), confidence, and the resources spent.

Three rules hold for everything recorded:

- **plain JSON only**, because states are stored as canonical JSON; values are converted on the way in
  (``Decimal`` and dates become strings) rather than refused at the checkpoint.
- **no secrets**: payload and response summaries are built after redacting secret-named keys
  (``api_key``, ``authorization``, ``password``, ``*_token``...) and key-shaped strings (``sk-...``,
  ``Bearer ...``), then truncated to ``SUMMARY_LIMIT`` characters. Full payloads are never stored.
- **one source of truth for money and tokens**: ``resource_consumption`` is computed from the recorded
  calls (each carries its exact cost as a decimal string), so a state restored after a rollback adds up
  exactly as before. Only ``execution_time_seconds`` is kept separately: it counts time spent inside
  executor calls, not time spent waiting for a reviewer.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from saferun.core.state_machine.models import ExecutionState

SUMMARY_LIMIT = 200
REDACTED = "[redacted]"

_SECRET_KEYS = {
    "api_key",
    "apikey",
    "x_api_key",
    "authorization",
    "proxy_authorization",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "token",
    "cookie",
    "set_cookie",
    "private_key",
    "credentials",
}
_SECRET_SUFFIXES = ("_api_key", "_secret", "_password", "_token", "_private_key")
_SECRET_TEXT = re.compile(r"sk-[A-Za-z0-9_\-]{12,}|(?i:bearer|basic)\s+[A-Za-z0-9._\-~+/]{8,}=*")


def is_secret_key(key: str) -> bool:
    norm = key.strip().lower().replace("-", "_")
    return norm in _SECRET_KEYS or norm.endswith(_SECRET_SUFFIXES)


def redact(value: Any) -> Any:
    """``value`` with secret-named entries replaced, at any depth."""
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if isinstance(k, str) and is_secret_key(k) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    return value


def summarize(value: Any, limit: int = SUMMARY_LIMIT) -> str:
    """A short, secret-free, one-string description of ``value`` for a reviewer to read."""
    if isinstance(value, str):
        text = value
    elif status_of(value) is not None and isinstance(getattr(value, "text", None), str):
        text = f"{status_of(value)} {value.text}"  # an HTTP response: its status and body
    else:
        try:
            text = json.dumps(redact(value), default=_fallback, sort_keys=True, ensure_ascii=False)
        except (TypeError, ValueError):  # circular, or something even _fallback cannot name
            text = repr(value)
    text = _SECRET_TEXT.sub(REDACTED, " ".join(text.split()))
    if len(text) > limit:
        return f"{text[:limit]}… (+{len(text) - limit} chars)"
    return text


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON (what a checkpoint can store): exotic scalars become strings."""
    try:
        return json.loads(json.dumps(value, default=_fallback))
    except (TypeError, ValueError):
        return summarize(value, 2000)


def _fallback(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def status_of(obj: Any) -> int | None:
    """The HTTP status a result or an error carries: ``status_code``, ``status`` or
    ``response.status_code``; ``None`` when it carries none."""
    for candidate in (obj, getattr(obj, "response", None)):
        if candidate is None:
            continue
        for attr in ("status_code", "status"):
            value = getattr(candidate, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
    return None


def started_at() -> str:
    """The timestamp every recorded call carries (UTC, ISO 8601)."""
    return datetime.now(UTC).isoformat()


class Recorder:
    """Collects what an ``ExecutionState`` holds; ``to_state`` turns it into one (a deep copy)."""

    def __init__(self) -> None:
        self.memory: dict[str, Any] = {"conversation": [], "facts": {}}
        self.api_calls: list[dict[str, Any]] = []
        self.outputs: dict[str, Any] = {}
        self.trace: list[str] = []
        self.inputs: dict[str, Any] = {}
        self.confidence: dict[str, float] = {}
        self.seconds = 0.0
        self._depth = 0
        self._since = 0.0

    # ---------------------------------------------------------------------------------- recording
    @contextmanager
    def active(self) -> Iterator[None]:
        """Count the time spent in here (nested or overlapping uses are counted once)."""
        if self._depth == 0:
            self._since = time.perf_counter()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.seconds += time.perf_counter() - self._since

    def note(self, step: str) -> None:
        self.trace.append(step)

    def say(self, role: str, text: str) -> None:
        self.memory.setdefault("conversation", []).append(f"{role}: {text}")

    def remember(self, key: str, value: Any) -> None:
        self.memory.setdefault("facts", {})[key] = jsonable(value)

    def output(self, key: str, value: Any) -> None:
        self.outputs[key] = jsonable(value)

    def call(
        self,
        *,
        kind: str,
        endpoint: str,
        method: str,
        payload: Any,
        started_at: str,
        duration: float,
        response: Any = None,
        error: BaseException | None = None,
        status: int | str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Record one call. ``status`` defaults to the HTTP status the response or error carries, else
        ``"ok"``/``"error"``."""
        if status is None:
            status = status_of(error if error is not None else response) or ("error" if error else "ok")
        entry: dict[str, Any] = {
            "timestamp": started_at,
            "kind": kind,
            "endpoint": endpoint,
            "method": method,
            "status": status,
            "duration_ms": round(duration * 1000, 3),
            "payload_summary": summarize(payload),
        }
        if error is not None:
            entry["error"] = summarize(f"{type(error).__name__}: {error}")
        else:
            entry["response_summary"] = summarize(response)
        entry.update(jsonable(extra))
        self.api_calls.append(entry)
        return entry

    # ---------------------------------------------------------------------------------- reading
    def cost_usd(self) -> Decimal:
        """Exact dollars of every priced model call recorded so far."""
        return sum(
            (Decimal(c["cost_usd"]) for c in self.api_calls if isinstance(c.get("cost_usd"), str)),
            Decimal(0),
        )

    def resource_consumption(self) -> dict[str, float]:
        """The seed's four keys (``api_calls``, ``tokens_used``, ``execution_time_seconds``,
        ``estimated_cost_usd``) and the detail behind them. The cost is the exact decimal as a float,
        because the seed's field is ``dict[str, float]``; each call keeps its exact string."""
        model = [c for c in self.api_calls if c.get("kind") == "model"]
        tokens_in = sum(int(c.get("input_tokens") or 0) for c in model)
        tokens_out = sum(int(c.get("output_tokens") or 0) for c in model)
        return {
            "api_calls": float(len(self.api_calls)),
            "tokens_used": float(tokens_in + tokens_out),
            "execution_time_seconds": round(self.seconds, 6),
            "estimated_cost_usd": float(self.cost_usd()),
            "input_tokens": float(tokens_in),
            "output_tokens": float(tokens_out),
            "model_calls": float(len(model)),
            "tool_calls": float(sum(1 for c in self.api_calls if c.get("kind") == "tool")),
            "failed_api_calls": float(sum(1 for c in self.api_calls if "error" in c)),
            "unpriced_model_calls": float(
                sum(1 for c in model if "error" not in c and c.get("cost_usd") is None)
            ),
        }

    def to_state(self, checkpoint_id: str, **extra: Any) -> ExecutionState:
        """The recorded state as an ``ExecutionState``. Fields given in ``extra`` win (``parameters``,
        ``planned_next_steps``, ``risk_assessment``, or a replacement for a recorded field)."""
        recorded: dict[str, Any] = {
            "agent_memory": self.memory,
            "api_calls": self.api_calls,
            "intermediate_outputs": self.outputs,
            "decision_trace": self.trace,
            "inputs": self.inputs,
            "confidence_scores": self.confidence,
        }
        fields = copy.deepcopy(recorded)
        fields["resource_consumption"] = self.resource_consumption()
        fields.update(extra)
        return ExecutionState(checkpoint_id=checkpoint_id, **fields)

    def restore(self, state: ExecutionState) -> None:
        """Continue from a captured state (after a rollback, or in a restarted process)."""
        self.memory = copy.deepcopy(state.agent_memory)
        self.memory.setdefault("conversation", [])
        self.memory.setdefault("facts", {})
        self.api_calls = copy.deepcopy(state.api_calls)
        self.outputs = copy.deepcopy(state.intermediate_outputs)
        self.trace = list(state.decision_trace)
        self.inputs = copy.deepcopy(state.inputs)
        self.confidence = dict(state.confidence_scores)
        self.seconds = float(state.resource_consumption.get("execution_time_seconds", 0.0))
