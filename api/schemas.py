"""The API's request and response bodies (what /docs shows, with an example for each)."""

from __future__ import annotations

import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from data.access.sanitize import is_blank
from data.store.conversations import MAX_MESSAGE_CHARS

ANONYMOUS = "anonymous"
# Ids callers choose: letters, digits and . _ : @ - (no spaces, no control characters).
USER_ID = r"^[A-Za-z0-9._:@-]{1,128}$"
SESSION_ID = r"^[A-Za-z0-9._:-]{1,64}$"


class ChatRequest(BaseModel):
    """One customer message. `user_id` defaults to the anonymous user; without `session_id` a
    new conversation is started and its id returned."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"user_id": "user_123", "session_id": "test_session", "message": "Hello"},
                {"message": "Hello"},
            ]
        },
    )

    user_id: str = Field(default=ANONYMOUS, pattern=USER_ID)
    session_id: str | None = Field(default=None, pattern=SESSION_ID)
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)

    @field_validator("message")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\r\t" for c in value):
            raise ValueError("must not contain control characters")
        if is_blank(value):  # also zero-width spaces and other characters that show nothing
            raise ValueError("must not be blank")
        return value


class Usage(BaseModel):
    input_tokens: int = Field(description="Input tokens of the turn's chat calls (cached included)")
    cached_input_tokens: int
    output_tokens: int


class Memory(BaseModel):
    text: str
    kind: str
    score: float


class ToolUse(BaseModel):
    name: str
    status: str
    latency_ms: float


class ChatResponse(BaseModel):
    """The answer and what the turn used. `cost_usd` includes the summarizer's and embedder's
    calls of the turn; it is null with `cost_status` "unknown" when a call is unpriced."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "reply": "Hello! How can I help you with your order today?",
                    "session_id": "test_session",
                    "user_id": "user_123",
                    "turn": 1,
                    "usage": {"input_tokens": 182, "cached_input_tokens": 0, "output_tokens": 14},
                    "cost_usd": 0.0000357,
                    "cost_status": "computed",
                    "latency_ms": 812.4,
                    "ttft_ms": 121.0,
                    "context_percent": 0.14,
                    "run_id": None,
                    "memories": [],
                    "tools": [],
                    "warnings": [],
                }
            ]
        }
    )

    reply: str
    session_id: str
    user_id: str
    turn: int
    usage: Usage
    cost_usd: float | None
    cost_status: Literal["computed", "provided", "unknown"]
    latency_ms: float
    ttft_ms: float | None
    context_percent: float | None
    run_id: str | None = Field(description="The LangSmith run, when tracing is on")
    memories: list[Memory]
    tools: list[ToolUse]
    warnings: list[str]


class ErrorBody(BaseModel):
    """Every error: a stable `error` code and one readable line. 422s name each bad field."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "invalid_request",
                    "message": "message: must not be blank",
                    "fields": [{"field": "message", "reason": "must not be blank"}],
                }
            ]
        }
    )

    error: str
    message: str
    fields: list[dict[str, str]] | None = None
    retry_after_s: float | None = None


class TranscriptEntry(BaseModel):
    turn: int
    role: str
    content: str
    created_at: str
    run_id: str | None


class OutcomeEntry(BaseModel):
    """One verdict on how the conversation ended (the newest counts)."""

    outcome: str = Field(description="resolved, escalated, abandoned, unresolved or unjudged")
    topic: str | None
    confidence: float | None
    reason: str
    quote: str | None
    decided_by: str = Field(description="rules, judge, or none (unjudged)")
    judge_model: str | None
    rubric_version: str
    ended_at: str
    end_reason: str = Field(description="idle or closed")
    judged_at: str
    reopened: bool
    error: str | None


class Transcript(BaseModel):
    session_id: str
    user_id: str
    messages: list[TranscriptEntry]
    closed_at: str | None = None
    outcome: OutcomeEntry | None = Field(
        default=None, description="The newest verdict, once the conversation has ended"
    )
    outcome_history: list[OutcomeEntry] = Field(
        default_factory=list, description="Every verdict, newest first"
    )


class Closed(BaseModel):
    session_id: str
    closed_at: str


class Check(BaseModel):
    ok: bool
    latency_ms: float
    error: str | None = None
    configured: bool = True


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "checks": {
                        "database": {"ok": True, "latency_ms": 1.3, "error": None},
                        "memory": {"ok": True, "latency_ms": 0.4, "error": None},
                        "model": {"ok": True, "latency_ms": 5.2, "error": None},
                        "redis": {"ok": True, "latency_ms": 0.3, "error": None},
                    },
                }
            ]
        }
    )

    status: Literal["ready", "not_ready"]
    checks: dict[str, Check]


def error_body(error: str, message: str, **extra: Any) -> dict[str, Any]:
    return ErrorBody(error=error, message=message, **extra).model_dump(exclude_none=True)
