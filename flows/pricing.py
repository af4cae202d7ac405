"""Cost of a call, in Decimal, with genai-prices as the one price list and usage mapper.

`Pricer.price(...)` normalizes the provider's raw usage block with genai-prices' own
extractor (so OpenAI's cached tokens, which `prompt_tokens` includes, and Anthropic's cache
reads/writes, which `input_tokens` excludes, mean the same thing afterwards) and prices it
with the model's `ModelPrice`. A plain `genai_prices.calc_price` costs ~80 µs (model lookup,
price-unit validation and leaf decomposition on every call); here the lookup is cached per
(provider, model), and each `ModelPrice` is compiled once into its priced units in
decomposition order, so a call costs a few µs and gives the same Decimal to the last digit
(the tests compare against `calc_price`). Tiered prices take genai-prices' own path. What
this needs of genai-prices' internals is in `flows.genai_prices_adapter`, with how to upgrade.

Unknown model, unknown API flavor or inconsistent usage: cost None and `unpriced=True`, never
0. A price-override file (TOKENTRAIL_PRICE_OVERRIDES) prices negotiated or self-hosted models.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from genai_prices.types import ModelInfo, ModelPrice, Usage

from flows.genai_prices_adapter import CompiledPrice, FastExtractor, price_snapshot, reported_values
from tokentrail.settings import ConfigError

OVERRIDE_PRICE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
"""Per-million-token USD prices an override may set (genai-prices' own price keys)."""

TOKEN_FIELDS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_tokens": "cache_read_tokens",
    "cache_write_tokens": "cache_write_tokens",
    "reasoning_tokens": "output_reasoning_tokens",
}
"""Our token columns -> genai-prices usage keys (input_tokens includes cache reads/writes)."""


class PricedUsage(NamedTuple):
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    input_cost: Decimal | None
    output_cost: Decimal | None
    cost: Decimal | None
    unpriced: bool
    problem: str | None = None
    """Why the call is unpriced, for the event payload."""


OPENAI_WIRE = "openai"
MODEL_CACHE_SIZE = 4096
"""Distinct (provider, model) lookups a Pricer remembers; past it the cache starts over."""


class Pricer:
    """Prices calls; one per flow worker (its caches are plain dicts)."""

    def __init__(self, overrides: dict[tuple[str, str], ModelPrice] | None = None) -> None:
        self._snapshot = price_snapshot()
        self._overrides = dict(overrides or {})
        self._extractors: dict[tuple[str, str], FastExtractor] = {}
        self._models: dict[tuple[str, str], ModelInfo | ModelPrice | None] = {}
        self._compiled: dict[int, CompiledPrice] = {}

    @classmethod
    def from_file(cls, path: Path | None) -> Pricer:
        return cls(load_overrides(path) if path else None)

    def price(
        self,
        provider: str,
        api_flavor: str,
        model: str | None,
        usage: dict[str, Any] | None,
        at: datetime,
        failed: bool = False,
    ) -> PricedUsage:
        """Price one call made at `at` (the call's own time, for prices that change over time).

        No usage block: a failed call costs 0 (providers do not bill it), a successful one
        is unpriced because its tokens are unknown.
        """
        if usage is None:
            if failed and model and self._model(provider, model) is not None:
                return PricedUsage(0, 0, 0, 0, 0, Decimal(0), Decimal(0), Decimal(0), False)
            return _unpriced(None, "no usage reported")
        try:
            normalized = self._extract(provider, api_flavor, model, usage)
        except ValueError as exc:
            return _unpriced(None, f"usage: {exc}")
        if not model:
            return _unpriced(normalized, "no model reported")
        found = self._model(provider, model)
        if found is None:
            if not self.knows_provider(provider):
                return _unpriced(
                    normalized,
                    f"genai-prices has no provider {provider!r} (name the upstream after its provider id, "
                    "or add prices with TOKENTRAIL_PRICE_OVERRIDES)",
                )
            return _unpriced(normalized, f"no price for {provider} model {model!r}")
        model_price = found if isinstance(found, ModelPrice) else found.get_prices(at)
        compiled = self._compiled.get(id(model_price))
        if compiled is None or compiled.model_price is not model_price:
            compiled = self._compiled[id(model_price)] = CompiledPrice(model_price)
        try:
            input_cost, output_cost, cost = compiled.calc(normalized)
        except ValueError as exc:
            return _unpriced(normalized, f"usage: {exc}")
        return _priced(normalized, input_cost, output_cost, cost)

    def _extract(self, provider: str, api_flavor: str, model: str | None, usage: dict[str, Any]) -> Usage:
        extractor = self._extractors.get((provider, api_flavor))
        if extractor is None:
            choices = self._extractor_choices(provider, api_flavor)
            if not choices and provider not in (OPENAI_WIRE, "anthropic"):
                # An OpenAI-compatible upstream (TOKENTRAIL_UPSTREAMS) answers in OpenAI's wire
                # format, so OpenAI's usage mapping reads it, whatever genai-prices knows of it.
                choices = self._extractor_choices(OPENAI_WIRE, api_flavor)
            if not choices:
                raise ValueError(f"unknown api_flavor {api_flavor!r} for provider {provider!r}")
            extractor = self._extractors[(provider, api_flavor)] = FastExtractor(choices[0])
        return extractor.extract({"model": model, "usage": usage})

    def _extractor_choices(self, provider: str, api_flavor: str) -> list[Any]:
        try:
            found = self._snapshot.find_provider(None, provider, None)
        except LookupError:
            return []
        return [e for e in found.extractors or () if e.api_flavor == api_flavor]

    def knows_provider(self, provider: str) -> bool:
        """Whether genai-prices or the price overrides know `provider` at all."""
        if any(key[0] == provider for key in self._overrides):
            return True
        try:
            self._snapshot.find_provider(None, provider, None)
        except LookupError:
            return False
        return True

    def _model(self, provider: str, model: str) -> ModelInfo | ModelPrice | None:
        key = (provider, model.lower())
        if key in self._models:
            return self._models[key]
        found: ModelInfo | ModelPrice | None = self._overrides.get(key)
        if found is None:
            try:
                found = self._snapshot.find_provider_model(model, None, provider, None)[1]
            except LookupError:
                found = None
        if len(self._models) >= MODEL_CACHE_SIZE:
            self._models.clear()  # model strings come from clients: the cache must not grow with them
        self._models[key] = found
        return found


