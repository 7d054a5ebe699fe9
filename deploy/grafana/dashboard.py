"""Writes deploy/grafana/dashboards/agent-metrics.json with grafana-foundation-sdk.

    .venv/bin/python deploy/grafana/dashboard.py          # rewrite the JSON
    .venv/bin/python deploy/grafana/dashboard.py --check  # exit 1 if the JSON is stale

The seed's four panels (section 5.3) with their PromQL corrected: `avg(context_window_percent)`
and `histogram_quantile(0.99, model_latency_seconds_bucket)` do not work on histograms, so they
become the rate of `_sum` over the rate of `_count`, and the quantile of
`sum by (le) (rate(..._bucket[5m]))`. Then time to first token, cost per hour by model, memory
recall and summarization latency, the error rate, the LangSmith feedback backlog, the
dependency checks, and the conversation outcomes (resolution rate, ends by outcome, judge
calls). tests/deploy/test_observability.py runs every expression against a real Prometheus
scraping the app's exporter, and checks that the committed JSON is this script's output."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import common, dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    StackingMode,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

OUT = Path(__file__).resolve().parent / "dashboards" / "agent-metrics.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
WINDOW = "5m"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    unit: str  # a Grafana unit id
    description: str
    targets: tuple[Target, ...]
    stacked: bool = False  # series stacked: the top line is their total


def _quantile(q: float, metric: str, by: str = "") -> str:
    groups = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({groups}) (rate({metric}_bucket[{WINDOW}])))"


def _error_ratio(by: str) -> str:
    """Failed calls over all calls; 0 (not "no data") while nothing failed."""
    total = f"sum by ({by}) (rate(agent_calls_total[{WINDOW}]))"
    failed = f'sum by ({by}) (rate(agent_calls_total{{status="error"}}[{WINDOW}]))'
    return f"({failed} or {total} * 0) / {total}"


def _resolution_rate(window: str) -> str:
    """Resolved ends over judged ones (unjudged left out), summed over replicas (each counts
    only the verdicts it wrote); 0 (not "no data") while nothing was resolved."""
    judged = f'sum(rate(agent_conversations_ended_total{{outcome!="unjudged"}}[{window}]))'
    resolved = f'sum(rate(agent_conversations_ended_total{{outcome="resolved"}}[{window}]))'
    return f"({resolved} or {judged} * 0) / {judged}"


PANELS: tuple[PanelSpec, ...] = (
    # The seed's four, corrected.
    PanelSpec(
        "Agent calls",
        "reqps",
        "Model calls per second by model and purpose (seed: rate(agent_calls_total[5m])).",
        (
            Target(
                f"sum by (model, purpose) (rate(agent_calls_total[{WINDOW}]))",
                "{{model}} {{purpose}}",
            ),
        ),
    ),
    PanelSpec(
        "Average context window usage",
        "percent",
        "Mean of request input tokens over the model's input window: rate of _sum over rate "
        "of _count (the seed's avg(context_window_percent) does not work on a histogram). "
        "Summarization triggers at SUMMARY_TRIGGER_FRACTION (75 %).",
        (
            Target(
                f"sum by (model) (rate(context_window_percent_sum[{WINDOW}])) / "
                f"sum by (model) (rate(context_window_percent_count[{WINDOW}]))",
                "{{model}}",
            ),
        ),
    ),
    PanelSpec(
        "Model latency p99",
        "s",
        "p99 of model call latency over 5 minutes, from the summed bucket rates.",
        (
            Target(_quantile(0.99, "model_latency_seconds"), "all models"),
            Target(_quantile(0.99, "model_latency_seconds", "model"), "{{model}}"),
        ),
    ),
    PanelSpec(
        "Token usage (hourly)",
        "short",
        "Tokens in the last hour by type (input, cached_input, output).",
        (Target("sum by (type) (increase(token_usage_total[1h]))", "{{type}}"),),
    ),
    # Added panels.
    PanelSpec(
        "Time to first token",
        "s",
        "p50 and p95 of the time to the first streamed token, by model.",
        (
            Target(_quantile(0.5, "model_time_to_first_token_seconds", "model"), "p50 {{model}}"),
            Target(_quantile(0.95, "model_time_to_first_token_seconds", "model"), "p95 {{model}}"),
        ),
    ),
    PanelSpec(
        "Cost per hour by model",
        "currencyUSD",
        "Priced cost of the last hour, by model (calls without a known price are not counted).",
        (Target("sum by (model) (increase(agent_cost_usd_total[1h]))", "{{model}}"),),
    ),
    PanelSpec(
        "Memory recall latency",
        "s",
        "p50 and p95 of the long-term memory search.",
        (
            Target(_quantile(0.5, "memory_retrieval_latency_seconds"), "p50"),
            Target(_quantile(0.95, "memory_retrieval_latency_seconds"), "p95"),
        ),
    ),
    PanelSpec(
        "Summarization latency",
        "s",
        "p50 and p95 of the summarization model call, by model.",
        (
            Target(_quantile(0.5, "summarization_latency_seconds", "model"), "p50 {{model}}"),
            Target(_quantile(0.95, "summarization_latency_seconds", "model"), "p95 {{model}}"),
        ),
    ),
    PanelSpec(
        "Error rate",
        "percentunit",
        "Share of model calls that failed, by model.",
        (Target(_error_ratio("model"), "{{model}}"),),
    ),
    PanelSpec(
        "LangSmith feedback backlog",
        "short",
        "Thumbs and review scores not yet in LangSmith (the same database count on every "
        "replica, so max, not sum).",
        (Target("max by (state) (feedback_sync_backlog)", "{{state}}"),),
    ),
    PanelSpec(
        "Dependencies up",
        "short",
        "1 when the app's last check of a dependency succeeded (the status page's checks); "
        "agent_ready is what /ready answers.",
        (
            Target("min by (dependency) (agent_dependency_up)", "{{dependency}}"),
            Target("min(agent_ready)", "ready"),
        ),
    ),
    # Conversation outcomes (issue 29).
    PanelSpec(
        "Resolution rate",
        "percentunit",
        "Automated resolution rate: the share of judged conversation ends (unjudged left out) "
        "that were resolved, over 1 and 6 hours. ResolutionRateDrop alerts on the 6-hour line.",
        (
            Target(_resolution_rate("1h"), "1h"),
            Target(_resolution_rate("6h"), "6h"),
        ),
    ),
    PanelSpec(
        "Outcomes by type",
        "short",
        "Conversation ends given a verdict in the last hour, by outcome (unjudged: the judge "
        "gave no usable answer), stacked: the top is all ends.",
        (
            Target(
                "sum by (outcome) (increase(agent_conversations_ended_total[1h]))", "{{outcome}}"
            ),
        ),
        stacked=True,
    ),
    PanelSpec(
        "Judge calls",
        "short",
        "Outcome judge model calls in the last hour by status: ok, invalid (an answer outside "
        "the schema), error (the call failed); stacked. JudgeFailing alerts when most fail.",
        (Target("sum by (status) (increase(agent_judge_calls_total[1h]))", "{{status}}"),),
        stacked=True,
    ),
)


def build() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("Agent Metrics")
        .uid("agent-chatbase-metrics")
        .tags(["agent-chatbase", "generated"])
        .description(
            "agent-chatbase: calls, context, latency, tokens, cost, errors, feedback, outcomes."
        )
        .editable()
        .time("now-6h", "now")
        .refresh("30s")
    )
    for index, spec in enumerate(PANELS):
        panel = (
            timeseries.Panel()
            .title(spec.title)
            .description(spec.description)
            .unit(spec.unit)
            .datasource(DATASOURCE)
            .grid_pos(GridPos(h=8, w=12, x=(index % 2) * 12, y=(index // 2) * 8))
            .legend(
                common.VizLegendOptions()
                .show_legend(True)
                .display_mode(LegendDisplayMode.LIST)
                .placement(LegendPlacement.BOTTOM)
                .calcs([])
            )
            .tooltip(
                common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)
            )
        )
        if spec.stacked:
            panel = panel.stacking(common.StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(
                60
            )
        for number, target in enumerate(spec.targets):
            panel = panel.with_target(
                prometheus.Dataquery()
                .expr(target.expr)
                .legend_format(target.legend)
                .ref_id(chr(ord("A") + number))
                .datasource(DATASOURCE)
            )
        board = board.with_panel(panel)
    return board


def render() -> str:
    model = build().build()
    text = JSONEncoder(sort_keys=True, indent=2).encode(model)
    return json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale; run deploy/grafana/dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
