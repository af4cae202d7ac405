"""Every use of genai-prices' private parts, in one place.

`flows.pricing` prices a call in a few µs instead of `calc_price`'s ~80 µs by compiling each
`ModelPrice` once and by reading usage blocks without the extractor's per-value machinery.
Both lean on genai-prices internals, which any release may change:

- `genai_prices.types._collect_resolved_model_prices`, `genai_prices.units._get_registry()`
  and its `_reported_usage_keys`, `genai_prices.decompose._negative_leaf_error_message`,
  `genai_prices._usage.subtract_usage_values`: the price units of a ModelPrice and how usage
  decomposes into leaves (what `calc_price` does on every call);
- `Usage.__dict__` (the reported values, without the properties that infer the rest) and
  `Usage.__new__` (a Usage from plain ints);
- a UsageExtractor's `root` and `mappings` (`path`, `dest`, `required`).

genai-prices is pinned exactly in pyproject.toml for this reason. To upgrade:
1. bump the pin, reinstall (`pip install -e '.[dev]'`);
2. run `pytest tests/test_pricing.py`: its differential tests price random usage for flat and
   tiered models through `Pricer` and through `genai_prices.calc_price` and require the same
   Decimal to the last digit; an import error or a mismatch points here;
3. fix this module only (the rest of the code uses public names), then update the pin comment.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from genai_prices import data_snapshot
from genai_prices._usage import subtract_usage_values
from genai_prices.decompose import _negative_leaf_error_message, is_descendant_or_self
from genai_prices.types import (
    ModelPrice,
    TieredPrices,
    Usage,
    _collect_resolved_model_prices,
    calc_unit_price,
)
from genai_prices.units import _get_registry
from genai_prices.validation import validate_priced_units


def price_snapshot() -> data_snapshot.DataSnapshot:
    """The price list genai-prices ships (providers, models, extractors)."""
    return data_snapshot.get_snapshot()


def reported_values(usage: Usage) -> dict[str, Any]:
    """The values a Usage was given, without inferring the others."""
    return usage.__dict__


class CompiledPrice:
    """One ModelPrice, resolved once: its priced units in leaf-decomposition order."""

    def __init__(self, model_price: ModelPrice) -> None:
        registry = _get_registry()
        resolved = _collect_resolved_model_prices(model_price, registry)
        validate_priced_units(tuple(unit for unit, _ in resolved), registry)
        self.model_price = model_price
        self.tiered = any(isinstance(price, TieredPrices) for _, price in resolved)
        self.resolved = resolved
        counted = {unit.usage_key: unit for unit, _ in resolved if unit.usage_key != "requests"}
        self.units = sorted(counted.values(), key=lambda unit: (-len(unit.dimensions), unit.usage_key))
        self.descendants = [
            tuple(d.usage_key for d in self.units if d is not unit and is_descendant_or_self(unit, d))
            for unit in self.units
        ]
        self.terms = [(unit.usage_key, price, unit.per, unit.dimensions.get("direction")) for unit, price in resolved]
        self._inferred: dict[frozenset[str], dict[str, Any]] = {}

    def calc(self, usage: Usage) -> tuple[Decimal, Decimal, Decimal]:
        if self.tiered:
            calculated = self.model_price.calc_price(usage)
            return calculated["input_price"], calculated["output_price"], calculated["total_price"]
        reported = reported_values(usage)
        leaves: dict[str, Any] = {}
        inferred = None
        for unit, descendants in zip(self.units, self.descendants, strict=True):
            value = reported.get(unit.usage_key)
            if value is None:
                if inferred is None:
                    inferred = self._inferred_values(usage)
                value = self._infer(usage, unit.usage_key, inferred)
            if descendants:
                below = [leaves[key] for key in descendants]
                if type(value) is int and all(type(v) is int for v in below):
                    leaf = value - sum(below)
                else:
                    leaf = subtract_usage_values(value, below)
                if leaf < 0:
                    raise ValueError(_negative_leaf_error_message(unit, self.units, usage, leaf))
            else:
                leaf = value
            leaves[unit.usage_key] = leaf
        input_price = output_price = total_price = Decimal(0)
        for usage_key, price, per, direction in self.terms:
            count = 1 if usage_key == "requests" else leaves[usage_key]
            if not count:
                continue  # adds an exact zero; skipping it changes no value
            unit_price = calc_unit_price(price, count, 0, per)
            total_price += unit_price
            if direction == "input":
                input_price += unit_price
            elif direction == "output":
                output_price += unit_price
        return input_price, output_price, total_price

    def _inferred_values(self, usage: Usage) -> dict[str, Any]:
        """genai-prices' values for unreported keys (0, or an error) depend only on which keys
        were reported non-zero: cached per such set."""
        nonzero = frozenset(key for key, value in usage.__dict__.items() if value)
        return self._inferred.setdefault(nonzero, {})

    @staticmethod
    def _infer(usage: Usage, usage_key: str, known: dict[str, Any]) -> Any:
        if usage_key not in known:
            try:
                known[usage_key] = getattr(usage, usage_key)
            except ValueError as exc:
                known[usage_key] = exc
        value = known[usage_key]
        if isinstance(value, ValueError):
            raise value
        return value


class FastExtractor:
    """A genai-prices UsageExtractor for plain key paths, without its per-value type machinery.

    Anything unusual (a missing required value, a non-int value, a path it cannot follow)
    goes to the original extractor, which gives the same result or the same error.
    """

    def __init__(self, extractor: Any) -> None:
        self.original = extractor
        root = extractor.root
        self.root = [root] if isinstance(root, str) else list(root)
        reported = _get_registry()._reported_usage_keys
        self.mappings = [
            ([m.path] if isinstance(m.path, str) else list(m.path), m.dest, m.required)
            for m in extractor.mappings
            if m.dest in reported
        ]
        self.plain = all(isinstance(step, str) for path, _, _ in self.mappings for step in path) and all(
            isinstance(step, str) for step in self.root
        )

    def extract(self, data: dict[str, Any]) -> Usage:
        values = self._fast(data) if self.plain else None
        if values is None:
            return cast(Usage, self.original.extract(data)[1])
        usage = Usage.__new__(Usage)
        usage.__dict__.update(values)
        return usage

    def _fast(self, data: Any) -> dict[str, int] | None:
        for step in self.root:
            if type(data) is not dict or step not in data:
                return None
            data = data[step]
        if type(data) is not dict:
            return None
        values: dict[str, int] = {}
        for path, dest, required in self.mappings:
            value: Any = data
            for step in path:
                if type(value) is not dict or step not in value:
                    value = None
                    break
                value = value[step]
            if value is None:
                if required:
                    return None
                continue
            if type(value) is not int or value < 0:
                return None
            values[dest] = values.get(dest, 0) + value
        return values if values or not self.mappings else None
