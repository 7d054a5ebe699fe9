"""Token cost: KPIs against the previous period, cost and tokens over time, per model, user and
session, what-if re-pricing, and the calls that have no price."""

from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from data.analytics import cost, outcomes, sessions
from data.analytics.compare import change, is_new
from data.analytics.filters import Filters
from data.config.settings import get_settings
from data.integrations.prices import BUILTIN_OVERRIDES, load_overrides, price_table
from pages.ui import budget_section, charts, common, filtering, signin, transcript

common.ensure_routed()
who = signin.require("cost")
TTL = 60


@st.cache_data(ttl=60, max_entries=32, show_spinner=False)
def _resolved(_engine: Engine, url: str, filters: Filters) -> outcomes.Summary:
    return outcomes.summary(engine=_engine, filters=filters)


@st.cache_data(ttl=TTL, max_entries=64, show_spinner=False)
def _view(_engine: Engine, url: str, filters: Filters) -> cost.CostPageData:
    return cost.page_data(engine=_engine, filters=filters)


@st.cache_data(ttl=TTL, max_entries=64, show_spinner=False)
def _unpriced(_engine: Engine, url: str, filters: Filters) -> pd.DataFrame:
    return cost.unpriced_calls(engine=_engine, filters=filters)


@st.cache_data(ttl=TTL, max_entries=256, show_spinner=False)
def _page(
    _engine: Engine,
    url: str,
    which: str,
    filters: Filters,
    sort: str,
    descending: bool,
    offset: int,
    search: str,
    total: int,
) -> sessions.Page:
    read = sessions.session_page if which == "sessions" else sessions.user_page
    return read(
        engine=_engine,
        filters=filters,
        sort=sort,
        descending=descending,
        offset=offset,
        limit=PAGE_ROWS,
        search=search or None,
        total=total,
    )


PAGE_ROWS = 50


