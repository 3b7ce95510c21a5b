"""What a pause is given, checked before anything is written: the state's parts, the reviewer's material
and a checkpoint's items. No I/O: every refusal here is an ``InvalidInput`` naming the field, raised
before the pause takes its lock, so a bad call never leaves half a checkpoint behind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from saferun.core.checkpoints.capture import state_parts
from saferun.core.state_machine.models import CheckpointItem, ExecutionState
from saferun.domain import parameter_schema as param_schema
from saferun.domain.canonical import check_json
from saferun.errors import InvalidInput


def parts_of(state: ExecutionState) -> dict[str, bytes]:
    if not isinstance(state, ExecutionState):
        raise InvalidInput("state", f"expected an ExecutionState, got {type(state).__name__}")
    return state_parts(state)


@dataclass(frozen=True)
class Review:
    """What a reviewer is shown beside the state, checked before any write."""

    summary: str
    context: dict[str, Any]
    decision_needed: str | None
    recommendation: str | None
    confidence: float | None
    risk: dict[str, Any]
    alerts: list[dict[str, Any]]
    parameter_schema: dict[str, Any] | None = None

    @classmethod
    def checked(
        cls,
        summary: str,
        context: dict[str, Any] | None = None,
        decision_needed: str | None = None,
        recommendation: str | None = None,
        confidence: float | None = None,
        risk: dict[str, Any] | None = None,
        alerts: list[dict[str, Any]] | None = None,
        parameter_schema: dict[str, Any] | None = None,
    ) -> Review:
        if not isinstance(summary, str) or not summary.strip():
            raise InvalidInput("summary", "a reviewer needs a non-empty summary")
        if confidence is not None and not 0 <= confidence <= 1:
            raise InvalidInput("confidence", f"must be between 0 and 1, got {confidence}")
        review = cls(
            summary,
            dict(context or {}),
            decision_needed,
            recommendation,
            confidence,
            dict(risk or {}),
            list(alerts or []),
            None if parameter_schema is None else param_schema.check_declared(parameter_schema),
        )
        for name in ("context", "risk", "alerts"):
            check_json(getattr(review, name), name)
        return review


def checked_items(items: Any) -> list[CheckpointItem]:
    """The items as models, refused before any write: not a list, empty, a bad or repeated key."""
    if not isinstance(items, list | tuple):
        raise InvalidInput("items", f"expected a list of items, got {type(items).__name__}")
    if not items:
        raise InvalidInput("items", "a checkpoint with items needs at least one")
    checked: list[CheckpointItem] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        try:
            model = item if isinstance(item, CheckpointItem) else CheckpointItem.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise InvalidInput(f"items.{i}" + (f".{where}" if where else ""), err["msg"]) from None
        if model.key in seen:
            raise InvalidInput(f"items.{i}.key", f"{model.key!r} repeats item {seen[model.key]}'s key")
        seen[model.key] = i
        checked.append(model)
    return checked


def item_review(i: int, item: CheckpointItem, shared: Review) -> Review:
    """An item's review: its own summary, decision, context and schema, else the checkpoint's."""
    try:
        return Review.checked(
            item.summary if item.summary is not None else f"{item.key}: {shared.summary}",
            item.context if item.context is not None else shared.context,
            item.decision_needed or shared.decision_needed,
            shared.recommendation,
            shared.confidence,
            shared.risk,
            shared.alerts,
            item.parameter_schema if item.parameter_schema is not None else shared.parameter_schema,
        )
    except InvalidInput as exc:
        raise InvalidInput(f"items.{i}.{exc.field}", str(exc).split(": ", 1)[-1]) from None
