"""Latency percentiles from Prometheus (PROMETHEUS_URL), through prometheus-api-client."""

from __future__ import annotations

import re
from datetime import timedelta

import pandas as pd
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from data.filters import Filters

HISTOGRAMS = {
    "model": "model_latency_seconds",
    "ttft": "model_time_to_first_token_seconds",
    "summarization": "summarization_latency_seconds",
}
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
STEPS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


class PrometheusUnavailable(RuntimeError):
    """Prometheus did not answer in time, or answered with an error."""


def _duration(step: timedelta) -> str:
    return f"{int(step.total_seconds())}s"


def quantile_query(metric: str, q: float, window: str, models: tuple[str, ...] = ()) -> str:
    """The corrected form of the seed's p99 panel: quantile over summed bucket rates."""
    selector = ""
    if models:
        selector = '{model=~"' + "|".join(re.escape(m) for m in models) + '"}'
    return (
        f"histogram_quantile({q}, sum by (le, model) "
        f"(rate({HISTOGRAMS[metric]}_bucket{selector}[{window}])))"
    )


def connect(url: str, timeout: float = 2.0) -> PrometheusConnect:
    # No retries: the page falls back to the database within `timeout` seconds.
    return PrometheusConnect(
        url=url,
        disable_ssl=True,
        timeout=timeout,  # type: ignore[arg-type]
        retry=Retry(total=0),
    )


def latency_over_time(
    *, url: str, filters: Filters, metric: str, timeout: float = 2.0
) -> pd.DataFrame:
    """p50/p95/p99 in ms per bucket and model; each point covers the bucket that ends at it."""
    step = STEPS[filters.unit]
    client = connect(url, timeout)
    frames = []
    for label, q in QUANTILES.items():
        try:
            result = client.custom_query_range(
                quantile_query(metric, q, _duration(step), filters.models),
                start_time=filters.start + step,
                end_time=filters.end,
                step=_duration(step),
            )
        except Exception as error:  # requests' and the client's own errors alike
            raise PrometheusUnavailable(f"{type(error).__name__}: {error}"[:300]) from None
        for series in result:
            model = series["metric"].get("model", "")
            for ts, value in series["values"]:
                frames.append(
                    {
                        "bucket": pd.Timestamp(
                            float(ts) - step.total_seconds(), unit="s", tz="UTC"
                        ),
                        "model": model,
                        "quantile": label,
                        "value": float(value) * 1000,
                    }
                )
    if not frames:
        return pd.DataFrame(columns=["bucket", "model", "p50", "p95", "p99"])
    long = pd.DataFrame(frames)
    long = long[long["value"].notna() & (long["value"] == long["value"])]  # drop NaN
    wide = long.pivot_table(index=["bucket", "model"], columns="quantile", values="value")
    return wide.reset_index()[["bucket", "model", *[q for q in QUANTILES if q in wide.columns]]]
