"""Review conversations: reviewers claim the next one, read it and score it 1 to 5 against a
rubric; leads fill and assign the queue; everyone sees progress."""

from datetime import UTC, datetime, time

import pandas as pd
import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from data.access import audit
from data.access.sanitize import md
from data.analytics import sessions
from data.config.settings import get_settings
from data.config.topics import TopicsError, load_topics, topic_names
from data.store.conversations import TranscriptMessage, get_session, session_calls
from data.store.feedback import MAX_COMMENT_CHARS, thumbs_for_session
from data.store.orm_outcomes import OUTCOME_LABELS, OUTCOMES
from data.workflows import review, review_candidates, review_scores
from pages.ui import charts, common, filtering, resources, signin, transcript

common.ensure_routed()
me = signin.require("review")

COLUMNS = {
    **charts.COLUMNS,
    "item_id": st.column_config.NumberColumn("Item"),
    "started": st.column_config.DatetimeColumn("Started (UTC)", format="YYYY-MM-DD HH:mm"),
    "latency_p95_ms": st.column_config.NumberColumn("p95 latency (ms)", format="%.0f"),
    "summarized": st.column_config.CheckboxColumn("Summarized"),
    "thumbs_down": st.column_config.CheckboxColumn("Thumbs-down"),
    "queued": st.column_config.CheckboxColumn("Queued"),
    "reviews_required": st.column_config.NumberColumn("Reviews wanted"),
    "reviews_done": st.column_config.NumberColumn("Reviews done"),
    "assigned_to": "Assigned to",
    "claimed_by": "Claimed by",
    "claim_expires_at": st.column_config.DatetimeColumn("Claim ends (UTC)", format="HH:mm:ss"),
    "created_by": "Queued by",
    "created_at": st.column_config.DatetimeColumn("Queued (UTC)", format="YYYY-MM-DD HH:mm"),
    "reviewer": "Reviewer",
    "done_today": st.column_config.NumberColumn("Done today"),
    "done_in_range": st.column_config.NumberColumn("Done in range"),
    "claimed": st.column_config.NumberColumn("Claimed now"),
    "pending": st.column_config.NumberColumn("Assigned, pending"),
}


SHOWN = 500  # candidates listed; "Add" without a selection queues every match


@st.cache_data(ttl=30, max_entries=32, show_spinner="Finding conversations…")
def _candidates(
    _engine: Engine, url: str, filters: review.QueueFilters
) -> tuple[pd.DataFrame, int]:
    return (
        review_candidates.candidates(engine=_engine, filters=filters, limit=SHOWN),
        review_candidates.count_candidates(engine=_engine, filters=filters),
    )


def claim_next() -> None:
    try:
        claim = review.claim_next(engine=engine, reviewer=who, ttl_s=settings.review_claim_ttl_s)
    except review.ReviewInputError as error:
        st.session_state["review_error"] = str(error)
        return
    st.session_state["claim"] = claim
    st.session_state.pop("review_error", None)
    if claim is not None:
        audit.try_record(
            engine=engine,
            actor=who,
            action="claim",
            target=claim.session_id,
            detail={"item_id": claim.item_id},
        )
    if claim is None:
        st.session_state["review_error"] = (
            "Nothing to review: every queued conversation has its reviews, is claimed by someone "
            "else or is assigned to another reviewer. A lead adds conversations under **Queue**."
        )


def release() -> None:
    if claim := st.session_state.pop("claim", None):
        review.release(engine=engine, token=claim.token)
        audit.try_record(
            engine=engine,
            actor=who,
            action="claim_released",
            target=claim.session_id,
            detail={"item_id": claim.item_id},
        )
    st.session_state.pop("review_error", None)


