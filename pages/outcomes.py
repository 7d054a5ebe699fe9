"""Outcomes: did the agent solve the customer's problem? Resolution, escalation, abandonment and
reopen rates of the conversations that ended, by day, model, topic and rubric; cost per
resolved conversation; outcome against context and summarization; how far the judge agrees
with the team's reviewers; and every ended conversation with its verdict."""

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from sqlalchemy import Engine

from data.access import audit
from data.access.sanitize import md
from data.analytics import outcome_agreement, outcomes
from data.analytics.filters import Filters
from data.config.settings import get_settings
from data.store.db import writer
from data.store.orm_outcomes import OUTCOME_LABELS, OUTCOMES
from data.workflows import review
from data.workflows.outcomes import pending_ends
from pages.ui import common, filtering, signin, transcript

common.ensure_routed()
who = signin.require("outcomes")
TTL = 60
PAGE_SIZE = 50
COLORS = {
    "resolved": "#1a9850",
    "escalated": "#4575b4",
    "abandoned": "#fdae61",
    "unresolved": "#d73027",
    "unjudged": "#bdbdbd",
}
COLUMNS = {
    "ended_at": st.column_config.DatetimeColumn("Ended (UTC)", format="YYYY-MM-DD HH:mm"),
    "session_id": "Session",
    "user_id": "User",
    "outcome": "Outcome",
    "topic": "Topic",
    "confidence": st.column_config.NumberColumn("Confidence", format="%.2f"),
    "reason": st.column_config.TextColumn("Reason", width="large"),
    "quote": "Quote",
    "decided_by": "Decided by",
    "judge_model": "Judge",
    "rubric_version": "Rubric",
    "chat_model": "Chat model",
    "cost_usd": st.column_config.NumberColumn("Cost (USD)", format="$%.4f"),
    "peak_context_percent": st.column_config.NumberColumn("Peak context", format="%.1f%%"),
    "summarizations": st.column_config.NumberColumn("Summarizations"),
    "turns": st.column_config.NumberColumn("Turns"),
    "end_reason": "Ended by",
    "reopened": st.column_config.CheckboxColumn("Reopened"),
    "reviewer": "Reviewer",
    "judge_outcome": "Judge's outcome",
    "reviewer_outcome": "Reviewer's outcome",
    "judge_topic": "Judge's topic",
    "reviewer_topic": "Reviewer's topic",
    "pairs": st.column_config.NumberColumn("Labelled pairs"),
    "kappa": st.column_config.NumberColumn("Cohen's κ", format="%.3f"),
    "alpha": st.column_config.NumberColumn("Krippendorff's α", format="%.3f"),
    "exact_pct": st.column_config.NumberColumn("Same outcome", format="%.1f%%"),
}
RATE_HELP = (
    "Ended: conversations with a verdict in the range (unjudged ones apart). Automated "
    "resolution rate: resolved ÷ ended (a resolved conversation had no ticket or hand-over)."
)


@st.cache_data(ttl=TTL, max_entries=32, show_spinner=False)
def _summary(_engine: Engine, url: str, filters: Filters) -> outcomes.Summary:
    return outcomes.summary(engine=_engine, filters=filters)


@st.cache_data(ttl=TTL, max_entries=64, show_spinner=False)
def _by(_engine: Engine, url: str, filters: Filters, dimension: str) -> pd.DataFrame:
    return outcomes.by(engine=_engine, filters=filters, dimension=dimension)


@st.cache_data(ttl=TTL, max_entries=32, show_spinner=False)
def _context(_engine: Engine, url: str, filters: Filters) -> pd.DataFrame:
    return outcomes.by_context(engine=_engine, filters=filters)


@st.cache_data(ttl=TTL, max_entries=32, show_spinner=False)
def _calibration(_engine: Engine, url: str, filters: Filters) -> outcome_agreement.Calibration:
    return outcome_agreement.calibration(engine=_engine, filters=filters)


@st.cache_data(ttl=TTL, max_entries=32, show_spinner=False)
def _disagreements(_engine: Engine, url: str, filters: Filters) -> pd.DataFrame:
    return outcome_agreement.pairs(
        engine=_engine, filters=filters, differ=True, limit=outcome_agreement.DISAGREEMENTS_SHOWN
    )


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}%"


def share_bars(frame: pd.DataFrame, x: str, title: str, axis: str) -> go.Figure:
    """Each group's ended conversations as 100 % stacked by outcome, counts on hover."""
    long = frame.melt(
        id_vars=[x, "ended"], value_vars=[f"{o}_rate" for o in OUTCOMES], var_name="outcome"
    )
    long["outcome"] = long["outcome"].str.removesuffix("_rate")
    fig = px.bar(
        long,
        x=x,
        y="value",
        color="outcome",
        color_discrete_map=COLORS,
        category_orders={"outcome": list(OUTCOMES)},
        title=title,
        labels={"value": "Share of ended conversations (%)", x: axis, "outcome": "Outcome"},
        hover_data={"ended": ":,"},
    )
    fig.update_yaxes(range=[0, 100], ticksuffix="%")
    fig.update_layout(margin={"t": 50, "b": 10}, legend_title_text="Outcome")
    return fig


