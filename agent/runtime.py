"""Assembles the running agent from Settings: models, telemetry, checkpointer, service."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine

from agent import local_server
from agent.checkpoint import make_checkpointer
from agent.graph import build_agent
from agent.models import ModelSpec, make_chat_model, resolve_spec
from agent.service import ChatService
from agent.telemetry import CallTelemetry, UsageCounter
from data.prices import load_overrides
from data.recorder import Recorder
from data.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    service: ChatService
    chat_spec: ModelSpec
    server: local_server.LocalServer | None


def local_usage_counter(port: int) -> UsageCounter:
    def count(messages: list[tuple[str, str]], completion: str) -> tuple[int, int]:
        prompt = local_server.count_tokens(port, local_server.chatml(messages))
        return prompt, local_server.count_tokens(port, completion) if completion else 0

    return count


def build_runtime(settings: Settings, *, engine: Engine) -> Runtime:
    """Start the embedded model server if needed and build the chat service."""
    server = local_server.start_for(settings) if settings.uses_local_model else None
    chat_spec = resolve_spec(settings, role="chat")
    summary_spec = resolve_spec(settings, role="summarize")
    recorder = Recorder(engine)
    overrides = load_overrides(settings.price_overrides_file)
    counter = local_usage_counter(settings.local_model_port) if settings.uses_local_model else None

    def model_for(spec: ModelSpec, purpose: str):  # type: ignore[no-untyped-def]
        telemetry = CallTelemetry(
            spec=spec,
            purpose=purpose,
            sink=recorder,
            price_overrides=overrides,
            usage_counter=counter,
        )
        return make_chat_model(spec, settings=settings, purpose=purpose, callbacks=[telemetry])

    agent = build_agent(
        chat_model=model_for(chat_spec, "chat"),
        summary_model=model_for(summary_spec, "summarize"),
        checkpointer=make_checkpointer(settings),
        trigger_fraction=settings.summary_trigger_fraction,
        keep_messages=settings.summary_keep_messages,
    )
    label = f"{chat_spec.model} at {chat_spec.base_url or 'api.openai.com'}"
    service = ChatService(agent=agent, engine=engine, model_label=label)
    return Runtime(service=service, chat_spec=chat_spec, server=server)
