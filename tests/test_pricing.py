"""Pricing equals genai-prices' own calc_price, cached tokens are never counted twice,
unknown models are unpriced (never 0), and overrides price what genai-prices does not know."""

import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import calc_price, extract_usage

from flows.pricing import Pricer, load_overrides
from tokentrail.settings import ConfigError

AT = datetime(2026, 11, 28, 12, tzinfo=UTC)


def reference(provider, flavor, model, usage):
    """genai-prices on its own, the way the contract says: extract, then calc_price."""
    extracted = extract_usage({"model": model, "usage": usage}, provider_id=provider, api_flavor=flavor)
    return extracted.usage, calc_price(extracted.usage, model, provider_id=provider, genai_request_timestamp=AT)


def test_openai_cached_tokens_are_priced_at_the_cache_rate_once():
    usage = {"prompt_tokens": 1000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 400}}
    priced = Pricer().price("openai", "chat", "gpt-4o", usage, AT)
    # gpt-4o: $2.5 input, $1.25 cached input, $10 output per MTok; the 400 cached are inside the 1000
    assert (
        priced.input_cost == Decimal("600") * Decimal("2.5") / 1_000_000 + Decimal("400") * Decimal("1.25") / 1_000_000
    )
    assert priced.output_cost == Decimal("0.001")
    assert priced.cost == priced.input_cost + priced.output_cost
    assert (priced.input_tokens, priced.cache_read_tokens) == (1000, 400)
    assert priced.cost == reference("openai", "chat", "gpt-4o", usage)[1].total_price


def test_anthropic_cache_reads_and_writes_are_added_to_input_not_doubled():
    usage = {
        "input_tokens": 100,
        "output_tokens": 50,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 200,
    }
    priced = Pricer().price("anthropic", "default", "claude-sonnet-4-20250514", usage, AT)
    assert (priced.input_tokens, priced.cache_read_tokens, priced.cache_write_tokens) == (1300, 1000, 200)
    # $3 input, $0.30 cache read, $3.75 cache write, $15 output per MTok
    expected_input = (100 * Decimal(3) + 1000 * Decimal("0.3") + 200 * Decimal("3.75")) / 1_000_000
    assert priced.input_cost == expected_input
    assert priced.cost == expected_input + 50 * Decimal(15) / 1_000_000
    assert priced.cost == reference("anthropic", "default", "claude-sonnet-4-20250514", usage)[1].total_price


CASES = [
    ("openai", "chat", "gpt-4o-2024-08-06"),
    ("openai", "chat", "gpt-4o-mini"),
    ("openai", "chat", "o3-mini"),
    ("openai", "responses", "gpt-4.1"),
    ("openai", "embeddings", "text-embedding-3-small"),
    ("anthropic", "default", "claude-sonnet-4-20250514"),
    ("anthropic", "default", "claude-3-5-haiku-latest"),
    ("anthropic", "default", "claude-opus-4-1"),
    # tiered prices (a higher rate past 200k input tokens): genai-prices' own path, same check
    ("anthropic", "default", "claude-sonnet-4-5"),
    ("anthropic", "default", "claude-haiku-5-5"),
]
TIERED = {"claude-sonnet-4-5", "claude-haiku-5-5"}


def random_usage(rng, provider, flavor, large=False):
    if provider == "anthropic":
        # large: totals on both sides of a 200k-token tier boundary
        usage = {"input_tokens": rng.randint(0, 300_000 if large else 5000), "output_tokens": rng.randint(0, 2000)}
        if rng.random() < 0.7:
            usage["cache_read_input_tokens"] = rng.randint(0, 20000)
        if rng.random() < 0.5:
            usage["cache_creation_input_tokens"] = rng.randint(0, 5000)
        return usage
    if flavor == "embeddings":
        return {"prompt_tokens": rng.randint(0, 9000), "total_tokens": 0}
    prompt, completion = rng.randint(0, 9000), rng.randint(0, 3000)
    if flavor == "responses":
        return {
            "input_tokens": prompt,
            "output_tokens": completion,
            "input_tokens_details": {"cached_tokens": rng.randint(0, prompt)},
            "output_tokens_details": {"reasoning_tokens": rng.randint(0, completion)},
        }
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "prompt_tokens_details": {"cached_tokens": rng.randint(0, prompt), "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": rng.randint(0, completion)},
    }


@pytest.mark.parametrize("provider, flavor, model", CASES)
def test_every_price_equals_genai_prices_to_the_last_digit(provider, flavor, model):
    rng = random.Random(model)
    pricer = Pricer()
    for _ in range(200):
        usage = random_usage(rng, provider, flavor, large=model in TIERED)
        normalized, expected = reference(provider, flavor, model, usage)
        priced = pricer.price(provider, flavor, model, usage, AT)
        assert not priced.unpriced, priced.problem
        assert (priced.input_cost, priced.output_cost, priced.cost) == (
            expected.input_price,
            expected.output_price,
            expected.total_price,
        ), usage
        assert priced.input_tokens == normalized.input_tokens
        assert priced.output_tokens == normalized.output_tokens