def save_and_next() -> None:
    """Save the score under the claim, then claim the next item: the score is stored before
    the next conversation loads."""
    claim, score = st.session_state.get("claim"), st.session_state.get("score")
    if claim is None:
        return
    outcome, topic = st.session_state.get("score_outcome"), st.session_state.get("score_topic")
    if score is None or outcome is None or topic is None:
        st.session_state["review_error"] = (
            "Choose a score from 1 to 5, the outcome and the topic, then save."
        )
        return
    try:
        review.save_score(
            engine=engine,
            token=claim.token,
            reviewer=who,
            score=score,
            comment=st.session_state.get("score_comment") or None,
            sync_enabled=settings.langsmith_feedback_enabled,
            outcome=outcome,
            topic=topic,
            topics=TOPICS,
        )
    except review.ReviewInputError as error:
        st.session_state["review_error"] = str(error)
        return
    audit.try_record(
        engine=engine,
        actor=who,
        action="score_saved",
        target=claim.session_id,
        detail={"item_id": claim.item_id, "score": score, "outcome": outcome, "topic": topic},
    )
    st.session_state["saved"] = (claim.item_id, claim.session_id, score)
    st.session_state["toast"] = True
    st.session_state["score"], st.session_state["score_comment"] = None, ""
    st.session_state["score_outcome"] = st.session_state["score_topic"] = None
    claim_next()


def review_tab() -> None:
    if saved := st.session_state.get("saved"):
        item_id, session_id, score = saved
        if st.session_state.pop("toast", False):
            st.toast(f"Saved {score}/5 for {md(session_id)}.", icon=":material/check_circle:")
        others = review_scores.item_scores(engine=engine, item_id=item_id, reviewer=who)
        with st.expander(f"Other reviewers' scores of {md(session_id)} ({len(others)})"):
            if others.empty:
                st.caption("Nobody else has scored it yet.")
            else:
                st.dataframe(others, hide_index=True, width="stretch", column_config=COLUMNS)
    claim = st.session_state.get("claim")
    if claim is not None and claim.reviewer != who:  # the name in the sidebar changed
        release()
        claim = None
    error = st.session_state.get("review_error")
    if claim is None:
        if error:
            st.info(error, icon=":material/inbox:")
        st.button("Claim next", type="primary", icon=":material/play_arrow:", on_click=claim_next)
        st.caption(
            f"A claim keeps a conversation yours for {settings.review_claim_ttl_s // 60} minutes; "
            "nobody else gets it meanwhile."
        )
        return
    session = get_session(engine=engine, session_id=claim.session_id)
    calls = session_calls(engine=engine, session_id=claim.session_id)
    thumbs = thumbs_for_session(engine=engine, session_id=claim.session_id)
    folds = set(calls.loc[calls["purpose"] == "summarize", "turn"])
    about = [
        f"Conversation {md(claim.session_id)}",
        f"user {transcript.shown(session.user_id) if session else '?'}",
    ]
    totals = sessions.session_totals(engine=engine, session_id=claim.session_id)
    if totals is not None:  # the one definition of a session's totals (data.analytics.sessions)
        about += [
            md(str(totals["model"])),
            f"{totals['turns']} turns",
            f"summarized {totals['summarizations']}×"
            if totals["summarizations"]
            else "never summarized",
            f"${totals['cost_usd']:,.6f}",
            f"{int(totals['tokens']):,} tokens",
        ]
    else:
        about.append("no model calls recorded")
    st.caption(" · ".join([*about, f"yours until {claim.expires_at:%H:%M} UTC"]))
    left, right = st.columns([3, 2], gap="medium")
    with left, st.container(height=640, border=True, autoscroll=False):

        def customer(message: TranscriptMessage) -> None:
            if given := thumbs.get(message.id):
                mark = "👍" if given.score else "👎"
                st.caption(f"Customer: {mark} {transcript.shown(given.comment or '')}")

        transcript.conversation(
            engine,
            claim.session_id,
            folds=folds,
            footer=customer,
        )
    with right:
        st.markdown("**Rubric**")
        st.markdown("\n".join(f"{n}. {text}" for n, text in review.RUBRIC))
        if error:
            st.error(error, icon=":material/error:")
        with st.form("score_form", border=True):
            st.radio(
                "Score",
                range(review.SCORE_MIN, review.SCORE_MAX + 1),
                index=None,
                horizontal=True,
                key="score",
                help="1 wrong or harmful … 5 resolved; see the rubric above.",
            )
            st.radio(
                "Outcome",
                OUTCOMES,
                index=None,
                horizontal=True,
                key="score_outcome",
                format_func=OUTCOME_LABELS.__getitem__,
                help="How the conversation ended for the customer: resolved; escalated (a "
                "ticket, a hand-over, or they asked for a person); abandoned (they stopped "
                "answering while the agent needed something); unresolved (the problem stayed).",
            )
            st.selectbox(
                "Topic",
                TOPICS,
                index=None,
                key="score_topic",
                placeholder="What the customer needed",
            )
            st.text_input(
                "Comment",
                key="score_comment",
                max_chars=MAX_COMMENT_CHARS,
                placeholder="Why this score (optional); Enter saves",
            )
            st.form_submit_button(
                "Save and next",
                type="primary",
                icon=":material/done:",
                on_click=save_and_next,
                shortcut="Ctrl+Enter",
            )
        st.caption("Other reviewers' scores are shown once you have scored.")
        with st.container(horizontal=True):
            st.button("Skip and release", icon=":material/undo:", on_click=release)
            if error:
                st.button("Claim again", icon=":material/refresh:", on_click=claim_next)