def rates_tab(filters: Filters) -> None:
    labels = outcomes.DIMENSIONS
    dimension = st.segmented_control(
        "By", list(labels), format_func=labels.__getitem__, default="day", key="o_by"
    )
    dimension = dimension or "day"
    frame = _by(engine, url, filters, dimension)
    if dimension == "day":
        fig = go.Figure(
            go.Scatter(
                x=frame["day"],
                y=frame["resolved_rate"],
                mode="lines+markers",
                name="Automated resolution rate",
                line={"color": COLORS["resolved"]},
                customdata=frame[["ended", "resolved"]],
                hovertemplate="%{x|%b %d}: %{y:.1f}% (%{customdata[1]:,} of %{customdata[0]:,})"
                "<extra></extra>",
            )
        )
        for name in ("escalated", "abandoned"):
            fig.add_scatter(
                x=frame["day"],
                y=frame[f"{name}_rate"],
                mode="lines",
                name=f"{OUTCOME_LABELS[name]} rate",
                line={"color": COLORS[name], "dash": "dot"},
            )
        fig.update_layout(
            title="Outcome rates by day",
            yaxis={"title": "Share of ended conversations (%)", "range": [0, 100]},
            xaxis={"title": "Day (UTC)", "range": [filters.start, filters.end]},
            margin={"t": 50, "b": 10},
        )
    else:
        fig = share_bars(
            frame, dimension, f"Outcomes by {labels[dimension].lower()}", labels[dimension]
        )
    st.plotly_chart(fig, width="stretch")
    wanted = [dimension, "ended", *OUTCOMES, "unjudged", "resolved_rate", "involvement_rate"]
    shown = frame[[*wanted, "cost_usd", "cost_per_resolved"]]
    st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        column_config={
            **COLUMNS,
            dimension: labels[dimension],
            "day": st.column_config.DateColumn("Day (UTC)"),
            "ended": st.column_config.NumberColumn("Ended"),
            "resolved_rate": st.column_config.NumberColumn("Resolution rate", format="%.1f%%"),
            "involvement_rate": st.column_config.NumberColumn("Involvement", format="%.1f%%"),
            "cost_per_resolved": st.column_config.NumberColumn(
                "Cost per resolved (USD)", format="$%.4f"
            ),
        },
    )
    common.csv_download(shown, f"outcomes_by_{dimension}")


def context_tab(filters: Filters) -> None:
    frame = _context(engine, url, filters)
    st.caption(
        "Each conversation by the fullest its context window got (peak context % of its chat "
        "calls) and by how often it was summarized. A lower resolution rate on the right "
        "suggests that long, folded conversations end worse."
    )
    left, right = st.columns(2)
    for column, kind, axis in (
        (left, "peak context", "Peak context %"),
        (right, "summarizations", "Summarizations"),
    ):
        part = frame[frame["by"] == kind]
        column.plotly_chart(share_bars(part, "group", f"Outcome by {kind}", axis), width="stretch")
    common.csv_download(frame, "outcomes_by_context")


