"""Assembles the running agent from Settings: models, telemetry, memory, tools, checkpointer,
service."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langsmith import Client as LangSmithClient
from sqlalchemy import Engine

from agent import local_server
from agent.budget import Estimator, make_budget_middleware, price_estimator
from agent.cache import make_response_cache
from agent.checkpoint import make_checkpointer
from agent.context import current_turn
from agent.embedding_base import Embedder, EmbeddingError
from agent.embeddings import CachedEmbedder, make_embedder
from agent.graph import build_agent
from agent.judge import ModelJudge
from agent.knowledge import KnowledgeBase, from_settings
from agent.ledger import TurnLedger
from agent.memory import MemoryStore, make_memory_store
from agent.memory_pgvector import PgVectorStore
from agent.memory_records import MemoryUnavailable
from agent.models import ModelConfigError, ModelSpec, make_chat_model, resolve_spec
from agent.ratelimit import RateLimiter
from agent.recall import ContextProvider, MemoryMiddleware
from agent.service import ChatService, Tracing
from agent.telemetry import CallTelemetry, UsageCounter
from agent.tools import ToolTelemetryMiddleware, help_context, make_tools, order_context
from agent.window import WindowCounter
from data.config.settings import LOCAL_PROVIDER, Settings
from data.config.topics import TopicsError, load_topics
from data.config.urls import redact_url
from data.integrations.orders import OrderSource, order_source
from data.integrations.prices import load_overrides
from data.store.recorder import EventRecorder, Recorder, TurnRecorder
from data.store.records import CallRecord, EventRecord

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    service: ChatService
    chat_spec: ModelSpec
    server: local_server.LocalServer | None
    parts: AgentParts
    judge: ModelJudge | None = None
    judge_error: str | None = None  # why there is no judge (a bad TOPICS_FILE or JUDGE_MODEL)


def local_usage_counter(port: int) -> UsageCounter:
    def count(messages: list[tuple[str, str]], completion: str) -> tuple[int, int]:
        prompt = local_server.count_tokens(port, local_server.chatml(messages))
        return prompt, local_server.count_tokens(port, completion) if completion else 0

    return count


_shared: dict[str, Runtime] = {}
_shared_lock = threading.Lock()


def shared_runtime(settings: Settings, *, engine: Engine) -> Runtime:
    """The process's one runtime for these settings, built on first use. The chat page and the
    API in the same process share it: the embedded Qdrant store and the local model server are
    single-process resources, and one runtime means one rate limiter and one set of locks."""
    key = settings.model_dump_json()
    with _shared_lock:
        found = _shared.get(key)
        if found is None:
            found = _shared[key] = build_runtime(settings, engine=engine)
        return found


def release_shared() -> None:
    """Forget the shared runtimes and close their memory stores (the embedded store's folder
    lock). For a process that changes its settings, such as the test suite: otherwise each
    runtime stays for the process's life. The embedded model server is left running."""
    with _shared_lock:
        found = list(_shared.values())
        _shared.clear()
    for runtime in found:
        if runtime.parts.memory is not None:
            # A turn's memory write runs on the writer's thread after the turn: closing the
            # embedded store under it crashed the process (SQLite used after close).
            runtime.parts.middleware.flush()
            try:
                runtime.parts.memory.close()
            except Exception as error:  # closing is best effort; the store may be gone
                log.warning("closing a memory store failed: %s", error)


def make_ledger(engine: Engine) -> TurnLedger:
    """Where the agent's calls and events go: the database, a chat turn's in one transaction
    at its end (agent/ledger.py), and the Prometheus metrics."""
    return TurnLedger(
        calls=Recorder(engine), events=EventRecorder(engine), write_turn=TurnRecorder(engine)
    )


