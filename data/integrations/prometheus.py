"""Latency percentiles from Prometheus (PROMETHEUS_URL), through prometheus-api-client."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from data.analytics.filters import Filters
from data.config.urls import redact_url

HISTOGRAMS = {
    "model": "model_latency_seconds",
    "ttft": "model_time_to_first_token_seconds",
    "summarization": "summarization_latency_seconds",
}
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
STEPS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


class PrometheusUnavailable(RuntimeError):
    """Prometheus did not answer in time (`answered` False), or answered with an error."""

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


def _duration(step: timedelta) -> str:
    return f"{int(step.total_seconds())}s"


# RE2's metacharacters. Python's re.escape escapes far more (`-`, `/`, spaces...), and PromQL's
# double-quoted strings reject an unknown escape such as `\-`: `model=~"gpt\-4o"` does not parse.
_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def re2_escape(value: str) -> str:
    """`value` as an RE2 pattern that matches exactly that text."""
    return "".join("\\" + ch if ch in _RE2_SPECIAL else ch for ch in value)


def promql_string(value: str) -> str:
    """`value` as a double-quoted PromQL string literal (Go string escapes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def model_selector(models: tuple[str, ...]) -> str:
    """`{model=~"a|b"}` matching exactly these model names (PromQL anchors the regex), or ""."""
    if not models:
        return ""
    return "{model=~" + promql_string("|".join(re2_escape(m) for m in models)) + "}"


def quantile_query(metric: str, q: float, window: str, models: tuple[str, ...] = ()) -> str:
    """The corrected form of the seed's p99 panel: quantile over summed bucket rates."""
    selector = model_selector(models)
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
            message = f"{type(error).__name__}: {error}".replace(url, redact_url(url))
            answered = isinstance(error, PrometheusApiClientException)
            raise PrometheusUnavailable(message[:300], answered=answered) from None
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
