"""Feedback: reviewer scores over time and by model, quality against context, summarization and
cost, customers' thumbs, how much reviewers agree, and the LangSmith sync."""

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from langsmith.utils import LangSmithError
from sqlalchemy import Engine

from data.access.sanitize import md
from data.analytics import feedback_report
from data.analytics.agreement import AgreementReport, disagreements
from data.analytics.filters import Filters
from data.config.settings import get_settings
from data.store.db import writer
from data.workers import langsmith_sync
from pages.ui import charts, common, filtering, resources, signin, transcript

common.ensure_routed()
who = signin.require("feedback")
TTL = 60
# The local feedback list shows the newest this many; the charts above count every one.
LOCAL_SHOWN = 1_000
# Red to green, so a drift towards low scores shows at a glance.
SCORE_COLORS = {"1": "#d7301f", "2": "#fc8d59", "3": "#bdbdbd", "4": "#91cf60", "5": "#1a9850"}
COLUMNS = {
    **charts.COLUMNS,
    "score": st.column_config.NumberColumn("Score"),
    "scores": st.column_config.NumberColumn("Scores"),
    "mean_score": st.column_config.NumberColumn("Mean score", format="%.2f"),
    "reviewer": "Reviewer",
    "item_id": st.column_config.NumberColumn("Item"),
    "reviewer_a": "Reviewer A",
    "reviewer_b": "Reviewer B",
    "items": st.column_config.NumberColumn("Items both scored"),
    "alpha": st.column_config.NumberColumn("Krippendorff's α", format="%.3f"),
    "exact_pct": st.column_config.NumberColumn("Same score", format="%.1f%%"),
    "within_one_pct": st.column_config.NumberColumn("Within one", format="%.1f%%"),
    "spread": st.column_config.NumberColumn("Spread"),
    "comment": "Comment",
    "created_at": st.column_config.DatetimeColumn("Time (UTC)", format="YYYY-MM-DD HH:mm"),
    "sync_state": "Sync",
    "source": "Source",
    "source_type": "Source type",
    "key": "Key",
    "value": "Value",
    "feedback_id": "Feedback id",
    "run_id": "Run id",
}


@st.cache_data(ttl=TTL, max_entries=32, show_spinner=False)
def _view(_engine: Engine, url: str, filters: Filters) -> feedback_report.FeedbackPageData:
    # One view's data, read at once and shared by every chart and tab.
    return feedback_report.page_data(engine=_engine, filters=filters, local_limit=LOCAL_SHOWN)


@st.cache_data(ttl=300, max_entries=8, show_spinner="Reading LangSmith feedback…")
def _pulled(_engine: Engine, url: str, filters: Filters) -> pd.DataFrame:
    client = langsmith_sync.client_from_settings(get_settings())
    if client is None:
        return pd.DataFrame(columns=langsmith_sync.PULL_COLUMNS)
    runs = langsmith_sync.traced_run_ids(engine=_engine, start=filters.start, end=filters.end)
    return langsmith_sync.pull_feedback(client=client, run_ids=runs, engine=_engine)


def score_bars(frame: pd.DataFrame, **kwargs: object) -> go.Figure:
    """Scores stacked 1 to 5, red to green."""
    fig = px.bar(
        frame.assign(score=frame["score"].astype(int).astype(str)),
        color="score",
        color_discrete_map=SCORE_COLORS,
        category_orders={"score": list(SCORE_COLORS)},
        **kwargs,  # type: ignore[arg-type]
    )
    fig.update_layout(legend_title_text="Score", margin={"t": 50, "b": 10})
    return fig


def mean_bars(frame: pd.DataFrame, x: str, axis: str, title: str) -> go.Figure:
    """Mean score per group, with the number of scores behind each bar."""
    fig = px.bar(frame, x=x, y="mean_score", title=title, custom_data=["scores"])
    fig.update_traces(
        hovertemplate=f"{axis}: %{{x}}<br>Mean score: %{{y:.2f}} of 5<br>"
        "%{customdata[0]:,} scores<extra></extra>",
        marker_color="#4c78a8",
        texttemplate="%{y:.2f}<br>n=%{customdata[0]:,}",
        textposition="inside",
    )
    fig.update_yaxes(title_text="Mean score (1–5)", range=[0, 5])
    fig.update_xaxes(title_text=axis, type="category")
    fig.update_layout(margin={"t": 50, "b": 10})
    return fig


