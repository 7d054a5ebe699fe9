"""The seed's operating procedure (section 8), each item with where the app shows it: a page of
this app, Grafana, or a command."""

from __future__ import annotations

from dataclasses import dataclass


# The seed's operating procedure (section 8), each item with where the app shows it: a page
# of this app ("page"), Grafana ("grafana"), or a command ("command").
@dataclass(frozen=True, slots=True)
class SopItem:
    cadence: str  # "Daily" | "Weekly" | "Monthly"
    task: str
    where: str  # a page file, "grafana", or a command line
    kind: str  # "page" | "grafana" | "command"
    how: str


SOP: tuple[SopItem, ...] = (
    SopItem(
        "Daily",
        "Agent performance",
        "pages/latency.py",
        "page",
        "p50/p95/p99 by model and the slowest calls; Grafana has the live panels.",
    ),
    SopItem(
        "Daily",
        "Agent performance (live)",
        "grafana",
        "grafana",
        "The Agent Metrics dashboard: calls, latency, context, tokens, cost, errors.",
    ),
    SopItem(
        "Daily",
        "Error rate (LangSmith / Sentry)",
        "pages/latency.py",
        "page",
        "The error-rate chart; failing dependencies are at the top of this page.",
    ),
    SopItem(
        "Daily",
        "API cost",
        "pages/cost.py",
        "page",
        "Cost by model, user and conversation against the previous period.",
    ),
    SopItem(
        "Weekly",
        "Database statistics (ANALYZE) and VACUUM",
        "python -m data.store.maintain",
        "command",
        "Runs retention, ANALYZE and VACUUM; the last runs are listed below.",
    ),
    SopItem(
        "Weekly",
        "Slow query review",
        "pages/latency.py",
        "page",
        "The slowest calls table; on Postgres also pg_stat_statements (docs/operations.md).",
    ),
    SopItem(
        "Weekly",
        "User feedback analysis",
        "pages/feedback.py",
        "page",
        "Scores over time and by model, thumbs, LangSmith sync problems.",
    ),
    SopItem(
        "Monthly",
        "Full backup check",
        "python -m data.store.backup check FILE",
        "command",
        "Restores a backup into a scratch database and counts every table (below).",
    ),
    SopItem(
        "Monthly",
        "Cost analysis and optimization",
        "pages/context.py",
        "page",
        "Context-window use and summarizations next to the Cost page's totals.",
    ),
    SopItem(
        "Monthly",
        "Model benchmark",
        "make bench",
        "command",
        "The bench/ scripts print JSON: turn latency, memory and recording overhead.",
    ),
    SopItem(
        "Monthly",
        "Dependency update review",
        "pip list --outdated",
        "command",
        "Then update requirements.in and re-pin requirements.txt.",
    ),
)
