"""Prices: genai-prices for known models, overrides for self-hosted ones, never a silent 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.config.settings import LOCAL_MODEL_NAME
from data.integrations.prices import load_overrides, price_call

# OpenAI's published gpt-4o-mini rates, USD per million tokens (independent of genai-prices).
GPT_4O_MINI = {"input": 0.15, "cached_input": 0.075, "output": 0.60}


def test_known_model_with_cached_tokens() -> None:
    price = price_call(
        provider="openai",
        model="gpt-4o-mini",
        input_tokens=12_000,
        cached_input_tokens=8_000,
        output_tokens=500,
    )
    expected = (
        4_000 * GPT_4O_MINI["input"]
        + 8_000 * GPT_4O_MINI["cached_input"]
        + 500 * GPT_4O_MINI["output"]
    ) / 1e6
    assert price.status == "computed"
    assert price.cost_usd == pytest.approx(expected, rel=1e-9)


def test_local_model_costs_zero_and_says_so() -> None:
    price = price_call(
        provider="local",
        model=LOCAL_MODEL_NAME,
        input_tokens=900,
        cached_input_tokens=0,
        output_tokens=100,
    )
    assert price.cost_usd == 0.0 and price.status == "computed"


@pytest.mark.parametrize("provider", ["openai", "openai-compatible", "local"])
def test_unknown_model_is_unpriced_not_zero(provider: str) -> None:
    price = price_call(
        provider=provider,
        model="acme-llm-7b",
        input_tokens=1000,
        cached_input_tokens=0,
        output_tokens=10,
    )
    assert price.cost_usd is None and price.status == "unknown"


def test_overrides_file_prices_a_custom_model(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"acme-llm-7b": {"input": 1.0, "output": 2.0, "cached_input": 0.5}}))
    overrides = load_overrides(path)
    price = price_call(
        provider="openai-compatible",
        model="acme-llm-7b",
        input_tokens=3_000,
        cached_input_tokens=1_000,
        output_tokens=1_000,
        overrides=overrides,
    )
    assert price.cost_usd == pytest.approx((2_000 * 1.0 + 1_000 * 0.5 + 1_000 * 2.0) / 1e6)
    assert LOCAL_MODEL_NAME in overrides


def test_broken_overrides_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"acme": {"input": 1}}')
    with pytest.raises(ValueError, match=r"PRICE_OVERRIDES_FILE .*prices.json: 'output'"):
        load_overrides(path)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"])
def test_bulk_rates_price_like_single_calls(model: str) -> None:
    from data.integrations.prices import linear_rate

    rate = linear_rate("openai", model)
    assert rate is not None
    for tokens in [(12_345, 3_456, 789), (1, 0, 1), (200_000, 199_000, 4_000)]:
        single = price_call(
            provider="openai",
            model=model,
            input_tokens=tokens[0],
            cached_input_tokens=tokens[1],
            output_tokens=tokens[2],
        )
        bulk = price_call(
            provider="openai",
            model=model,
            input_tokens=tokens[0],
            cached_input_tokens=tokens[1],
            output_tokens=tokens[2],
            overrides={model: rate},
        )
        assert bulk.cost_usd == pytest.approx(single.cost_usd, rel=1e-12)
    assert linear_rate("openai", "acme-llm") is None


def test_price_table_says_where_each_price_comes_from(tmp_path: Path) -> None:
    from data.integrations.prices import price_table

    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"acme-llm-7b": {"input": 1.0, "output": 2.0}}))
    rows = {
        r["model"]: r
        for r in price_table(
            [
                ("openai", "gpt-4o-mini"),
                ("openai-compatible", "acme-llm-7b"),
                ("local", LOCAL_MODEL_NAME),
                ("openai-compatible", "mystery"),
            ],
            load_overrides(path),
        )
    }
    assert rows["gpt-4o-mini"]["source"] == "genai-prices"
    assert (rows["gpt-4o-mini"]["input_per_mtok"], rows["gpt-4o-mini"]["output_per_mtok"]) == (
        pytest.approx(0.15),
        pytest.approx(0.60),
    )
    assert rows["acme-llm-7b"]["source"] == "override"
    assert rows["acme-llm-7b"]["cached_input_per_mtok"] == 1.0
    assert rows[LOCAL_MODEL_NAME]["source"] == "built in (runs locally)"
    assert rows["mystery"]["source"] == "unknown: not priced"
    assert rows["mystery"]["input_per_mtok"] is None


def test_an_embedding_model_behind_an_openai_compatible_gateway_is_priced() -> None:
    # text-embedding-3-small lists at $0.02 per million input tokens.
    price = price_call(
        provider="openai-compatible",
        model="text-embedding-3-small",
        input_tokens=1_000_000,
        cached_input_tokens=0,
        output_tokens=0,
    )
    assert price.status == "computed" and price.cost_usd == pytest.approx(0.02)