def calibration_tab(filters: Filters, calib: outcome_agreement.Calibration) -> None:
    settings = get_settings()
    if calib.items == 0:
        st.info(
            "No conversation judged by the model carries a reviewer's outcome yet. Reviewers "
            "pick an outcome and a topic for each conversation they score on the **Review** "
            "page; queue judged conversations there to calibrate the judge.",
            icon=":material/info:",
        )
        return
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Labelled pairs", f"{calib.items:,}", border=True, help="(conversation, reviewer)")
    c2.metric(
        "Cohen's κ",
        "–" if calib.kappa is None else f"{calib.kappa:.3f}",
        border=True,
        help="Agreement beyond chance between the judge's outcome and the reviewer's: 1 "
        "perfect, 0 chance, below 0 worse than chance. JUDGE_MIN_AGREEMENT is "
        f"{settings.judge_min_agreement}.",
    )
    c3.metric(
        "Krippendorff's α (nominal)",
        "–" if calib.alpha is None else f"{calib.alpha:.3f}",
        border=True,
    )
    c4.metric(
        "Topic κ",
        "–" if calib.topic_kappa is None else f"{calib.topic_kappa:.3f}",
        border=True,
        help=f"Same outcome on {pct(calib.exact_pct)} of the pairs",
    )
    left, right = st.columns([2, 3])
    confusion = calib.confusion
    fig = px.imshow(
        confusion.values,
        x=[OUTCOME_LABELS[o] for o in confusion.columns],
        y=[OUTCOME_LABELS[o] for o in confusion.index],
        text_auto=True,
        color_continuous_scale="Blues",
        labels={"x": "Reviewer's outcome", "y": "Judge's outcome", "color": "Pairs"},
        title="Judge against reviewers (pairs)",
    )
    fig.update_layout(margin={"t": 50, "b": 10})
    left.plotly_chart(fig, width="stretch")
    with right:
        st.markdown("**By rubric version and judge model**")
        st.dataframe(calib.groups, hide_index=True, width="stretch", column_config=COLUMNS)
        common.csv_download(calib.groups, "judge_agreement")
    st.markdown("**Where the judge and a reviewer disagree**")
    differ = _disagreements(engine, url, filters)
    if differ.empty:
        st.caption("The judge agrees with every reviewer label in this range.")
        return
    shown = (
        f"The latest {len(differ):,} of {calib.disagreeing:,}"
        if calib.disagreeing > len(differ)
        else f"All {calib.disagreeing:,}"
    )
    st.caption(f"{shown} pairs where the two outcomes differ, newest first")
    rows = common.picked_rows(
        differ[
            [
                "ended_at",
                "session_id",
                "judge_outcome",
                "reviewer_outcome",
                "reviewer",
                "judge_topic",
                "reviewer_topic",
                "reason",
            ]
        ],
        key="o_differ",
        export="judge_disagreements",
        column_config=COLUMNS,
    )
    if calib.disagreeing > len(differ) and st.toggle(
        "Prepare a CSV of every disagreement",
        key="o_differ_export",
        help=f"Up to {outcomes.MAX_EXPORT:,}",
    ):
        with st.spinner("Reading every disagreement…"):
            every = outcome_agreement.pairs(
                engine=engine, filters=filters, differ=True, limit=outcomes.MAX_EXPORT
            )
        common.csv_download(every, "judge_disagreements_all")
    if rows:
        picked = str(differ.iloc[rows[0]]["session_id"])
        st.caption(f"Picked {md(picked)}")
        with st.container(horizontal=True):
            if signin.may("review.queue"):
                st.button(
                    "Send back to the review queue",
                    icon=":material/replay:",
                    on_click=send_back,
                    args=(picked,),
                    help="One more review of this conversation, by anyone.",
                )
            st.button(
                "Open the transcript",
                icon=":material/forum:",
                on_click=transcript.open_conversation,
                args=(picked,),
            )


def send_back(session_id: str) -> None:
    try:
        said = review.send_back(
            engine=writer(engine), session_id=session_id, created_by=who.username
        )
    except review.ReviewInputError as error:
        st.toast(md(error), icon=":material/error:")
        return
    audit.try_record(
        engine=writer(engine), actor=who.username, action="queue_added", target=session_id
    )
    st.toast(md(said), icon=":material/replay:")


