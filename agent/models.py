"""Model factory: OpenAI, any OpenAI-compatible server, or the embedded local model.

Every model is a real `ChatOpenAI` with `stream_usage=True` and a profile carrying its input
window (SummarizationMiddleware's fraction trigger needs it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.caches import BaseCache
from langchain_core.callbacks import BaseCallbackHandler
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from agent.local_server import base_url as local_base_url
from data.config.settings import LOCAL_MODEL_NAME, LOCAL_PROVIDER, Settings


class ModelConfigError(ValueError):
    """The configured model cannot be used as configured (one line, names the setting)."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Which model to call and what we know about it."""

    provider: str  # "openai" | "openai-compatible" | "local"
    model: str
    base_url: str | None
    context_window: int  # max input tokens
    max_tokens: int
    timeout_s: float


def _known_window(model: str) -> int | None:
    profile = ChatOpenAI(model=model, api_key=SecretStr("unused")).profile or {}
    window = profile.get("max_input_tokens")
    return window if isinstance(window, int) else None


def resolve_spec(settings: Settings, *, role: str) -> ModelSpec:
    """The spec for `role` ("chat", "summarize", "judge" or "fallback") under `settings`. The
    judge (JUDGE_MODEL) defaults to the summarizer; on the embedded defaults all are the local
    model."""
    if settings.uses_local_model:
        # The server's context holds prompt and answer, so the input window is what is left.
        window = settings.local_model_ctx - settings.local_model_max_tokens
        return ModelSpec(
            provider=LOCAL_PROVIDER,
            model=LOCAL_MODEL_NAME,
            base_url=local_base_url(settings.local_model_port),
            context_window=window,
            max_tokens=settings.local_model_max_tokens,
            timeout_s=settings.model_timeout_s,
        )
    if role == "fallback":
        if not settings.fallback_model:
            raise ModelConfigError("FALLBACK_MODEL is not set")
        name = settings.fallback_model
    elif role == "chat":
        name = settings.chat_model
    elif role == "judge":
        name = settings.judge_model or settings.summary_model or settings.chat_model
    else:
        name = settings.summary_model or settings.chat_model
    # CHAT_MODEL_CONTEXT_WINDOW overrides the chat model's profile; the summarizer uses its own
    # profile and falls back to the override only when it has none.
    override = settings.chat_model_context_window
    known = _known_window(name)
    found = (override or known) if role == "chat" else (known or override)
    if found is None:
        setting = {"chat": "CHAT_MODEL", "fallback": "FALLBACK_MODEL", "judge": "JUDGE_MODEL"}.get(
            role, "SUMMARY_MODEL"
        )
        raise ModelConfigError(
            f"{setting}={name!r} has no known input window; set CHAT_MODEL_CONTEXT_WINDOW"
        )
    base = str(settings.openai_base_url).rstrip("/") if settings.openai_base_url else None
    return ModelSpec(
        provider="openai-compatible" if base else "openai",
        model=name,
        base_url=base,
        context_window=found,
        max_tokens=settings.max_output_tokens,
        timeout_s=settings.model_timeout_s,
    )


def make_chat_model(
    spec: ModelSpec,
    *,
    settings: Settings,
    purpose: str,
    callbacks: Sequence[BaseCallbackHandler] = (),
    max_retries: int = 1,
    cache: BaseCache | None = None,
) -> ChatOpenAI:
    """A real ChatOpenAI for `spec`, tagged with its purpose for telemetry.

    `max_retries` is the OpenAI client's own retry (backoff, honours Retry-After); the agent's
    chat model gets 0 here because ModelRetryMiddleware retries it, so that every failed attempt
    is seen and recorded. `cache` is the optional response cache (False disables the global one).
    """
    # OpenAI-compatible servers need some key; the local one ignores it.
    key = settings.openai_api_key or SecretStr("unused")
    return ChatOpenAI(  # type: ignore[call-arg]  # max_tokens is a pydantic field, not in __init__
        model=spec.model,
        base_url=spec.base_url,
        api_key=key,
        stream_usage=True,
        max_tokens=spec.max_tokens,
        timeout=spec.timeout_s,
        max_retries=max_retries,
        cache=cache if cache is not None else False,
        # ChatOpenAI sends the cap as `max_completion_tokens`, which llama.cpp's server (and
        # other OpenAI-compatible servers) ignore: without `max_tokens` the embedded model
        # generated until its context was full, sometimes for minutes.
        extra_body=None if spec.provider == "openai" else {"max_tokens": spec.max_tokens},
        temperature=0.3,
        profile={"max_input_tokens": spec.context_window},
        callbacks=list(callbacks),
        metadata={"purpose": purpose, "provider": spec.provider},
    )