def scores_tab(data: feedback_report.FeedbackPageData) -> None:
    over_time, by_model = data.over_time, data.by_model
    if over_time.empty:
        st.info(
            "No scores in this range yet: open **Review**, claim a conversation and score it, "
            "or widen the date range.",
            icon=":material/info:",
        )
        common.page_link(
            "review", "pages/review.py", label="Open Review", icon=":material/rate_review:"
        )
        return
    st.caption(
        "Conversations are placed in time by their first model call: the chart shows the "
        "quality of the answers given then, whenever they were reviewed."
    )
    left, right = st.columns(2)
    with left:
        fig = score_bars(
            over_time,
            x="bucket",
            y="count",
            title="Scores over time",
            labels={"count": "Scores", "bucket": ""},
        )
        fig.update_traces(
            hovertemplate=f"%{{x|{'%b %d %H:%M' if filters.unit == 'hour' else '%b %d'}}}"
            "<br>Score %{fullData.name}: %{y:,} scores<extra></extra>"
        )
        st.plotly_chart(charts.time_axis(fig, filters), width="stretch")
        common.csv_download(over_time, "scores_over_time")
    with right:
        totals = by_model.groupby("model")["count"].transform("sum")
        fig = score_bars(
            by_model.assign(model=by_model["model"] + " (" + totals.map("{:,}".format) + ")"),
            x="count",
            y="model",
            orientation="h",
            title="Scores by model (share of each model's scores)",
            labels={"count": "Share of scores (%)", "model": "Model (scores)"},
            custom_data=["count"],
        )
        fig.update_traces(
            hovertemplate="%{y}<br>Score %{fullData.name}: %{customdata[0]:,} scores "
            "(%{x:.1f}%)<extra></extra>"
        )
        fig.update_layout(barnorm="percent")
        st.plotly_chart(fig, width="stretch")
        common.csv_download(by_model, "scores_by_model")


def quality_tab(data: feedback_report.FeedbackPageData) -> None:
    context, summarized, cost = data.context, data.summarized, data.cost
    if context.empty and summarized.empty and cost.empty:
        st.info(
            "No scored conversations in this range: score some under **Review** to compare "
            "quality with context use, summarization and cost.",
            icon=":material/info:",
        )
        return
    views = [
        (context, "bucket", "Peak context (% of window)", "Score by context use", "context"),
        (
            summarized.assign(summarized=summarized["summarized"].map({True: "yes", False: "no"})),
            "summarized",
            "Summarized",
            "Score by summarization",
            "summarized",
        ),
        (cost, "bucket", "Conversation cost (USD)", "Score by cost (quartiles)", "cost"),
    ]
    for column, (frame, x, axis, title, name) in zip(st.columns(3), views, strict=True):
        with column:
            st.plotly_chart(mean_bars(frame, x, axis, title), width="stretch")
            common.csv_download(frame, f"score_by_{name}")


def thumbs_tab(thumbs: pd.DataFrame) -> None:
    if thumbs.empty:
        st.info(
            "No thumbs from customers in this range: they appear as people rate answers on the "
            "**Chat** page.",
            icon=":material/info:",
        )
        return
    st.caption(
        "Thumbs are placed in time by when the answer was given; the model filter picks the "
        "model that gave the answer (the turn's last successful chat call)."
    )
    fig = px.line(
        thumbs.assign(up_pct=100 * thumbs["up_rate"]),
        x="bucket",
        y="up_pct",
        markers=True,
        title="Thumbs-up rate over time",
        labels={"up_pct": "Thumbs up (%)"},
        custom_data=["up", "down"],
    )
    fig.update_traces(
        hovertemplate="%{x|%b %d %H:%M}<br>%{y:.1f}% up (%{customdata[0]:,} up, "
        "%{customdata[1]:,} down)<extra></extra>"
    )
    fig.update_yaxes(range=[0, 105])
    st.plotly_chart(charts.time_axis(fig, filters), width="stretch")
    common.csv_download(thumbs, "thumbs_over_time")


def agreement_tab(scores: pd.DataFrame, report: AgreementReport) -> None:
    st.caption(
        "Over the scores given in the selected range (every model and user), on items two or "
        "more reviewers scored. "
        "Krippendorff's α for ordinal data: 1 is full agreement, 0 what chance gives."
    )
    c1, c2, c3 = st.columns(3)
    c1.metric(
        "Krippendorff's α (ordinal)",
        "–" if report.alpha is None else f"{report.alpha:.3f}",
        border=True,
        help="Undefined until two reviewers scored one item and the scores vary.",
    )
    c2.metric("Items with 2+ scores", f"{report.items:,}", border=True)
    c3.metric("Reviewers", f"{report.reviewers:,}", border=True)
    if report.items == 0:
        st.info(
            "No item has two scores yet: queue conversations with two or more reviews each "
            "under **Review → Queue**, and let two reviewers score them.",
            icon=":material/info:",
        )
    else:
        st.subheader("Per reviewer pair")
        st.dataframe(report.pairs, hide_index=True, width="stretch", column_config=COLUMNS)
        common.csv_download(report.pairs, "agreement_pairs")
        st.subheader("Disagreements")
        spread = disagreements(scores)
        st.caption("Largest spread first; click a row to open the conversation.")
        rows = common.picked_rows(
            spread,
            key="disagreements",
            export="disagreements",
            column_config={**COLUMNS, "scores": "Scores"},
        )
        if rows:
            transcript.open_conversation(spread.iloc[rows[0]]["session_id"])
    with st.expander(f"All {len(scores):,} scores in this range"):
        st.dataframe(scores, hide_index=True, width="stretch", column_config=COLUMNS)
        common.csv_download(scores, "scores")