def queue_tab() -> None:
    filters = common.sidebar_filters(engine)
    st.caption(filtering.describe_filters(filters))
    c1, c2, c3, c4, c5 = st.columns(5)
    not_scored = c1.checkbox("Not yet scored", key="q_not_scored")
    thumbs_down = c1.checkbox("Thumbs-down", key="q_thumbs_down")
    summarized = c1.checkbox("Summarized", key="q_summarized")
    cost_pct = c2.number_input(
        "Cost above percentile", 0, 99, None, placeholder="any", key="q_cost_pct"
    )
    latency_pct = c3.number_input(
        "p95 latency above percentile", 0, 99, None, placeholder="any", key="q_latency_pct"
    )
    sample = c4.number_input("Random sample of", 1, 10_000, None, placeholder="all", key="q_sample")
    seed = c5.number_input(
        "Seed", 0, 2**31 - 1, 0, key="q_seed", help="The same seed gives the same sample."
    )
    query = review.QueueFilters(
        start=filters.start,
        end=filters.end,
        models=filters.models,
        user=filters.user,
        not_scored=not_scored,
        thumbs_down=thumbs_down,
        summarized=summarized,
        cost_above_pct=cost_pct,
        latency_above_pct=latency_pct,
        sample=sample,
        seed=seed,
    )
    common.demo_notice(engine, filters)
    found, total = _candidates(engine, settings.sqlalchemy_url, query)
    if found.empty:
        st.info(
            "No conversations match. Widen the date range in the sidebar or clear a filter.",
            icon=":material/info:",
        )
    else:
        shown = f"the newest {len(found):,} shown" if total > len(found) else "all shown"
        st.caption(f"{total:,} conversations ({shown}); select rows to queue only those.")
        rows = common.picked_rows(
            found,
            key="candidates",
            export="review_candidates",
            multi=True,
            column_config=COLUMNS,
            column_order=[c for c in found.columns if c != "item_id"],
        )
        chosen = found.iloc[rows] if rows else found
        fresh = chosen.loc[~chosen["queued"], "session_id"].tolist()
        every = not rows and total > len(found)
        with st.form("enqueue", border=False), st.container(horizontal=True):
            wanted = st.number_input(
                "Reviews per conversation", 1, 5, settings.reviews_required, key="q_required"
            )
            assignee = st.text_input("Assign to (optional)", max_chars=128, key="q_assignee")
            add = st.form_submit_button(
                f"Add all {total:,} (those not queued yet)"
                if every
                else f"Add {len(fresh):,} to the queue",
                type="primary",
                disabled=not fresh and not every,
            )
        if add:
            if every:
                fresh = review_candidates.candidate_ids(engine=engine, filters=query)
            try:
                added = review.enqueue(
                    engine=engine,
                    session_ids=fresh,
                    reviews_required=int(wanted),
                    created_by=who,
                    assigned_to=assignee.strip() or None,
                )
            except review.ReviewInputError as error:
                st.error(md(error), icon=":material/error:")
            else:
                audit.try_record(
                    engine=engine,
                    actor=who,
                    action="queue_added",
                    target=f"{added} conversations",
                    detail={
                        "sessions": fresh[:50],
                        "reviews_required": int(wanted),
                        "assigned_to": assignee.strip() or None,
                    },
                )
                _candidates.clear()
                st.toast(f"{added:,} conversations queued.", icon=":material/playlist_add:")
                st.rerun()

    st.subheader("The queue")
    items = review.queue(engine=engine)
    if items.empty:
        st.caption("Nothing is queued yet: pick conversations above and add them.")
        return
    rows = common.picked_rows(
        items, key="queue_items", export="review_queue", multi=True, column_config=COLUMNS
    )
    ids = items.iloc[rows]["item_id"].astype(int).tolist()
    with st.form("assign", border=False), st.container(horizontal=True):
        target = st.text_input("Reviewer", max_chars=128, key="assign_to", placeholder="anyone")
        go = st.form_submit_button(f"Assign {len(ids):,} selected", disabled=not ids)
    if go:
        try:
            changed = review.assign(engine=engine, item_ids=ids, reviewer=target.strip() or None)
        except review.ReviewInputError as error:
            st.error(md(error), icon=":material/error:")
            return
        audit.try_record(
            engine=engine,
            actor=who,
            action="assigned",
            target=target.strip() or "anyone",
            detail={"item_ids": ids[:200], "changed": changed},
        )
        st.toast(f"{changed:,} items assigned to {md(target.strip() or 'anyone')}.")
        st.rerun()