def build_runtime(settings: Settings, *, engine: Engine) -> Runtime:
    """Start the embedded model server if needed and build the chat service."""
    server = local_server.start_for(settings) if settings.uses_local_model else None
    chat_spec = resolve_spec(settings, role="chat")
    summary_spec = resolve_spec(settings, role="summarize")
    ledger = make_ledger(engine)
    overrides = load_overrides(settings.price_overrides_file)
    counter = local_usage_counter(settings.local_model_port) if settings.uses_local_model else None

    def model_for(  # type: ignore[no-untyped-def]
        spec: ModelSpec, purpose: str, *, max_retries: int = 0, cache: BaseCache | None = None
    ):
        telemetry = CallTelemetry(
            spec=spec,
            purpose=purpose,
            sink=ledger.call,
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

    cache = (
        make_response_cache(ttl_s=settings.response_cache_ttl_s, redis_url=settings.redis_url)
        if settings.response_cache
        else None
    )
    fallback = None
    if settings.fallback_model and not settings.uses_local_model:
        fallback = model_for(resolve_spec(settings, role="fallback"), "chat", cache=cache)
    parts = assemble(
        settings,
        engine=engine,
        # The chat model is retried by ModelRetryMiddleware (every attempt recorded); the
        # summarizer runs outside that middleware (in the fold), so the OpenAI client retries
        # it itself.
        chat_model=model_for(chat_spec, "chat", cache=cache),
        summary_model=model_for(summary_spec, "summarize", max_retries=settings.model_max_retries),
        fallback_model=fallback,
        ledger=ledger,
        budget_estimate=price_estimator(
            provider=chat_spec.provider,
            model=chat_spec.model,
            max_tokens=chat_spec.max_tokens,
            overrides=overrides,
        ),
    )
    try:
        # Embed the help center now, while the page shows its start-up spinner, rather than
        # in the first customer's turn. If embeddings are down, searches report it later.
        parts.knowledge.matrix()
    except EmbeddingError as error:
        log.warning("the help center is not searchable yet: %s", error)
    # Shown in the chat page's errors: a password in OPENAI_BASE_URL must not be.
    label = f"{chat_spec.model} at {redact_url(chat_spec.base_url) or 'api.openai.com'}"
    service = ChatService(
        agent=parts.agent,
        engine=engine,
        model_label=label,
        tracing=make_tracing(settings),
        counter=parts.counter,
        ledger=ledger,
        limiter=RateLimiter(
            per_minute=settings.rate_limit_per_minute,
            burst=settings.rate_limit_burst,
            redis_url=settings.redis_url,
        ),
        session_wait_s=settings.session_wait_s,
        model_timeout_s=settings.model_timeout_s,
        warm=parts.middleware.warm,
    )
    judge, judge_error = None, None
    try:
        judge_spec = resolve_spec(settings, role="judge")
        judge = ModelJudge(
            model_for(judge_spec, "judge", max_retries=settings.model_max_retries),
            judge_spec,
            load_topics(settings.topics_file),
            mask=settings.pii_masking,
        )
    except (ModelConfigError, TopicsError) as error:
        judge_error = str(error)
        log.error("conversations will not be judged: %s", error)
    return Runtime(
        service=service,
        chat_spec=chat_spec,
        server=server,
        parts=parts,
        judge=judge,
        judge_error=judge_error,
    )


@dataclass
class AgentParts:
    """The agent and what it was built from, for the pages (memory status) and the tests."""

    agent: Any
    embedder: Embedder
    knowledge: KnowledgeBase
    memory: MemoryStore | PgVectorStore | None
    memory_error: str | None
    middleware: MemoryMiddleware
    tools: list[BaseTool]
    orders: OrderSource
    counter: WindowCounter


def assemble(
    settings: Settings,
    *,
    engine: Engine,
    chat_model: BaseChatModel,
    summary_model: BaseChatModel,
    fallback_model: BaseChatModel | None = None,
    sink: Callable[[CallRecord], None] | None = None,
    events: Callable[[EventRecord], None] | None = None,
    retry_initial_delay_s: float = 1.0,
    checkpointer: BaseCheckpointSaver[str] | None = None,
    embedder: Embedder | None = None,
    knowledge: KnowledgeBase | None = None,
    orders_source: OrderSource | None = None,
    budget_estimate: Estimator | None = None,
    ledger: TurnLedger | None = None,
) -> AgentParts:
    """The agent around given models: memory, context injection or tools, summarization,
    retries, fallback and recording. The app passes real models; tests and the turn-overhead
    bench pass a scripted one and get every other part exactly as the app has it (they may
    also pass an embedder and knowledge base built once, which take about a second to build).
    With a `ledger` (make_ledger), calls and events go to it unless `sink` and `events` say
    otherwise, and budget reservations are released once a turn's records are written."""

    if ledger is not None:
        sink = sink or ledger.call
        events = events or ledger.event
    events = events or EventRecorder(engine)

    embedder = embedder or make_embedder(settings, sink=sink)
    knowledge = knowledge or from_settings(settings, embedder)
    # One order source for the tools and for the prompt context of a model without tools.
    source = orders_source or order_source(settings, engine=engine)
    memory: MemoryStore | PgVectorStore | None = None
    memory_error = None
    try:
        memory = make_memory_store(settings, embedder, engine=engine)
    except MemoryUnavailable as error:
        # The agent still answers; the chat page says memory is off and why.
        memory_error = str(error)
        log.warning("long-term memory is off: %s", error)
    tools = (
        make_tools(
            engine=engine,
            knowledge=knowledge,
            orders_source=source,
            levels=settings.service_levels(),
            notify=settings.ticket_webhook_url is not None,
        )
        if settings.uses_tools
        else []
    )
    providers: dict[str, ContextProvider] = {}
    if not tools:
        # A model without tools gets what the tools would have found, in its prompt: the
        # orders named in the message and the best help-center entry (recorded under the
        # tools' names).
        providers = {
            "lookup_order": lambda user_id, text: order_context(source, user_id, text),
            "search_help_center": lambda user_id, text: help_context(
                knowledge, text, ref=current_turn()
            ),
        }
    counter = window_counter(settings, chat_model)
    middleware = MemoryMiddleware(
        memory,
        inject_tokens=counter.inject_tokens,
        k=settings.memory_top_k,
        threshold=settings.memory_threshold,
        events=events,
        providers=providers,
        placement="user" if settings.uses_local_model else "system",
        prefetch=embedder.prefetch if isinstance(embedder, CachedEmbedder) else None,
        # Without tools the help-center provider searches with every message.
        embeds_every_message=not tools,
        # The local model costs nothing: start it before the budget check (see warm_early).
        warm_early=embedder.provider == LOCAL_PROVIDER,
    )
    # Budgets go first: a refused turn makes no model call (no recall embedding, no summary).
    budget = make_budget_middleware(
        engine=engine,
        estimate=budget_estimate
        or price_estimator(
            provider="openai-compatible",
            model=str(getattr(chat_model, "model_name", "") or ""),
            max_tokens=int(getattr(chat_model, "max_tokens", None) or settings.max_output_tokens),
            overrides=load_overrides(settings.price_overrides_file),
        ),
        events=events,
        reservation_ttl_s=settings.budget_reservation_ttl_s,
        webhook_url=str(settings.budget_webhook_url) if settings.budget_webhook_url else None,
        after_write=ledger.after_write if ledger is not None else None,
    )
    agent = build_agent(
        chat_model=chat_model,
        summary_model=summary_model,
        checkpointer=checkpointer or make_checkpointer(settings),
        trigger=settings.summary_trigger,
        keep=settings.summary_keep,
        counter=counter,
        keep_budget_fraction=settings.summary_keep_budget_fraction,
        summary_max_tokens=_max_tokens(summary_model, settings),
        tools=tools,
        fallback_model=fallback_model,
        max_retries=settings.model_max_retries,
        retry_initial_delay_s=retry_initial_delay_s,
        outer=[budget],
        before=[middleware],
        after=[ToolTelemetryMiddleware(events=events)] if tools else [],
        events=events,
    )
    return AgentParts(
        agent=agent,
        embedder=embedder,
        knowledge=knowledge,
        memory=memory,
        memory_error=memory_error,
        middleware=middleware,
        tools=tools,
        orders=source,
        counter=counter,
    )


def window_counter(settings: Settings, chat_model: BaseChatModel) -> WindowCounter:
    """The chat model's window counter: the embedded server's own tokenizer, else approximate."""
    window = (chat_model.profile or {}).get("max_input_tokens")
    if not isinstance(window, int):
        raise ValueError("the chat model needs a profile with max_input_tokens")
    port = settings.local_model_port
    served_locally = getattr(chat_model, "openai_api_base", None) == local_server.base_url(port)
    if not (settings.uses_local_model and served_locally):
        return WindowCounter(window=window)

    def count(role: str, text: str) -> int:
        # One ChatML block per message: the server's template, counted by its tokenizer.
        block = f"<|im_start|>{role}\n{text}<|im_end|>\n"
        return local_server.count_tokens(port, block)

    return WindowCounter(window=window, count_text=count)


def _max_tokens(model: BaseChatModel, settings: Settings) -> int:
    value = getattr(model, "max_tokens", None)
    return value if isinstance(value, int) else settings.max_output_tokens


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