def retry() -> None:
    # Before the rerun draws the counts, so they already show the retried items as pending.
    st.session_state["retried"] = langsmith_sync.retry_now(engine=writer(engine))


def langsmith_tab() -> None:
    settings = get_settings()
    if not settings.langsmith_feedback_enabled:
        st.info(
            "LangSmith is not configured (no LANGSMITH_API_KEY): every thumb and score stays "
            "in this database, marked local.",
            icon=":material/cloud_off:",
        )
    if (due := st.session_state.pop("retried", None)) is not None:
        st.toast(f"{due:,} items will be pushed on the next sync.", icon=":material/sync:")
    status = langsmith_sync.sync_status(engine=engine)
    cards = st.columns(4)
    for card, state in zip(cards, ("pending", "synced", "failed", "local"), strict=True):
        card.metric(
            state.capitalize(),
            f"{status.get(state, 0):,}",
            border=True,
            help=f"{status.get('retrying', 0):,} of them wait out a backoff after a failure"
            if state == "pending"
            else None,
        )
    if not settings.langsmith_feedback_enabled:
        return
    st.button(
        "Retry now",
        disabled=not signin.may("feedback.retry_sync"),
        icon=":material/sync:",
        help="Push failed items and those waiting out a backoff on the next sync.",
        on_click=retry,
    )
    problems = langsmith_sync.sync_problems(engine=engine)
    if not problems.empty:
        st.subheader("Failed and retrying")
        st.dataframe(problems, hide_index=True, width="stretch")
        common.csv_download(problems, "feedback_sync_problems")
    st.subheader("Local and LangSmith feedback")
    view = _view(engine, url, filters)
    local, thumbs = view.local, view.thumbs
    local_total = len(view.scores) + (
        int(thumbs["up"].sum() + thumbs["down"].sum()) if not thumbs.empty else 0
    )
    local_label = (
        f"This app ({local_total:,})"
        if local_total <= len(local)
        else f"This app (newest {len(local):,} of {local_total:,})"
    )
    try:
        pulled = _pulled(engine, url, filters)
    except LangSmithError as error:
        st.warning(
            f"LangSmith feedback could not be read: {md(error)}", icon=":material/cloud_off:"
        )
        pulled = pd.DataFrame(columns=langsmith_sync.PULL_COLUMNS)
    shown = st.segmented_control(
        "Source",
        ["local", "langsmith"],
        selection_mode="multi",
        default=["local", "langsmith"],
        format_func={
            "local": local_label,
            "langsmith": f"Other tools in LangSmith ({len(pulled):,})",
        }.__getitem__,
        key="feedback_sources",
    )
    # One run's local and LangSmith feedback side by side.
    both = (
        pd.concat([local, pulled], ignore_index=True)
        .loc[lambda frame: frame["source"].isin(shown)]
        .sort_values(["run_id", "source", "created_at"], ignore_index=True)
    )
    st.dataframe(
        both,
        hide_index=True,
        width="stretch",
        column_config=COLUMNS,
        # The source first; then the pull's columns as LangSmith returns them, ids last.
        column_order=["source", *langsmith_sync.PULL_COLUMNS[2:8], "run_id", "feedback_id"],
    )
    common.csv_download(both, "feedback_by_source")


st.title("Feedback")
engine, filters = common.analyst_page()
url = common.read_key()
resources.feedback_sync()
st.caption(filtering.describe_filters(filters))
data = _view(engine, url, filters)
scores = data.given
report = data.agreement
tabs = st.tabs(["Scores", "Quality vs cost", "Thumbs", "Agreement", "LangSmith"])
with tabs[0]:
    scores_tab(data)
with tabs[1]:
    quality_tab(data)
with tabs[2]:
    thumbs_tab(data.thumbs)
with tabs[3]:
    agreement_tab(scores, report)
with tabs[4]:
    langsmith_tab()
