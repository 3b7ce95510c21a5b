"""What a model call cost, in exact decimal dollars, from a per-model price table.

Cost is computed with ``Decimal`` so a run of many small calls adds up exactly; it is turned into a
float only where the seed's ``ExecutionState.resource_consumption`` (``dict[str, float]``) asks for one.

Prices are Anthropic's published list prices (standard tier, USD per million tokens) for the models
listed here. A model not in the table is *unpriced*: its tokens are still counted, but its cost is
``None`` and the recorder counts it under ``unpriced_model_calls`` rather than pretending it was free.
Pass ``price=ModelPrice(...)`` to ``ExecutorAgent`` (or ``AnthropicProvider``) to price such a model, or to
override a price that has changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens. ``long_prompt_*`` apply to every token of a request whose prompt is longer
    than ``long_prompt_threshold`` input tokens (Haiku 5.5 bills long prompts at a higher band)."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    long_prompt_threshold: int | None = None
    long_input_per_mtok: Decimal | None = None
    long_output_per_mtok: Decimal | None = None

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        inp, out = self.input_per_mtok, self.output_per_mtok
        if self.long_prompt_threshold is not None and input_tokens > self.long_prompt_threshold:
            inp = self.long_input_per_mtok if self.long_input_per_mtok is not None else inp
            out = self.long_output_per_mtok if self.long_output_per_mtok is not None else out
        return (Decimal(input_tokens) * inp + Decimal(output_tokens) * out) / MILLION


def _p(inp: str, out: str) -> ModelPrice:
    return ModelPrice(Decimal(inp), Decimal(out))


# Keys are model ids without a date suffix; a dated id (claude-sonnet-4-5-20250929) is looked up by its
# base. Matching is exact, never by prefix, so claude-opus-4-6 can never be billed as claude-opus-4.
PRICES: dict[str, ModelPrice] = {
    "claude-fable-5-1": _p("10", "50"),
    "claude-opus-5-5": _p("4", "20"),
    "claude-opus-5": _p("5", "25"),
    "claude-sonnet-5-5": _p("2", "10"),
    "claude-sonnet-5": _p("2", "10"),
    "claude-haiku-5-5": ModelPrice(
        Decimal("0.10"),
        Decimal("0.50"),
        long_prompt_threshold=100_000,
        long_input_per_mtok=Decimal("0.50"),
        long_output_per_mtok=Decimal("2.50"),
    ),
    "claude-opus-4-6": _p("5", "25"),
    "claude-opus-4-5": _p("5", "25"),
    "claude-opus-4-1": _p("15", "75"),
    "claude-opus-4-0": _p("15", "75"),
    "claude-opus-4": _p("15", "75"),
    "claude-sonnet-4-6": _p("3", "15"),
    "claude-sonnet-4-5": _p("3", "15"),
    "claude-sonnet-4-0": _p("3", "15"),
    "claude-sonnet-4": _p("3", "15"),
    "claude-haiku-4-5": _p("1", "5"),
}

_DATE_SUFFIX = re.compile(r"-\d{8}$")


def price_for(model: str, table: dict[str, ModelPrice] | None = None) -> ModelPrice | None:
    """The price of ``model`` (alias or dated id), or ``None`` when the table does not know it."""
    prices = PRICES if table is None else table
    return prices.get(model) or prices.get(_DATE_SUFFIX.sub("", model))


def estimate_cost(
    model: str, input_tokens: int, output_tokens: int, override: ModelPrice | None = None
) -> Decimal | None:
    """Exact dollars for one call, or ``None`` for an unpriced model (never a silent zero)."""
    price = override or price_for(model)
    return None if price is None else price.cost(input_tokens, output_tokens)
