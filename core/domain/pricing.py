"""What a Claude answer cost: a price table per model, and the dollars shown in its receipt.

Prices are in US dollars per million tokens, input and output apart. Operators extend or correct
the table with `AICO_PRICES`, e.g. `claude-sonnet-5-5=2/10, my-model=1/2/1.25/2/0.1` (input and
output, then optionally the 5-minute and 1-hour cache writes and cache reads). A model the table
does not know has no cost: the receipt says so rather than guess.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

PER_TOKENS = 1_000_000
_FORM = (
    "model=input/output[/cache write 5m/cache write 1h/cache read] "
    "(USD per million tokens, e.g. claude-sonnet-5-5=2/10)"
)


class Price(NamedTuple):
    """USD per million tokens. Cache rates left out follow Anthropic's standard multipliers of the
    input rate (writes 1.25x for 5 minutes and 2x for an hour, reads 0.1x). A model priced by
    prompt length (Haiku 5.5) multiplies every rate by `long_factor` for a request whose prompt
    (input, cache writes and reads) is over `long_over` tokens."""

    input: float
    output: float
    cache_write_5m: float | None = None
    cache_write_1h: float | None = None
    cache_read: float | None = None
    long_over: int = 0  # prompt tokens beyond which the long-prompt rates apply; 0: none
    long_factor: float = 1.0

    def rates(self) -> tuple[float, float, float, float, float]:
        """(input, output, 5-minute cache write, 1-hour cache write, cache read)."""
        return (
            self.input,
            self.output,
            self.input * 1.25 if self.cache_write_5m is None else self.cache_write_5m,
            self.input * 2.0 if self.cache_write_1h is None else self.cache_write_1h,
            self.input * 0.1 if self.cache_read is None else self.cache_read,
        )


class Prices(Mapping[str, Price]):
    """A frozen table: model id -> Price. A model is priced by its own id, or else by the longest
    id in the table that it extends (`claude-sonnet-4-5` prices `claude-sonnet-4-5-20250929`)."""

    __slots__ = ("_table",)
    _table: Mapping[str, Price]

    def __init__(self, table: Mapping[str, Price | tuple[float, float]] | None = None) -> None:
        """`table`: model -> Price, or a plain (input, output) pair."""
        prices = {m: p if isinstance(p, Price) else Price(*p) for m, p in (table or {}).items()}
        frozen = MappingProxyType(prices)
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

    def __or__(self, other: Mapping[str, Price]) -> Prices:
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
        """USD for `usage` as the Messages API reports it (input_tokens, output_tokens, and the
        cache's cache_creation_input_tokens, split by `cache_creation` into 5-minute and 1-hour
        writes when the API says so, and cache_read_input_tokens); None for an unpriced model or
        usage without its token counts."""
        price = self.price(model)
        given, made = usage.get("input_tokens"), usage.get("output_tokens")
        if price is None or given is None or made is None:
            return None
        written = int(usage.get("cache_creation_input_tokens") or 0)
        split = usage.get("cache_creation") or {}
        written_1h = int(split.get("ephemeral_1h_input_tokens") or 0)
        read = int(usage.get("cache_read_input_tokens") or 0)
        counts = (int(given), int(made), written - written_1h, written_1h, read)
        long = bool(price.long_over) and int(given) + written + read > price.long_over
        factor = price.long_factor if long else 1.0
        dollars = sum(n * rate for n, rate in zip(counts, price.rates(), strict=True))
        return dollars * factor / PER_TOKENS


def _entry(entry: str) -> tuple[str, Price]:
    bad = f"price entry {entry!r} is not {_FORM}"
    model, equals, rates = (part.strip() for part in entry.partition("="))
    parts = [r.strip() for r in rates.split("/")]
    if not (model and equals and len(parts) in (2, 5)):
        raise ValueError(bad)
    try:
        values = [float(h) for h in parts]
    except ValueError:
        raise ValueError(bad) from None
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"price entry {entry!r}: prices must be 0 or more")
    if len(values) == 2:
        return model, Price(values[0], values[1])
    return model, Price(values[0], values[1], values[2], values[3], values[4])


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


# List prices (USD per million tokens: input, output, 5-minute and 1-hour cache writes, cache
# reads) from Anthropic's pricing page, as of 2026-12-01, by the ids aico may ask for. Ids are
# listed one by one, not by family, so that a newer model at another price (Opus 5.5 costs less
# than Opus 5) shows "cost unknown" until it is priced, instead of a wrong number. Retired models
# stay, so that the receipts of tasks they answered keep their price.
DEFAULT_PRICES = Prices(
    {
        "claude-fable-5-1": Price(10, 50, 12.5, 20, 0.25),
        "claude-mythos-5-1": Price(10, 50, 12.5, 20, 0.25),
        "claude-fable-5": Price(10, 50, 12.5, 20, 1),
        "claude-mythos-5": Price(10, 50, 12.5, 20, 1),
        "claude-opus-5-5": Price(4, 20, 5, 8, 0.2),
        "claude-opus-5": Price(5, 25, 6.25, 10, 0.5),
        "claude-opus-4-8": Price(5, 25, 6.25, 10, 0.5),
        "claude-opus-4-7": Price(5, 25, 6.25, 10, 0.5),
        "claude-opus-4-6": Price(5, 25, 6.25, 10, 0.5),
        "claude-opus-4-5": Price(5, 25, 6.25, 10, 0.5),
        "claude-opus-4-1": Price(15, 75, 18.75, 30, 1.5),
        "claude-opus-4-0": Price(15, 75, 18.75, 30, 1.5),
        "claude-opus-4-20250514": Price(15, 75, 18.75, 30, 1.5),
        "claude-sonnet-5-5": Price(2, 10, 2.5, 4, 0.1),
        "claude-sonnet-5": Price(2, 10, 2.5, 4, 0.2),
        "claude-sonnet-4-6": Price(3, 15, 3.75, 6, 0.3),
        "claude-sonnet-4-5": Price(3, 15, 3.75, 6, 0.3),
        "claude-sonnet-4-0": Price(3, 15, 3.75, 6, 0.3),
        "claude-sonnet-4-20250514": Price(3, 15, 3.75, 6, 0.3),
        "claude-haiku-5-5": Price(0.1, 0.5, 0.125, 0.2, 0.01, long_over=100_000, long_factor=5),
        "claude-haiku-4-5": Price(1, 5, 1.25, 2, 0.1),
        "claude-3-5-haiku": Price(0.8, 4, 1, 1.6, 0.08),
    }
)
