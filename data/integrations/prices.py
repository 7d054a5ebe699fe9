"""Cost of a model call from genai-prices, with a file of overrides for self-hosted models."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path

from genai_prices import Usage, calc_price

from data.config.settings import LOCAL_EMBEDDING_MODEL, LOCAL_MODEL_NAME, LOCAL_PROVIDER


@dataclass(frozen=True, slots=True)
class Rate:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None


@dataclass(frozen=True, slots=True)
class Price:
    cost_usd: float | None
    status: str  # "computed" | "unknown"; "provided" is set by the caller when the API said


# The embedded model runs on the user's own CPU: it costs nothing, and saying so is a price,
# not a missing one.
BUILTIN_OVERRIDES: dict[str, Rate] = {
    LOCAL_MODEL_NAME: Rate(input=0.0, output=0.0),
    LOCAL_EMBEDDING_MODEL: Rate(input=0.0, output=0.0),
}


@cache
def load_overrides(path: Path | None) -> dict[str, Rate]:
    """Overrides: `{"model-name": {"input": usd_per_mtok, "output": ..., "cached_input": ...}}`."""
    rates = dict(BUILTIN_OVERRIDES)
    if path is None:
        return rates
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        for model, rate in raw.items():
            rates[model] = Rate(
                input=float(rate["input"]),
                output=float(rate["output"]),
                cached_input=None
                if rate.get("cached_input") is None
                else float(rate["cached_input"]),
            )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"PRICE_OVERRIDES_FILE {path}: {error}") from None
    return rates


@cache
def linear_rate(provider: str, model: str) -> Rate | None:
    """A model's per-token rates from genai-prices (None when unknown), for pricing in bulk.

    Only valid for flat prices; `price_call` remains the reference for single calls."""
    unit = 1_000_000

    def cost(i: int, c: int, o: int) -> float | None:
        return price_call(
            provider=provider, model=model, input_tokens=i, cached_input_tokens=c, output_tokens=o
        ).cost_usd

    total = cost(unit, 0, 0)
    if total is None:
        return None
    return Rate(input=total, cached_input=cost(unit, unit, 0), output=cost(0, 0, unit) or 0.0)


def price_call(
    *,
    provider: str,
    model: str,
    input_tokens: int,
    cached_input_tokens: int,
    output_tokens: int,
    overrides: dict[str, Rate] | None = None,
) -> Price:
    """Price one call. `input_tokens` includes the cached ones, as OpenAI reports them."""
    rates = BUILTIN_OVERRIDES if overrides is None else overrides
    rate = rates.get(model)
    if rate is not None:
        cached = min(cached_input_tokens, input_tokens)
        cached_rate = rate.input if rate.cached_input is None else rate.cached_input
        cost = (
            (input_tokens - cached) * rate.input
            + cached * cached_rate
            + output_tokens * rate.output
        ) / 1_000_000
        return Price(cost_usd=cost, status="computed")
    if provider == LOCAL_PROVIDER:
        return Price(cost_usd=None, status="unknown")
    usage = Usage(
        input_tokens=input_tokens,
        cache_read_tokens=min(cached_input_tokens, input_tokens),
        output_tokens=output_tokens,
    )
    # An OpenAI-compatible gateway serves models under their vendor's names; genai-prices
    # matches chat models without a provider, but embedding models only under "openai".
    candidates = [None, "openai"] if provider in ("openai-compatible", "") else [provider]
    for provider_id in candidates:
        try:
            result = calc_price(usage, model_ref=model, provider_id=provider_id)
        except LookupError:
            continue
        return Price(cost_usd=float(Decimal(result.total_price)), status="computed")
    return Price(cost_usd=None, status="unknown")


_NOT_CHAT = (
    "ft:",
    ":",
    "audio",
    "realtime",
    "transcribe",
    "tts",
    "image",
    "search",
    "codex",
    "instruct",
    "vision",
    "computer-use",
)


@cache
def chat_models(provider: str = "openai") -> tuple[str, ...]:
    """Chat models of `provider` that genai-prices can price (for what-if re-pricing)."""
    from genai_prices import data

    for entry in data.providers:
        if entry.id == provider:
            return tuple(
                sorted(
                    m.id
                    for m in entry.models
                    if m.id.startswith(("gpt-", "o1", "o3", "o4"))
                    and not any(word in m.id for word in _NOT_CHAT)
                )
            )
    return ()


def price_table(
    models: list[tuple[str, str]], overrides: dict[str, Rate] | None = None
) -> list[dict[str, object]]:
    """The rates in use for (provider, model) pairs, USD per million tokens, and their source."""
    rows: list[dict[str, object]] = []
    for provider, model in models:
        rate = (overrides or BUILTIN_OVERRIDES).get(model)
        source = "override" if rate is not None else "genai-prices"
        if model in BUILTIN_OVERRIDES and rate is BUILTIN_OVERRIDES[model]:
            source = "built in (runs locally)"
        if rate is None and provider != LOCAL_PROVIDER:
            rate = linear_rate(provider if provider != "openai-compatible" else "openai", model)
        rows.append(
            {
                "model": model,
                "provider": provider,
                "input_per_mtok": None if rate is None else rate.input,
                "cached_input_per_mtok": None
                if rate is None
                else (rate.input if rate.cached_input is None else rate.cached_input),
                "output_per_mtok": None if rate is None else rate.output,
                "source": source if rate is not None else "unknown: not priced",
            }
        )
    return rows
