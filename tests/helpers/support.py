"""The support agent assembled exactly as the app does (agent.runtime.assemble, settings
included), around a scripted chat model that calls the support tools like a tool-calling model
would: the order number in the customer's message -> lookup_order, "ticket" -> open_ticket,
"person" -> escalate_to_human, then an answer quoting what the tool returned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from sqlalchemy import Engine

from agent.embedding_base import Embedder
from agent.knowledge import KnowledgeBase
from agent.runtime import AgentParts, assemble
from agent.scripted import ScriptedChatModel
from agent.service import ChatService, TurnOutcome
from data.config.settings import load_settings
from data.integrations.order_records import order_numbers_in
from data.store.recorder import Recorder


def support_reply(messages: list[BaseMessage]) -> AIMessage:
    """A tool call for the customer's latest message, then an answer from its result."""
    last = messages[-1]
    if isinstance(last, ToolMessage):
        return AIMessage(f"[{last.status}] {last.text}")
    human = next(m for m in reversed(messages) if isinstance(m, HumanMessage))
    text = str(human.text).rsplit("Customer: ", 1)[-1]
    numbers = order_numbers_in(text)
    call: dict[str, Any]
    if "person" in text:
        call = {"name": "escalate_to_human", "args": {"reason": "The customer asks for a person."}}
    elif "ticket" in text:
        subject = f"Damaged parcel {numbers[0]}" if numbers else "Customer request"
        call = {"name": "open_ticket", "args": {"subject": subject, "details": text}}
    elif numbers:
        call = {"name": "lookup_order", "args": {"order_number": numbers[0]}}
    elif "my orders" in text:
        call = {"name": "list_recent_orders", "args": {}}
    else:
        return AIMessage("How can I help?")
    return AIMessage("", tool_calls=[{**call, "id": f"call-{len(messages)}"}])


class SupportChat:
    """One app-assembled agent; `say` runs a turn through ChatService like the chat page."""

    def __init__(
        self,
        engine: Engine,
        data_dir: Path,
        *,
        embedder: Embedder,
        knowledge: KnowledgeBase,
        tools: bool = True,
        **settings: Any,
    ) -> None:
        self.settings = load_settings(
            data_dir=data_dir,
            metrics_port=0,
            agent_tools="on" if tools else "off",
            **settings,
        )
        self.model = ScriptedChatModel(
            reply=support_reply if tools else lambda _: AIMessage("Let me see.")
        )
        self.parts: AgentParts = assemble(
            self.settings,
            engine=engine,
            chat_model=self.model,
            summary_model=ScriptedChatModel(responses=[AIMessage("summary")]),
            checkpointer=InMemorySaver(),
            sink=Recorder(engine),
            embedder=embedder,
            knowledge=knowledge,
        )
        self.service = ChatService(agent=self.parts.agent, engine=engine, model_label="scripted")

    def say(self, user: str, session: str, text: str) -> TurnOutcome:
        return self.service.run_turn(user_id=user, session_id=session, message=text)

    def tool_results(self) -> list[ToolMessage]:
        """Every tool result the model was shown, in order."""
        seen: dict[str, ToolMessage] = {}
        for prompt in self.model.prompts:
            for message in prompt:
                if isinstance(message, ToolMessage):
                    seen.setdefault(message.tool_call_id, message)
        return list(seen.values())

    def close(self) -> None:
        self.parts.middleware.flush()
        if self.parts.memory is not None:
            self.parts.memory.close()


def order_json(number: str, user: str, status: str = "shipped", **extra: Any) -> dict[str, Any]:
    """An order as the orders API contract (and an import file) gives it."""
    return {
        "order_number": number,
        "user_id": user,
        "status": status,
        "items": [{"name": "Trail running shoes", "qty": 1, "unit_usd": 89.0}],
        "total_usd": 89.0,
        "placed_at": "2026-11-20T10:00:00Z",
        "shipped_at": "2026-11-21T08:30:00Z" if status in ("shipped", "delivered") else None,
        "delivered_at": None,
        "carrier": "UPS" if status in ("shipped", "delivered") else None,
        "tracking_number": "1Z999AA10123456784" if status in ("shipped", "delivered") else None,
        **extra,
    }


def dumps(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)