def ended_tab(filters: Filters) -> None:
    choices = ["", *OUTCOMES, "unjudged"]
    wanted = st.query_params.get("outcome", "")
    if wanted not in choices:
        st.warning(f"Unknown outcome {md(wanted[:40])!s} in the URL; showing every outcome.")
        wanted = ""
    picked = st.selectbox(
        "Outcome",
        choices,
        index=choices.index(wanted),
        format_func=lambda o: OUTCOME_LABELS.get(o, "Every outcome"),
        key="o_outcome",
    )
    if picked:
        st.query_params["outcome"] = picked
    elif "outcome" in st.query_params:
        del st.query_params["outcome"]
    _, total = outcomes.ended_conversations(
        engine=engine, filters=filters, outcome=picked or None, limit=0
    )
    pages = max(1, -(-total // PAGE_SIZE))
    page = st.number_input("Page", 1, pages, 1, key="o_page", help=f"{pages:,} pages")
    frame, total = outcomes.ended_conversations(
        engine=engine,
        filters=filters,
        outcome=picked or None,
        offset=(int(page) - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    st.caption(f"{total:,} ended conversations; newest end first; page {int(page)} of {pages:,}")
    if transcript.masking():
        frame = frame.assign(
            reason=frame["reason"].map(transcript.shown), quote=frame["quote"].map(transcript.shown)
        )
    rows = st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        key="o_ended",
        on_select="rerun",
        selection_mode="single-row",
        column_config=COLUMNS,
    ).selection.rows
    if rows:
        transcript.open_conversation(str(frame.iloc[rows[0]]["session_id"]))
    if st.toggle(
        "Prepare a CSV of every match", key="o_export", help=f"Up to {outcomes.MAX_EXPORT:,}"
    ):
        with st.spinner("Reading every match…"):
            every, _ = outcomes.ended_conversations(
                engine=engine, filters=filters, outcome=picked or None, limit=outcomes.MAX_EXPORT
            )
        common.csv_download(every, "ended_conversations")


st.title("Outcomes")
settings = get_settings()
engine, filters = common.analyst_page(keep=("outcome",))
url = common.read_key()
st.caption(filtering.describe_filters(filters) + " · by when the conversation ended")

s = _summary(engine, url, filters)
if s.ended == 0 and s.counts["unjudged"] == 0:
    waiting = pending_ends(engine=engine)
    st.info(
        "No conversation in this range has a verdict yet. A conversation ends after "
        f"{settings.conversation_idle_minutes} minutes without a message "
        "(CONVERSATION_IDLE_MINUTES), or when someone presses **End conversation** on the Chat "
        "page (or calls POST /sessions/{id}/close). The judge worker then gives it a verdict "
        f"within about {settings.judge_interval_s} s"
        + (f"; {waiting:,} ended conversations are waiting now." if waiting else ".")
        + " `make demo` plants 30 days of outcomes to explore.",
        icon=":material/info:",
    )
    st.stop()

calib = _calibration(engine, url, filters)
trusted = calib.trusted(settings.judge_min_agreement)
kappa = "–" if calib.kappa is None else f"{calib.kappa:.2f}"
if trusted is False:
    st.error(
        f"**The judge's figures cannot be trusted yet.** On {calib.items:,} conversations that "
        f"reviewers labelled, the judge agrees with them at Cohen's κ = {kappa}, below "
        f"JUDGE_MIN_AGREEMENT = {settings.judge_min_agreement}. Read the rates below as a rough "
        "guide, and see **Calibration** for where it goes wrong.",
        icon=":material/gpp_maybe:",
    )
elif trusted is None:
    st.warning(
        f"The judge is not calibrated yet: {calib.items:,} of the "
        f"{outcome_agreement.MIN_ITEMS} reviewer labels needed to check it"
        + (f" (κ = {kappa} so far)." if calib.kappa is not None else ".")
        + " Reviewers pick an outcome for each conversation they score on the Review page.",
        icon=":material/rule:",
    )
else:
    st.success(
        f"The judge agrees with reviewers at Cohen's κ = {kappa} on {calib.items:,} conversations.",
        icon=":material/verified:",
    )

# Two rows of three: six cards in one row cut their labels and the cost on a laptop screen.
cards = [*st.columns(3), *st.columns(3)]
cards[0].metric(
    "Automated resolution",
    pct(s.rate("resolved")),
    border=True,
    help=RATE_HELP + f" {s.counts['resolved']:,} of {s.ended:,}.",
)
cards[1].metric(
    "Escalation",
    pct(s.rate("escalated")),
    border=True,
    help="Ticket, hand-over, or asked for a person",
)
cards[2].metric(
    "Abandonment",
    pct(s.rate("abandoned")),
    border=True,
    help="The customer stopped answering while the agent needed something",
)
cards[3].metric(
    "Reopened",
    pct(s.reopen_rate),
    border=True,
    help="Resolved conversations the customer came back to within "
    f"{settings.reopen_window_hours} h (REOPEN_WINDOW_HOURS): {s.reopened:,} of "
    f"{s.resolved_verdicts:,}",
)
cards[4].metric(
    "Involvement",
    pct(s.involvement_rate),
    border=True,
    help="Ended conversations in which the agent answered at least once",
)
cards[5].metric(
    "Cost per resolved",
    "–" if s.cost_per_resolved is None else f"${s.cost_per_resolved:,.4f}",
    border=True,
    help="The agent's cost of every ended conversation ÷ resolved ones: compare it with the "
    "cost of a ticket a person handles.",
)
st.caption(
    f"{s.ended + s.counts['unjudged']:,} ended conversations: {s.ended:,} with a verdict (the "
    f"rates' base) · {s.counts['unresolved']:,} unresolved · {s.counts['unjudged']:,} unjudged "
    "(the judge failed twice; see the table)"
)

# Each tab's queries run only when it is open (the calibration counts above serve the banner).
views = {
    "Rates": rates_tab,
    "Context and summarization": context_tab,
    "Calibration": lambda f: calibration_tab(f, calib),
    "Ended conversations": ended_tab,
}
# A link with an outcome filter (the Cost page's, or a shared one) opens on the table it filters.
opening = "Ended conversations" if "outcome" in st.query_params else None
tabs = st.tabs(list(views), default=opening, key="outcomes_tab", on_change="rerun")
for tab, draw in zip(tabs, views.values(), strict=True):
    if tab.open:
        with tab:
            draw(filters)