def mine_tab() -> None:
    """The reviewer's own scores (never anyone else's)."""
    filters = common.sidebar_filters(engine)
    own = review_scores.scores_frame(
        engine=engine, start=filters.start, end=filters.end, reviewer=who
    ).drop(columns=["reviewer"])
    st.caption(f"Your scores in {filtering.describe_filters(filters)}")
    if own.empty:
        st.info("You have no scores in this range yet: claim a conversation under **Review**.")
        return
    st.dataframe(own, hide_index=True, width="stretch", column_config=COLUMNS)
    common.csv_download(own, "my_scores")


def progress_tab() -> None:
    filters = common.sidebar_filters(engine)
    today = datetime.combine(datetime.now(UTC).date(), time(), UTC)
    done = review_scores.progress(
        engine=engine, day_start=today, start=filters.start, end=filters.end
    )
    st.caption(f"Today is {today:%Y-%m-%d} UTC · range {filtering.describe_filters(filters)}")
    if done.empty:
        st.info(
            "No reviews yet: claim a conversation under **Review**, or queue some under **Queue**.",
            icon=":material/info:",
        )
        return
    totals = {
        "done_today": "Scores today",
        "done_in_range": "Scores in range",
        "claimed": "Claimed now",
        "pending": "Assigned, pending",
    }
    for card, (column, label) in zip(st.columns(4), totals.items(), strict=True):
        card.metric(label, f"{int(done[column].sum()):,}", border=True)
    st.dataframe(done, hide_index=True, width="stretch", column_config=COLUMNS)
    common.csv_download(done, "review_progress")


st.title("Review")
try:
    engine = common.engine()
except SQLAlchemyError as error:
    st.error(common.database_error(error))
    st.stop()
settings = get_settings()
try:
    TOPICS = topic_names(settings.topics_file)
except TopicsError as error:  # reviews go on with the default taxonomy; the setting is named
    st.error(f"{error}. Using the default topics until it is fixed.", icon=":material/error:")
    TOPICS = [t.name for t in load_topics(None)]
resources.feedback_sync()
name = signin.reviewer()
if name is None:
    st.info(
        "Type your name under **Reviewer** in the sidebar to start: claims, scores and queue "
        "changes are recorded under it.",
        icon=":material/badge:",
    )
    st.stop()
who: str = name

# Filling and assigning the queue is the lead's (admin's) work; a reviewer reviews, sees the
# progress and their own scores.
views = {"Review": review_tab, "Queue": queue_tab, "Progress": progress_tab, "My scores": mine_tab}
if not signin.may("review.queue"):
    views.pop("Queue")
tabs = st.tabs(list(views), key="review_tab", on_change="rerun")
for tab, draw in zip(tabs, views.values(), strict=True):
    if tab.open:
        with tab:
            draw()