def table(
    which: str, filters: Filters, *, sorts: dict[str, str], hint: str, total: int
) -> str | None:
    """A per-user or per-session table read a page at a time, sorted and searched in the
    database; the CSV holds the whole table. `total` is its row count without a search (the
    KPIs counted the same rows). Returns the id of a clicked row."""
    key = f"{which}_table"
    left, mid, right, last = st.columns([3, 2, 1, 1], vertical_alignment="bottom")
    search = left.text_input(
        "Search",
        key=f"{key}_search",
        max_chars=sessions.MAX_SEARCH,
        placeholder="part of a user id" if which == "users" else "part of a session or user id",
    ).strip()
    sort = mid.selectbox("Sort by", list(sorts), format_func=sorts.__getitem__, key=f"{key}_sort")
    descending = right.toggle("Descending", value=True, key=f"{key}_desc")
    state = (search, sort, descending, filters)
    if st.session_state.get(f"{key}_state") != state:  # a new question starts at page 1
        st.session_state[f"{key}_state"] = state
        st.session_state[f"{key}_pageno"] = 1
    count = _page(engine, url, which, filters, sort, descending, 0, search, total).total
    pages = max(1, -(-count // PAGE_ROWS))
    number = last.number_input(f"Page (of {pages:,})", 1, pages, key=f"{key}_pageno", step=1)
    offset = (number - 1) * PAGE_ROWS
    page = _page(engine, url, which, filters, sort, descending, offset, search, total)
    rows = page.rows if which == "users" else page.rows[list(sessions.SESSION_VIEW)]
    first = page.offset + 1 if count else 0
    st.caption(
        f"{which.capitalize()} {first:,}–{page.offset + len(rows):,} of {count:,}"
        f"{' matching the search' if search else ''}, sorted by {sorts[sort].lower()} in the "
        f"database; click {hint}."
    )
    picked = st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        key=key,
        on_select="rerun",
        selection_mode="single-row",
        column_config=charts.COLUMNS,
    )
    st.download_button(
        f"Download all {count:,} as CSV",
        # Run on click, in Streamlit's download thread: rows come through a server-side cursor
        # into a temporary file, never as one DataFrame.
        lambda: sessions.csv_file(
            engine=engine,
            table=which,  # type: ignore[arg-type]
            filters=filters,
            sort=sort,
            descending=descending,
            search=search or None,
        ),
        f"cost_by_{which[:-1]}.csv",
        "text/csv",
        icon=":material/download:",
        key=f"csv_{key}",
        disabled=count == 0,
    )
    if picked.selection.rows:
        return str(rows.iloc[picked.selection.rows[0]]["user" if which == "users" else "session"])
    return None


def delta(now: float | None, before: float | None, color: str = "off") -> dict[str, Any]:
    """A card's delta and its color: "new" is neither good nor bad, so it is shown grey."""
    text = change(now, before, calls_now=totals.calls, calls_before=before_totals.calls)
    return {"delta": text, "delta_color": "off" if is_new(text) else color}


st.title("Token cost")
engine, filters = common.analyst_page()
url = common.read_key()
st.caption(filtering.describe_filters(filters))
view = _view(engine, url, filters)
totals, before = view.totals, view.previous
before_totals = before
if totals.calls == 0:
    st.info(
        "No model calls match these filters. Widen the date range or clear the model, user "
        "or session filter in the sidebar.",
        icon=":material/info:",
    )
    st.stop()

cards = [*st.columns(4), *st.columns(3)]
cards[0].metric(
    "Cost (USD)",
    f"${totals.cost_usd:,.4f}",
    border=True,
    **delta(totals.cost_usd, before.cost_usd, "inverse"),
)
cards[1].metric(
    "Tokens",
    common.compact(totals.tokens),
    border=True,
    **delta(totals.tokens, before.tokens),
    help=f"{totals.tokens:,} tokens: {totals.input_tokens:,} input (of which "
    f"{totals.cached_input_tokens:,} cached) and {totals.output_tokens:,} output",
)
cards[2].metric(
    "Model calls",
    f"{totals.calls:,}",
    border=True,
    **delta(totals.calls, before.calls),
    help=f"{totals.errors:,} of them failed",
)
cards[3].metric(
    "Cost / conversation",
    "–" if totals.cost_per_session is None else f"${totals.cost_per_session:,.4f}",
    border=True,
    **delta(totals.cost_per_session, before.cost_per_session, "inverse"),
    help=f"{totals.sessions:,} conversations",
)
cards[4].metric(
    "Cost / user",
    "–" if totals.cost_per_user is None else f"${totals.cost_per_user:,.4f}",
    border=True,
    **delta(totals.cost_per_user, before.cost_per_user, "inverse"),
    help=f"{totals.users:,} users",
)
resolved = _resolved(engine, url, filters)
cards[5].metric(
    "Cost / resolved conversation",
    "–" if resolved.cost_per_resolved is None else f"${resolved.cost_per_resolved:,.4f}",
    border=True,
    help=f"The agent's cost of the {resolved.ended:,} conversations that ended in this range "
    f"÷ the {resolved.counts['resolved']:,} resolved (see Outcomes): compare it with the cost "
    "of a ticket a person handles.",
)
cards[6].metric(
    "Unpriced calls",
    f"{totals.unpriced_calls:,}",
    border=True,
    help="Calls of models with no known price. Their cost is not in any total; "
    "add the model to PRICE_OVERRIDES_FILE to price them.",
)

over_time = view.over_time
left, right = st.columns(2)
with left:
    st.plotly_chart(
        charts.stacked_bars(
            over_time,
            filters,
            y="cost_usd",
            color="model",
            axis="Cost (USD)",
            title="Cost over time, by model",
            value="$%{y:.6f}",
        ),
        width="stretch",
    )
with right:
    st.plotly_chart(
        charts.stacked_bars(
            cost.tokens_by_type(over_time),
            filters,
            y="tokens",
            color="type",
            axis="Tokens",
            title="Tokens over time, by type",
            value="%{y:,} tokens",
        ),
        width="stretch",
    )
common.csv_download(over_time, "cost_over_time")

st.subheader("Per model")
by_model = view.by_model
st.dataframe(by_model, hide_index=True, width="stretch", column_config=charts.COLUMNS)
common.csv_download(by_model, "cost_by_model")

tab_users, tab_sessions = st.tabs(["Per user", "Per session"])
with tab_users:
    picked_user = table(
        "users",
        filters,
        sorts={
            "cost_usd": "Cost",
            "calls": "Calls",
            "tokens": "Tokens",
            "sessions": "Sessions",
            "unpriced_calls": "Unpriced calls",
            "user": "User",
        },
        hint="a row to see the user's conversations",
        total=totals.users,
    )
    if picked_user is not None:
        st.query_params["user"] = picked_user
        st.session_state.pop("_filters_query", None)
        st.rerun()
with tab_sessions:
    picked_session = table(
        "sessions",
        filters,
        sorts={
            "cost_usd": "Cost",
            "calls": "Calls",
            "tokens": "Tokens",
            "turns": "Turns",
            "last_call": "Last call",
            "first_call": "First call",
            "unpriced_calls": "Unpriced calls",
            "session": "Session",
            "user": "User",
        },
        hint="a row to open the conversation",
        total=totals.sessions,
    )
    if picked_session is not None:
        transcript.open_conversation(picked_session)

st.subheader("What if")
priced = [m for m in charts.PRICEABLE_MODELS if m not in BUILTIN_OVERRIDES]
target = st.selectbox(
    "Re-price this traffic as if every call went to",
    priced,
    index=priced.index("gpt-4o-mini"),
    key="what_if_model",
)
# Re-pricing the per-model sums runs no query, so it needs no cache.
what_if = cost.reprice(by_model, target_model=target)
actual = what_if["actual_cost_usd"].sum()
hypothetical = what_if["what_if_cost_usd"].sum()
c1, c2, c3 = st.columns(3)
c1.metric("Actual cost", f"${actual:,.4f}", border=True)
c2.metric(f"Cost on {target}", f"${hypothetical:,.4f}", border=True)
c3.metric(
    "Difference",
    f"${hypothetical - actual:+,.4f}",
    border=True,
    delta=f"{100 * (hypothetical - actual) / actual:+.1f}%" if actual else None,
    delta_color="inverse",
)
st.dataframe(what_if, hide_index=True, width="stretch", column_config=charts.COLUMNS)
common.csv_download(what_if, "what_if")

with st.expander("Price table in use", icon=":material/sell:"):
    overrides = load_overrides(get_settings().price_overrides_file)
    pairs = list(by_model[["provider", "model"]].itertuples(index=False, name=None))
    prices = pd.DataFrame(price_table(pairs, overrides))
    st.caption(
        "USD per million tokens. Prices come from genai-prices; self-hosted and custom "
        "models are priced by the JSON file named by PRICE_OVERRIDES_FILE."
    )
    st.dataframe(
        prices,
        hide_index=True,
        width="stretch",
        column_config={
            "model": "Model",
            "provider": "Provider",
            "source": "Source",
            **{
                c: st.column_config.NumberColumn(
                    c.replace("_per_mtok", "").replace("_", " ").capitalize() + " ($/Mtok)",
                    format="$%.4f",
                )
                for c in ("input_per_mtok", "cached_input_per_mtok", "output_per_mtok")
            },
        },
    )
    common.csv_download(prices, "price_table")

if totals.unpriced_calls:
    st.subheader(f"Unpriced calls ({totals.unpriced_calls:,})")
    st.caption(
        "These calls are counted but not priced. Give their models a price in the "
        "file named by PRICE_OVERRIDES_FILE."
    )
    unpriced = _unpriced(engine, url, filters)
    st.dataframe(unpriced, hide_index=True, width="stretch", column_config=charts.COLUMNS)
    common.csv_download(unpriced, "unpriced_calls")

budget_section.section(engine)
