"""What a Claude answer cost: a price table per model, and the dollars shown in its receipt.

Prices are in US dollars per million tokens, input and output apart. Operators extend or correct
the table with `AICO_PRICES`, e.g. `claude-sonnet-4-5=3/15, claude-opus-4-1=15/75`. A model the
table does not know has no cost: the receipt says so rather than guess.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

PER_TOKENS = 1_000_000
_FORM = "model=input/output (USD per million tokens, e.g. claude-sonnet-4-5=3/15)"


class Price(NamedTuple):
    input: float  # USD per million input tokens
    output: float  # USD per million output tokens


class Prices(Mapping[str, Price]):
    """A frozen table: model id -> Price. A model is priced by its own id, or else by the longest
    id in the table that it extends (`claude-sonnet-4-5` prices `claude-sonnet-4-5-20250929`)."""

    __slots__ = ("_table",)
    _table: Mapping[str, Price]

    def __init__(self, table: Mapping[str, tuple[float, float]] | None = None) -> None:
        frozen = MappingProxyType({m: Price(*p) for m, p in (table or {}).items()})
        object.__setattr__(self, "_table", frozen)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Prices is frozen; combine tables with |")

    def __getitem__(self, model: str) -> Price:
        return self._table[model]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __hash__(self) -> int:
        return hash(frozenset(self._table.items()))

    def __repr__(self) -> str:
        return f"Prices({dict(self._table)!r})"

    def __or__(self, other: Mapping[str, tuple[float, float]]) -> Prices:
        """This table, with `other`'s entries added or overriding."""
        return Prices({**self._table, **other})

    @classmethod
    def parse(cls, text: str) -> Prices:
        """Read `model=input/output, …` (USD per million tokens); ValueError names a bad entry."""
        table: dict[str, Price] = {}
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                continue
            model, price = _entry(entry)
            if model in table:
                raise ValueError(f"{model!r} is priced twice")
            table[model] = price
        return cls(table)

    def price(self, model: str) -> Price | None:
        """The model's price: its own entry, else the longest entry it extends; None if neither."""
        if model in self._table:
            return self._table[model]
        extended = [known for known in self._table if _extends(model, known)]
        return self._table[max(extended, key=len)] if extended else None

    def cost(self, model: str, usage: Mapping[str, Any]) -> float | None:
        """USD for `usage` ({input_tokens, output_tokens}); None for an unpriced model or usage
        without its token counts."""
        price = self.price(model)
        tokens = usage.get("input_tokens"), usage.get("output_tokens")
        if price is None or None in tokens:
            return None
        return (tokens[0] * price.input + tokens[1] * price.output) / PER_TOKENS


def _entry(entry: str) -> tuple[str, Price]:
    bad = f"price entry {entry!r} is not {_FORM}"
    model, equals, rates = (part.strip() for part in entry.partition("="))
    halves = [r.strip() for r in rates.split("/")]
    if not (model and equals and len(halves) == 2):
        raise ValueError(bad)
    try:
        values = [float(h) for h in halves]
    except ValueError:
        raise ValueError(bad) from None
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"price entry {entry!r}: prices must be 0 or more")
    return model, Price(*values)


def _extends(model: str, known: str) -> bool:
    """Whether `model` is `known` with a suffix, cut at a dash: `claude-opus-4-1-20250805` extends
    `claude-opus-4-1`; `claude-opus-4-10` does not extend `claude-opus-4-1`."""
    stem = known if known.endswith("-") else known + "-"
    return model.startswith(stem)


def usd(value: float | None) -> str:
    """Dollars for a receipt: `$0.0123` below a dollar, `$1.25` from one, or `cost unknown`."""
    if value is None:
        return "cost unknown"
    if 0 < value < 0.00005:
        return "< $0.0001"
    return f"${value:.4f}" if round(value, 4) < 1 else f"${value:,.2f}"


# List prices (USD per million tokens) of the Claude models, by the ids aico may ask for. Ids
# are listed one by one, not by family, so that a newer model at another price (Opus 4.5 costs
# less than Opus 4.1) shows "cost unknown" until it is priced, instead of a wrong number.
DEFAULT_PRICES = Prices(
    {
        "claude-sonnet-4-5": Price(3, 15),
        "claude-sonnet-4-0": Price(3, 15),
        "claude-sonnet-4-20250514": Price(3, 15),
        "claude-opus-4-1": Price(15, 75),
        "claude-opus-4-0": Price(15, 75),
        "claude-opus-4-20250514": Price(15, 75),
        "claude-haiku-4-5": Price(1, 5),
        "claude-3-5-haiku": Price(0.8, 4),
    }
)