Tokens = tuple[int, int, int, int, int]
"""The TOKEN_FIELDS counts, in order."""


def _tokens(usage: Usage | None) -> Tokens:
    reported = reported_values(usage) if usage is not None else {}
    input_tokens, output_tokens, cache_read, cache_write, reasoning = (
        int(reported.get(key) or 0) for key in TOKEN_FIELDS.values()
    )
    return input_tokens, output_tokens, cache_read, cache_write, reasoning


def _priced(usage: Usage, input_cost: Decimal, output_cost: Decimal, cost: Decimal) -> PricedUsage:
    return PricedUsage(*_tokens(usage), input_cost, output_cost, cost, False)


def _unpriced(usage: Usage | None, problem: str) -> PricedUsage:
    return PricedUsage(*_tokens(usage), None, None, None, True, problem)


def load_overrides(path: Path) -> dict[tuple[str, str], ModelPrice]:
    """Read a price-override file (JSON, or YAML by extension `.yaml`/`.yml`):

        {"openai": {"ft:gpt-4o-mini:acme": {"input_mtok": 0.3, "output_mtok": 1.2,
                                             "cache_read_mtok": 0.15}}}

    Prices are USD per million tokens; every problem is reported at once as a ConfigError.
    """
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"TOKENTRAIL_PRICE_OVERRIDES: cannot read {path}: {exc.strerror}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = orjson.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's to fix
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"TOKENTRAIL_PRICE_OVERRIDES: {path} does not parse: {first_line}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"TOKENTRAIL_PRICE_OVERRIDES: {path} must map provider -> model -> prices")
    problems: list[str] = []
    overrides: dict[tuple[str, str], ModelPrice] = {}
    for provider, models in data.items():
        if not isinstance(models, dict):
            problems.append(f"{provider}: must map model -> prices")
            continue
        for model, prices in models.items():
            where = f"{provider}.{model}"
            if not isinstance(prices, dict) or not prices:
                problems.append(f"{where}: must map price keys to USD per million tokens")
                continue
            parsed: dict[str, Decimal] = {}
            for price_key, value in prices.items():
                if price_key not in OVERRIDE_PRICE_KEYS:
                    problems.append(f"{where}.{price_key}: unknown price key (use {', '.join(OVERRIDE_PRICE_KEYS)})")
                    continue
                try:
                    amount = (
                        Decimal(str(value))
                        if isinstance(value, (int, float, str)) and not isinstance(value, bool)
                        else None
                    )
                except InvalidOperation:
                    amount = None
                if amount is None or not amount.is_finite() or amount < 0:
                    problems.append(f"{where}.{price_key}: must be a non-negative number, got {value!r}")
                    continue
                parsed[price_key] = amount
            if "input_mtok" not in prices and "output_mtok" not in prices:
                problems.append(f"{where}: needs at least input_mtok or output_mtok")
            overrides[(str(provider), str(model).lower())] = ModelPrice(**parsed)
    if problems:
        raise ConfigError(f"TOKENTRAIL_PRICE_OVERRIDES: {path}: " + "; ".join(problems))
    return overrides
