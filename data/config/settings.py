"""One typed Settings object, read from the environment, `.env` and Streamlit secrets."""

from __future__ import annotations

import functools
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from data.config.service_times import (
    BusinessHours,
    ServiceLevels,
    parse_business_hours,
    parse_duration,
    parse_timezone,
)
from data.config.urls import to_sqlalchemy_url

LOCAL_MODEL_NAME = "SmolLM2-135M-Instruct"
# The local embedder: all-MiniLM-L6-v2 as int8 ONNX (agent/embeddings.py).
LOCAL_EMBEDDING_MODEL = "all-MiniLM-L6-v2-onnx-int8"
LOCAL_PROVIDER = "local"

# Streamlit reads secrets from these two files; we read the same files so a value set for the
# app in secrets.toml is seen by the CLIs (migrate, demo, bench) too.
SECRETS_FILES = (Path.home() / ".streamlit" / "secrets.toml", Path(".streamlit") / "secrets.toml")


class SettingsError(Exception):
    """A setting has a bad value; the message is one line that names the variable."""


class Settings(BaseSettings):
    """Every knob of agent-chatbase. Field names are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # Models (seed 2.1)
    openai_api_key: SecretStr | None = Field(
        default=None,
        description="OpenAI key: chat, summaries and embeddings on OpenAI, not the local models.",
    )
    openai_base_url: AnyHttpUrl | None = Field(
        default=None,
        description="Any OpenAI-compatible server (vLLM, Ollama, llama.cpp) instead of OpenAI.",
    )
    chat_model: str = Field(
        default="gpt-4o-mini", description="The chat model's name at OpenAI or OPENAI_BASE_URL."
    )
    summary_model: str | None = Field(
        default=None, description="Summarizer model; defaults to CHAT_MODEL."
    )
    chat_model_context_window: int | None = Field(
        default=None,
        ge=256,
        le=10_000_000,
        description="Input window in tokens of a model with no known profile (for context %).",
    )
    max_output_tokens: int = Field(
        default=512, ge=16, le=100_000, description="Longest answer, in tokens."
    )
    model_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Seconds a model call may take before it is retried or fails.",
    )

    # Embedded local model server (used when neither OPENAI_API_KEY nor OPENAI_BASE_URL is set)
    local_model_port: int = Field(
        default=8088, ge=1, le=65535, description="Port of the embedded model server on 127.0.0.1."
    )
    local_model_ctx: int = Field(
        default=4096, ge=512, le=32768, description="The embedded model's input window, in tokens."
    )
    local_model_max_tokens: int = Field(
        default=200, ge=16, le=2048, description="Longest answer of the embedded model, in tokens."
    )

    # Summarization (seed 4.2)
    summary_trigger_fraction: float = Field(
        default=0.75,
        gt=0,
        le=1,
        description="Summarize when a request would pass this share of the input window.",
    )
    summary_trigger_tokens: int | None = Field(
        default=None, ge=64, le=10_000_000, description="Also fold at this many request tokens."
    )
    summary_trigger_messages: int | None = Field(
        default=None, ge=2, le=10_000, description="Also fold at this many messages."
    )
    summary_keep_messages: int = Field(
        default=50,
        ge=1,
        le=10_000,
        description="Recent messages kept word for word when older ones are summarized.",
    )
    summary_keep_tokens: int | None = Field(
        default=None,
        ge=64,
        le=10_000_000,
        description="Keep the most recent messages up to this many tokens (replaces the count).",
    )
    summary_keep_budget_fraction: float = Field(
        default=0.4,
        gt=0,
        lt=1,
        description="When keeping the configured messages would pass the trigger, keep what "
        "fits in this share of the input window.",
    )

    # Resilience and caching (seed 4.2)
    model_max_retries: int = Field(
        default=2, ge=0, le=10, description="Retries on 429, 5xx, timeouts, dropped connections."
    )
    fallback_model: str | None = Field(
        default=None, description="Model tried once the chat model's retries are used up."
    )
    response_cache: bool = Field(
        default=False, description="Serve the same model + messages from the response cache."
    )
    response_cache_ttl_s: int = Field(
        default=86_400, ge=1, le=30 * 86_400, description="Seconds a cached answer is served."
    )

    # Long-term memory (seed 4.2, 6.4)
    memory_top_k: int = Field(default=4, ge=3, le=5, description="Memories recalled per turn.")
    memory_threshold: float = Field(
        default=0.7,
        ge=0.6,
        le=0.8,
        description="Lowest similarity (on a 0 to 1 scale) a recalled memory may have.",
    )
    embedding_model: str = Field(
        default="text-embedding-3-small", description="OpenAI embedding model (with a key)."
    )
    memory_backend: Literal["qdrant", "pgvector"] = Field(
        default="qdrant",
        description="qdrant: embedded Qdrant, or the server at QDRANT_URL; pgvector: the app's "
        "own Postgres (DATABASE_URL) with the vector extension.",
    )

    # Tools (seed 4.2): "auto" binds them unless the chat model is the embedded local one.
    agent_tools: Literal["auto", "on", "off"] = Field(
        default="auto", description="auto: tools for models that can call them; on; off."
    )

    # Storage
    database_url: str | None = Field(
        default=None, description="postgresql://... selects Postgres; empty: SQLite under DATA_DIR."
    )
    database_read_url: str | None = Field(
        default=None,
        description="A Postgres streaming replica the analyst pages read from (writes, the "
        "rollup refresh included, go to DATABASE_URL); empty: they read DATABASE_URL.",
    )
    database_read_max_wait_ms: int = Field(
        default=500,
        ge=0,
        le=60_000,
        description="How long a view waits for the read replica to replay the primary's "
        "refresh before it reads the replica's older snapshot (or the primary).",
    )
    data_dir: Path = Field(
        default=Path(".data"),
        description="Where the embedded defaults keep their files (SQLite, Qdrant, model log).",
    )
    qdrant_url: AnyHttpUrl | None = Field(
        default=None,
        description="A Qdrant server for long-term memory; empty: embedded under DATA_DIR/qdrant.",
    )
    qdrant_api_key: SecretStr | None = Field(
        default=None, description="The Qdrant server's API key."
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for the caches and sign-in throttling; empty: kept in the process.",
    )

    # LangSmith (seed 5.2)
    langsmith_api_key: SecretStr | None = Field(
        default=None, description="LangSmith key: traces, and thumbs and scores synced there."
    )
    langsmith_project: str = Field(
        default="agent_chatbase", description="The LangSmith project for traces and feedback."
    )
    langsmith_tracing: bool = Field(
        default=False, description="Trace every agent run to LangSmith."
    )
    langsmith_endpoint: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://api.smith.langchain.com"),
        description="The LangSmith API endpoint (for a self-hosted or regional LangSmith).",
    )

    # Metrics (seed 5.1)
    prometheus_url: AnyHttpUrl | None = Field(
        default=None, description="The Prometheus the Latency page reads its percentiles from."
    )
    metrics_port: int = Field(default=9464, ge=0, le=65535, description="0 disables /metrics")
    metrics_host: str = Field(
        default="127.0.0.1", description="Address the /metrics exporter listens on."
    )

    # Prices
    price_overrides_file: Path | None = Field(
        default=None,
        description="JSON prices (USD per million tokens) for self-hosted or custom models.",
    )

    # App
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Python log level."
    )
    environment: Literal["development", "test", "staging", "production"] = Field(
        default="development",
        description="This deployment's name, shown in the sidebar and sent to Sentry.",
    )

    # HTTP API (seed 2.3, 3.2, 9): api/
    api_host: str = Field(default="127.0.0.1", description="Where the API listens.")
    api_port: int = Field(default=8000, ge=0, le=65535, description="0: no API in `make run`.")
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Bearer tokens the API accepts, comma-separated. None: 127.0.0.1 only.",
    )
    api_cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed to call the API from a browser."
    )
    rate_limit_per_minute: int = Field(
        default=30, ge=1, le=100_000, description="Chat turns per user per minute (API and page)."
    )
    rate_limit_burst: int = Field(
        default=5, ge=1, le=10_000, description="Of those, at most this many in one second."
    )
    session_wait_s: float = Field(
        default=30.0, ge=0, le=600, description="How long a turn waits for its session to be free."
    )
    shutdown_grace_s: float = Field(
        default=30.0, ge=0, le=3600, description="On SIGTERM, how long turns in flight may finish."
    )

    # Feedback and review (issue 5)
    reviews_required: int = Field(
        default=2, ge=1, le=5, description="Independent reviewer scores wanted per conversation."
    )
    review_claim_ttl_s: int = Field(
        default=900, ge=60, le=86_400, description="How long a reviewer's claim on an item lasts."
    )
    feedback_sync_interval_s: int = Field(
        default=5, ge=1, le=3600, description="How often the outbox pushes feedback to LangSmith."
    )

    # Conversation outcomes (issue 29): when a conversation ends and who judges it
    conversation_idle_minutes: int = Field(
        default=30, ge=1, le=10_080, description="A conversation this long silent has ended."
    )
    reopen_window_hours: int = Field(
        default=72, ge=1, le=8_760, description="A return this soon marks `resolved` reopened."
    )
    topics_file: Path | None = Field(
        default=None, description="The team's topic taxonomy; unset: data/config/topics.txt."
    )
    judge_model: str | None = Field(
        default=None, description="The outcome judge; defaults to the summarization model."
    )
    judge_sample_rate: float = Field(
        default=1.0, ge=0, le=1, description="Share of ended conversations judged (by id)."
    )
    judge_min_agreement: float = Field(
        default=0.6, ge=-1, le=1, description="Below this κ (30+ labels) the judge is untrusted."
    )
    judge_interval_s: int = Field(
        default=30, ge=1, le=3600, description="How often the judge worker looks for ends."
    )
    outcome_worker: bool = Field(
        default=True, description="Judge ended conversations in this process (app and API)."
    )
    judge_backfill_days: int = Field(
        default=7, ge=0, le=3650, description="Ends older than this when first seen are skipped."
    )

    # Budgets (issue 13): per-user, per-prefix and global spending limits
    # (data/workflows/budgets.py).
    budget_webhook_url: AnyHttpUrl | None = Field(
        default=None, description="Receives each budget threshold crossing once (JSON POST)."
    )
    budget_reservation_ttl_s: int = Field(
        default=300,
        ge=10,
        le=86_400,
        description="How long an in-flight call's estimated cost counts if its call never ends.",
    )

    # Support systems (issue 14): where orders come from, where tickets go, what is promised,
    # and the team's own help center.
    orders_api_url: AnyHttpUrl | None = Field(
        default=None,
        description="The team's orders API (contract: docs/agent.md); unset: the orders table.",
    )
    orders_api_token: SecretStr | None = Field(
        default=None, description="Bearer token sent to ORDERS_API_URL."
    )
    orders_api_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="Seconds a request to the orders API may take."
    )
    ticket_webhook_url: AnyHttpUrl | None = Field(
        default=None, description="Each new ticket and escalation is POSTed here, signed."
    )
    ticket_webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key of the X-Webhook-Signature header."
    )
    ticket_webhook_interval_s: int = Field(
        default=5, ge=1, le=3600, description="Seconds between the ticket webhook worker's passes."
    )
    ticket_response_time: timedelta = Field(
        default=timedelta(hours=12), description="Working time until a ticket is answered."
    )
    escalation_response_time: timedelta = Field(
        default=timedelta(hours=4), description="Working time until a human takes over."
    )
    business_hours: str = Field(
        default="Mon-Fri 08:00-20:00, Sat 09:00-17:00",
        description="When the team works, e.g. Mon-Fri 09:00-17:00 (ticket promises count these).",
    )
    business_timezone: str = Field(
        default="America/New_York", description="The time zone of BUSINESS_HOURS."
    )
    kb_dir: Path | None = Field(
        default=None, description="The team's help-center articles (.md, .txt); unset: agent/kb."
    )
    # Operations (issue 11): error reporting, status checks, retention, links
    sentry_dsn: SecretStr | None = Field(
        default=None, description="Sentry DSN; errors of the UI and API processes go there."
    )
    sentry_traces_sample_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of requests Sentry traces."
    )
    status_check_interval_s: int = Field(
        default=30, ge=5, le=3600, description="How often the dependency checks feed /metrics."
    )
    status_check_timeout_s: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="Seconds each dependency check (Status page, /ready) may take.",
    )
    retention_days: int | None = Field(
        default=None, ge=1, le=36_500, description="Raw rows older than this are deleted."
    )
    retention_batch: int = Field(
        default=5_000,
        ge=100,
        le=1_000_000,
        description="Rows deleted per transaction by retention.",
    )
    grafana_url: AnyHttpUrl | None = Field(
        default=None, description="Grafana, linked from the Status page."
    )
    # Sign-in, roles and hardening (issue 12)
    session_ttl: int = Field(
        default=28_800, ge=60, le=30 * 86_400, description="Seconds a sign-in lasts."
    )
    auth_max_failures_per_user: int = Field(
        default=5, ge=1, le=1000, description="Failed sign-ins per user name per window."
    )
    auth_max_failures_per_address: int = Field(
        default=20, ge=1, le=10_000, description="Failed sign-ins per client address per window."
    )
    auth_failure_window_s: int = Field(
        default=900, ge=10, le=86_400, description="The throttle's sliding window."
    )
    auth_trust_forwarded_for: bool = Field(
        default=False,
        description="Take the client address from X-Forwarded-For (only behind a proxy).",
    )
    oidc_role_claim: str | None = Field(
        default=None, description="OIDC claim holding the role; unset: the users table."
    )
    pii_masking: bool = Field(
        default=False, description="Mask e-mails, phones and card numbers on review pages."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        secrets = [TomlConfigSettingsSource(settings_cls, toml_file=p) for p in SECRETS_FILES]
        return (init_settings, env_settings, dotenv_settings, *reversed(secrets))

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("memory_backend", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(
        "openai_api_key",
        "openai_base_url",
        "database_url",
        "database_read_url",
        "qdrant_url",
        "qdrant_api_key",
        "redis_url",
        "langsmith_api_key",
        "prometheus_url",
        "summary_model",
        "fallback_model",
        "chat_model_context_window",
        "summary_trigger_tokens",
        "summary_trigger_messages",
        "summary_keep_tokens",
        "price_overrides_file",
        "topics_file",
        "judge_model",
        "budget_webhook_url",
        "orders_api_url",
        "orders_api_token",
        "ticket_webhook_url",
        "ticket_webhook_secret",
        "kb_dir",
        "sentry_dsn",
        "retention_days",
        "grafana_url",
        "oidc_role_claim",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `FOO=` in a .env file means "not set", not "set to the empty string".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_keys", "api_cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        # API_KEYS=key1,key2 in the environment; a list in secrets.toml.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _long_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(len(key.get_secret_value()) < 16 for key in value):
            raise ValueError("every API key must be at least 16 characters")
        return value

    @field_validator("database_url", "database_read_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(
                "not a database URL (expected sqlite:///... or postgresql://...)"
            ) from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {url.get_backend_name()!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("not a Redis URL (expected redis://host:port/db)")
        return value

    @field_validator("ticket_response_time", "escalation_response_time", mode="before")
    @classmethod
    def _working_time(cls, value: Any) -> Any:
        return parse_duration(str(value)) if isinstance(value, str | int | float) else value

    @field_validator("business_hours")
    @classmethod
    def _check_business_hours(cls, value: str) -> str:
        parse_business_hours(value)
        return value

    @field_validator("business_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        parse_timezone(value)
        return value.strip()

    @field_validator("kb_dir")
    @classmethod
    def _check_kb_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError("not a folder (the team's help-center articles go there)")
        return value

    @model_validator(mode="after")
    def _webhook_signed(self) -> Settings:
        if self.ticket_webhook_url is not None and self.ticket_webhook_secret is None:
            raise ValueError(
                "TICKET_WEBHOOK_URL needs TICKET_WEBHOOK_SECRET (deliveries are signed)"
            )
        return self

    @model_validator(mode="after")
    def _pgvector_on_postgres(self) -> Settings:
        if self.memory_backend == "pgvector" and not self.is_postgres:
            raise ValueError(
                "MEMORY_BACKEND=pgvector needs DATABASE_URL to be a Postgres with the vector "
                "extension (the embedded SQLite has none)"
            )
        return self

    @model_validator(mode="after")
    def _replica_of_postgres(self) -> Settings:
        if self.database_read_url is None:
            return self
        if make_url(self.database_read_url).get_backend_name() != "postgresql":
            raise ValueError("DATABASE_READ_URL must be a Postgres replica (postgresql://...)")
        if self.database_url is None or not self.is_postgres:
            raise ValueError(
                "DATABASE_READ_URL needs DATABASE_URL to be its Postgres primary (a replica of "
                "the embedded SQLite cannot exist)"
            )
        return self

    @model_validator(mode="after")
    def _chat_model_named(self) -> Settings:
        if not self.chat_model.strip():
            raise ValueError("CHAT_MODEL must not be empty")
        if self.summary_keep_budget_fraction >= self.summary_trigger_fraction:
            raise ValueError(
                "SUMMARY_KEEP_BUDGET_FRACTION must be below SUMMARY_TRIGGER_FRACTION, or every "
                "fold would trigger the next one"
            )
        return self

    @property
    def summary_trigger(self) -> list[tuple[str, float | int]]:
        """The summarization triggers (any one folds): the fraction, plus tokens and messages
        when set."""
        triggers: list[tuple[str, float | int]] = [("fraction", self.summary_trigger_fraction)]
        if self.summary_trigger_tokens:
            triggers.append(("tokens", self.summary_trigger_tokens))
        if self.summary_trigger_messages:
            triggers.append(("messages", self.summary_trigger_messages))
        return triggers

    @property
    def summary_keep(self) -> tuple[str, int]:
        if self.summary_keep_tokens:
            return ("tokens", self.summary_keep_tokens)
        return ("messages", self.summary_keep_messages)

    # Derived values -------------------------------------------------------------------------

    def service_levels(self) -> ServiceLevels:
        """What the agent promises for a ticket and an escalation, in business hours."""
        return ServiceLevels(
            ticket=self.ticket_response_time,
            escalation=self.escalation_response_time,
            hours=BusinessHours(self.business_hours, self.business_timezone),
        )

    @property
    def uses_local_model(self) -> bool:
        return self.openai_api_key is None and self.openai_base_url is None

    @property
    def uses_tools(self) -> bool:
        """Bind the support tools? Never to the embedded model: it cannot call them."""
        if self.agent_tools == "auto":
            return not self.uses_local_model
        return self.agent_tools == "on"

    @property
    def langsmith_enabled(self) -> bool:
        """Trace runs to LangSmith only when tracing is on and a key is set."""
        return self.langsmith_tracing and self.langsmith_api_key is not None

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL in the form SQLAlchemy wants (psycopg 3 driver for Postgres)."""
        if self.database_url is None:
            return f"sqlite:///{(self.data_dir / 'agent_chatbase.sqlite3').resolve()}"
        return to_sqlalchemy_url(self.database_url)

    @property
    def sqlalchemy_read_url(self) -> str | None:
        """The read replica's URL in SQLAlchemy's form, or None when the pages read the
        primary."""
        return None if self.database_read_url is None else to_sqlalchemy_url(self.database_read_url)

    @property
    def is_postgres(self) -> bool:
        return self.sqlalchemy_url.startswith("postgresql")

    @property
    def api_is_loopback(self) -> bool:
        return self.api_host in ("127.0.0.1", "localhost", "::1")

    @property
    def langsmith_feedback_enabled(self) -> bool:
        """Sync feedback to LangSmith whenever a key is set: feedback attaches to runs traced
        earlier, so it does not depend on tracing being on right now."""
        return self.langsmith_api_key is not None


_SECRET_FIELDS = {
    "api_keys",
    "sentry_dsn",
    "openai_api_key",
    "qdrant_api_key",
    "langsmith_api_key",
    "database_url",
    "database_read_url",
    "redis_url",
    "orders_api_token",
    "ticket_webhook_secret",
}


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "settings"
    message = str(first["msg"]).removeprefix("Value error, ")
    if not first["loc"]:  # a rule across settings: the message names them
        return f"Invalid settings: {message}"
    shown = "" if field in _SECRET_FIELDS else f"={first.get('input')!r}"
    more = len(error.errors()) - 1
    tail = f" (and {more} more invalid setting{'s' if more > 1 else ''})" if more else ""
    return f"Invalid setting {field.upper()}{shown}: {message}{tail}"


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, turning a validation failure into a one-line SettingsError."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own with `load_settings`)."""
    return load_settings()
