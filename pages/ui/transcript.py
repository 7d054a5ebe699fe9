"""A conversation as the pages show it: each turn with its caption and details (memories,
tools, summaries, usage), all untrusted text shown as text, PII masked when masking is on."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any

import streamlit as st
from sqlalchemy import Engine

from data.access.sanitize import mask_pii, md
from data.config.settings import get_settings
from data.store.conversations import (
    TranscriptMessage,
    TurnEvent,
    TurnStats,
    transcript,
    turn_events,
    turn_stats,
)


def masking() -> bool:
    """PII_MASKING: mask e-mails, phones and card numbers where conversations are read."""
    return get_settings().pii_masking


def open_conversation(session_id: str) -> None:
    """Drill down: open the conversation viewer on one session."""
    st.switch_page("pages/conversation.py", query_params={"session": session_id})


def turn_caption(stats: TurnStats | None) -> str:
    """Tokens, cost, latency and context % of one turn, under its answer."""
    if stats is None:
        return "usage not recorded"
    cost = "unpriced" if stats.cost_usd is None else f"${stats.cost_usd:.6f}"
    context = "–" if stats.context_percent is None else f"{stats.context_percent:.1f}%"
    text = (
        f"{stats.input_tokens:,} in · {stats.output_tokens:,} out tokens · {cost} · "
        f"{stats.latency_ms / 1000:.2f} s · context {context}"
    )
    if stats.calls > 1:
        text += f" · {stats.calls} model calls"
    if stats.errors:
        text += f" · {stats.errors} failed"
    return text


def turn_details(events: list[TurnEvent] | None, *, mask: bool = True) -> None:
    """What the agent did for one answer: the memories it recalled, the tools it called and a
    summarization, in an expander under the answer. Nothing is drawn for a turn without events."""
    if not events:
        return
    recalls = [e for e in events if e.kind == "memory_recall"]
    tools = [e for e in events if e.kind == "tool_call"]
    folds = [e for e in events if e.kind == "summarization"]
    memories = [m for e in recalls for m in e.detail.get("memories", [])]
    restored = [m for e in recalls for m in e.detail.get("restored", [])]
    used = len(memories) + len(restored)
    parts = [f"{used} memor{'y' if used == 1 else 'ies'} used"]
    if tools:
        failed = sum(e.status != "ok" for e in tools)
        parts.append(f"{len(tools)} tool call{'s' if len(tools) != 1 else ''}")
        if failed:
            parts.append(f"{failed} failed")
    if folds:
        parts.append("summarized")
    with st.expander(" · ".join(parts), icon=":material/psychology:"):
        for fold in folds:
            st.markdown(
                f"**Summarized** before this answer: {fold.messages_folded or 0} messages folded, "
                f"{fold.tokens_before or 0:,} → {fold.tokens_after or 0:,} tokens "
                f"in {fold.latency_ms / 1000:.2f} s."
            )
            if summary := fold.detail.get("summary"):
                st.caption(shown(summary, mask))
        for recall in recalls:
            if recall.status != "ok":
                st.warning(f"Memory was unavailable: {md(recall.error)}", icon=":material/warning:")
        if memories:
            st.markdown("**Memories recalled**")
            for memory in memories:
                text = shown(memory.get("text", ""), mask)
                st.markdown(f"- {text} · {float(memory.get('score', 0)):.2f}")
        if restored:
            st.markdown("**Facts restored from this conversation's summarized messages**")
            for memory in restored:
                st.markdown(f"- {shown(memory.get('text', ''), mask)}")
        if recalls and not memories and not restored:
            st.caption(
                f"No memory above the similarity threshold ({recalls[0].latency_ms:.0f} ms)."
            )
        if tools:
            st.markdown("**Tools called**")
            for tool in tools:
                mark = "✅" if tool.status == "ok" else "⚠️"
                args = tool.detail.get("args")
                shown_args = "" if args is None else " " + shown(compact_json(args), mask)
                st.markdown(f"- {mark} {md(tool.name)}{shown_args} · {tool.latency_ms:.0f} ms")
                if tool.status != "ok" and tool.error:
                    st.caption(shown(tool.error, mask))
        used_articles = [a for tool in tools for a in tool.detail.get("articles", [])]
        if used_articles:
            st.markdown("**Help-center articles used**")
            for article in dict.fromkeys(
                (str(a.get("title", "")), str(a.get("file", ""))) for a in used_articles
            ):
                # The team's own text: shown as text, never as Markdown.
                st.text(f"{article[0]} ({article[1] or 'built-in'})")


def conversation(
    engine: Engine,
    session_id: str,
    *,
    folds: Collection[int] = (),
    footer: Callable[[TranscriptMessage], None] | None = None,
    mask: bool = True,
    before: datetime | None = None,
) -> None:
    """A conversation as chat messages: each answer with its usage caption and what the agent
    did, a notice (with the summary when it was recorded) before each turn where older messages
    were summarized (from its events, and the turns in `folds`), and `footer` under each
    answer. With PII_MASKING on and `mask`, e-mails, phones and card numbers are masked.
    With `before`, only the messages stored before that moment."""
    stats = turn_stats(engine=engine, session_id=session_id)
    events = turn_events(engine=engine, session_id=session_id)
    summaries = {
        turn: [e.detail.get("summary") for e in found if e.kind == "summarization"]
        for turn, found in events.items()
    }
    folded = set(folds) | {turn for turn, found in summaries.items() if found}
    messages = transcript(engine=engine, session_id=session_id)
    if before is not None:  # a turn still being answered is drawn by its page
        messages = [m for m in messages if m.created_at < before]
    answered = {m.turn for m in messages if m.role == "assistant"}
    for message in messages:
        if message.role == "user" and message.turn in folded:
            text = next((s for s in summaries.get(message.turn, []) if s), None)
            st.info(
                f"Before turn {message.turn} the older messages were summarized"
                + (f": {shown(text, mask)}" if text else " (the summary text was not recorded)."),
                icon=":material/compress:",
            )
        with st.chat_message(message.role):
            st.markdown(shown(message.content, mask))
            if message.role == "assistant":
                st.caption(turn_caption(stats.get(message.turn)))
                turn_details(events.get(message.turn), mask=mask)
                if footer is not None:
                    footer(message)
            elif message.turn not in answered:
                st.caption(unanswered(events.get(message.turn), stats.get(message.turn)))


def unanswered(events: list[TurnEvent] | None, stats: TurnStats | None) -> str:
    """Why a customer's message has no answer, from what its turn recorded."""
    cancelled = next((e for e in events or [] if e.kind == "turn_cancelled"), None)
    if cancelled is not None:
        return f"No answer: {md(cancelled.error or 'cancelled')}."
    refused = next((e for e in events or [] if e.status == "error" and e.error), None)
    if refused is not None:
        return f"No answer: {md(refused.error)}."
    if stats is not None and stats.errors:
        return "No answer: the model call failed; the message was kept, send it again."
    return "No answer recorded for this message."


def shown(text: Any, mask: bool = True) -> str:
    """Untrusted text (chat, model answers, memories, summaries, comments) ready for a
    Markdown element: escaped, and with PII masked when PII_MASKING is on and `mask`."""
    return md(mask_pii(text) if mask and masking() else text)


def compact_json(value: Any, limit: int = 120) -> str:
    """A one-line JSON preview, clipped to `limit` characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