def test_the_tiered_cases_are_tiered_and_cross_the_boundary():
    """Guards the differential test above: it must really exercise tiered prices."""
    from genai_prices.types import TieredPrices

    from flows.genai_prices_adapter import price_snapshot

    for model in TIERED:
        prices = price_snapshot().find_provider_model(model, None, "anthropic", None)[1].get_prices(AT)
        assert isinstance(prices.input_mtok, TieredPrices), model
    rng = random.Random(0)
    totals = [sum(random_usage(rng, "anthropic", "default", large=True).values()) for _ in range(200)]
    assert min(totals) < 200_000 < max(totals)


def test_unknown_model_is_unpriced_never_zero():
    priced = Pricer().price("openai", "chat", "my-private-model", {"prompt_tokens": 5, "completion_tokens": 1}, AT)
    assert priced.unpriced and priced.cost is None and priced.input_cost is None
    assert priced.input_tokens == 5
    assert "my-private-model" in priced.problem


def test_inconsistent_usage_is_unpriced_with_the_reason():
    usage = {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 50}}
    priced = Pricer().price("openai", "chat", "gpt-4o", usage, AT)
    assert priced.unpriced and priced.cost is None
    assert "cannot exceed" in priced.problem


def test_unknown_flavor_and_malformed_usage_are_unpriced():
    assert (
        Pricer()
        .price("openai", "fax", "gpt-4o", {"prompt_tokens": 1}, AT)
        .problem.startswith("usage: unknown api_flavor")
    )
    assert Pricer().price("openai", "chat", "gpt-4o", {"completion_tokens": 1}, AT).unpriced


def test_missing_usage_costs_zero_for_a_failed_call_and_is_unpriced_for_a_success():
    failed = Pricer().price("openai", "chat", "gpt-4o", None, AT, failed=True)
    assert failed.cost == Decimal(0) and not failed.unpriced
    succeeded = Pricer().price("openai", "chat", "gpt-4o", None, AT)
    assert succeeded.unpriced and succeeded.cost is None


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_overrides_price_private_models_with_the_same_cache_rules(tmp_path, suffix):
    path = tmp_path / f"prices{suffix}"
    if suffix == ".json":
        path.write_text('{"openai": {"Acme-FT": {"input_mtok": 2, "output_mtok": 8, "cache_read_mtok": "0.5"}}}')
    else:
        path.write_text("openai:\n  Acme-FT:\n    input_mtok: 2\n    output_mtok: 8\n    cache_read_mtok: '0.5'\n")
    pricer = Pricer.from_file(path)
    usage = {"prompt_tokens": 1000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 600}}
    priced = pricer.price("openai", "chat", "acme-ft", usage, AT)
    assert priced.input_cost == (400 * Decimal(2) + 600 * Decimal("0.5")) / 1_000_000
    assert priced.cost == priced.input_cost + 10 * Decimal(8) / 1_000_000


def test_an_override_beats_the_public_price(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"openai": {"gpt-4o": {"input_mtok": 1, "output_mtok": 1}}}')
    priced = Pricer.from_file(path).price(
        "openai", "chat", "gpt-4o", {"prompt_tokens": 1_000_000, "completion_tokens": 0}, AT
    )
    assert priced.cost == Decimal(1)


def test_a_bad_override_file_reports_every_problem(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"openai": {"a": {"input_mtok": -1, "bogus_mtok": 1}, "b": 3}}')
    with pytest.raises(ConfigError) as error:
        load_overrides(path)
    message = str(error.value)
    assert "openai.a.input_mtok: must be a non-negative number" in message
    assert "openai.a.bogus_mtok: unknown price key" in message
    assert "openai.b: must map price keys" in message
    path.write_text("{nope")
    with pytest.raises(ConfigError, match="does not parse"):
        load_overrides(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_overrides(tmp_path / "missing.json")


def test_the_model_cache_is_bounded_whatever_clients_send():
    from flows.pricing import MODEL_CACHE_SIZE

    pricer = Pricer()
    usage = {"prompt_tokens": 10, "completion_tokens": 5}
    for n in range(MODEL_CACHE_SIZE * 2 + 10):
        assert pricer.price("openai", "chat", f"made-up-model-{n}", usage, AT).unpriced
    assert len(pricer._models) <= MODEL_CACHE_SIZE
    assert not pricer.price("openai", "chat", "gpt-4o", usage, AT).unpriced
