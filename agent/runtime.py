"""Assembles the running agent from Settings: models, telemetry, checkpointer, service."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from langchain_core.caches import BaseCache
from langsmith import Client as LangSmithClient
from sqlalchemy import Engine

from agent import local_server
from agent.cache import make_response_cache
from agent.checkpoint import make_checkpointer
from agent.graph import build_agent
from agent.models import ModelSpec, make_chat_model, resolve_spec
from agent.service import ChatService, Tracing
from agent.telemetry import CallTelemetry, UsageCounter
from data.prices import load_overrides
from data.recorder import Recorder, record_event
from data.records import EventRecord
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

    def model_for(  # type: ignore[no-untyped-def]
        spec: ModelSpec, purpose: str, *, max_retries: int = 0, cache: BaseCache | None = None
    ):
        telemetry = CallTelemetry(
            spec=spec,
            purpose=purpose,
            sink=recorder,
            price_overrides=overrides,
            usage_counter=counter,
        )
        return make_chat_model(
            spec,
            settings=settings,
            purpose=purpose,
            callbacks=[telemetry],
            max_retries=max_retries,
            cache=cache,
        )

    def events(event: EventRecord) -> None:
        record_event(engine=engine, event=event)

    cache = (
        make_response_cache(ttl_s=settings.response_cache_ttl_s, redis_url=settings.redis_url)
        if settings.response_cache
        else None
    )
    fallback = None
    if settings.fallback_model and not settings.uses_local_model:
        fallback = model_for(resolve_spec(settings, role="fallback"), "chat", cache=cache)
    agent = build_agent(
        # The chat model is retried by ModelRetryMiddleware (every attempt recorded); the
        # summarizer runs inside before_model, so the OpenAI client retries it itself.
        chat_model=model_for(chat_spec, "chat", cache=cache),
        summary_model=model_for(summary_spec, "summarize", max_retries=settings.model_max_retries),
        checkpointer=make_checkpointer(settings),
        trigger_fraction=settings.summary_trigger_fraction,
        keep_messages=settings.summary_keep_messages,
        fallback_model=fallback,
        max_retries=settings.model_max_retries,
        events=events,
    )
    label = f"{chat_spec.model} at {chat_spec.base_url or 'api.openai.com'}"
    service = ChatService(
        agent=agent, engine=engine, model_label=label, tracing=make_tracing(settings)
    )
    return Runtime(service=service, chat_spec=chat_spec, server=server)


def make_tracing(settings: Settings) -> Tracing:
    """LangSmith tracing when LANGSMITH_TRACING=true and a key is set; otherwise tracing is
    switched off explicitly, so a stray LANGSMITH_TRACING in the environment sends nothing."""
    if not settings.langsmith_enabled or settings.langsmith_api_key is None:
        return Tracing(client=None, project=settings.langsmith_project)
    client = LangSmithClient(
        api_url=str(settings.langsmith_endpoint).rstrip("/"),
        api_key=settings.langsmith_api_key.get_secret_value(),
    )
    return Tracing(client=client, project=settings.langsmith_project)
