"""The agent as an HTTP service (seed 2.3, 3.2, 9): POST /chat, POST /chat/stream,
GET /sessions/{id}, GET /health, GET /ready and GET /metrics.

The second caller of the same chat service as the chat page: a conversation started here shows
on every analyst page and can be resumed in the chat page, and the other way round.
`uvicorn api.main:app` serves it alone; `python app.py` (make run) serves it beside the UI in
one process."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.budget import BudgetExceeded
from agent.runtime import Runtime, shared_runtime
from agent.service import (
    ChatInputError,
    DependencyError,
    RateLimited,
    SessionBusy,
    SessionNotFound,
    TurnFailed,
    TurnOutcome,
)
from api.ready import readiness
from api.schemas import (
    SESSION_ID,
    USER_ID,
    ChatRequest,
    ChatResponse,
    Closed,
    ErrorBody,
    OutcomeEntry,
    Readiness,
    Transcript,
    TranscriptEntry,
    error_body,
)
from data.config.settings import Settings, get_settings
from data.store import conversations
from data.store.db import shared_engine
from data.store.migrate import upgrade
from data.workers.outcome_judge import shared_worker
from data.workflows import outcomes

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        401: "No or wrong `Authorization: Bearer` key (when API_KEYS is set)",
        402: "A spending budget would be exceeded (body: scope, period, spent_usd, limit_usd)",
        404: "The session does not exist for this user",
        409: "Another turn of this session is still running",
        413: "The body is larger than 64 KiB",
        422: "A field is missing, of the wrong type, or not allowed (each is named)",
        429: "The user's rate limit; see Retry-After",
        502: "The model gave no usable answer (empty, or the request no longer fits its window)",
        503: "The model or the database is unavailable (the message says which)",
        504: "The model did not answer within MODEL_TIMEOUT_S",
    }.items()
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.headers = status, error, message, headers
        self.body = body


@dataclass
class State:
    settings: Settings
    engine: Engine
    runtime: Runtime | None = None
    runtime_error: str | None = None
    keys: list[bytes] = field(default_factory=list)


class BodyLimit:
    """Refuses bodies over MAX_BODY_BYTES with 413, by Content-Length or while reading."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            await _send_json(send, 413, error_body("too_large", "The body is over 64 KiB."))
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise ApiError(413, "too_large", "The body is over 64 KiB.")
            return message

        await self.app(scope, limited, send)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(data)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """The API for `settings` (default: the process's). `runtime` is built on start-up unless
    given (the combined process passes the one the chat page uses)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        chosen = settings or get_settings()
        upgrade(chosen.sqlalchemy_url)
        state = State(
            settings=chosen,
            engine=shared_engine(chosen.sqlalchemy_url),
            keys=[k.get_secret_value().encode() for k in chosen.api_keys],
        )
        try:
            state.runtime = runtime or shared_runtime(chosen, engine=state.engine)
        except Exception as error:  # the API still answers /health and /ready, and says why
            log.error("the agent could not be started: %s", error)
            state.runtime_error = str(error)
        # Ended conversations are judged here too (replicas share the work by leases); without
        # a runtime the rules still decide what they can.
        shared_worker(chosen, state.engine, state.runtime.judge if state.runtime else None)
        app.state.acb = state
        yield

    app = FastAPI(
        title="agent-chatbase API",
        summary="The support agent as an HTTP service, with the same recording, memory and "
        "dashboards as the chat page.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit)
    origins = (settings or _settings_or_default()).api_cors_origins
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Accept"],
        )
    _routes(app)
    _handlers(app)
    return app


def _outcome_entry(verdict: dict[str, Any]) -> OutcomeEntry:
    stamps = {k: verdict[k].isoformat() for k in ("ended_at", "judged_at")}
    return OutcomeEntry(**{**verdict, **stamps})


def _settings_or_default() -> Settings:
    try:
        return get_settings()
    except Exception:  # a bad setting is reported by the lifespan, once
        return Settings.model_construct()


def state_of(request: Request) -> State:
    return request.app.state.acb  # type: ignore[no-any-return]


def authorized(request: Request) -> State:
    """With API_KEYS, a valid `Authorization: Bearer` key (compared in constant time); without,
    callers from this machine only."""
    state = state_of(request)
    if state.keys:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = token.strip().encode()
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(given, k) for k in state.keys):
            raise ApiError(
                401,
                "unauthorized",
                "Send a valid API key as 'Authorization: Bearer <key>'.",
                {"WWW-Authenticate": "Bearer"},
            )
        return state
    host = request.client.host if request.client else ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host in ("localhost", "testclient")
    if not loopback:
        raise ApiError(401, "unauthorized", "This API has no keys and serves this machine only.")
    return state


Caller = Annotated[State, Depends(authorized)]


def _service(state: State) -> Any:
    if state.runtime is None:
        raise ApiError(503, "model_unavailable", f"The agent is not running: {state.runtime_error}")
    return state.runtime.service


def _begin(
    state: State, body: ChatRequest
) -> tuple[TurnOutcome, Generator[str, None, None], str | None]:
    """Start the turn and wait for its first piece of text, so that every error that can
    happen before the answer starts is an HTTP status, not a broken stream."""
    session_id = body.session_id or uuid.uuid4().hex
    outcome = TurnOutcome(session_id=session_id)
    stream = _service(state).stream_turn(
        user_id=body.user_id, session_id=session_id, message=body.message, outcome=outcome
    )
    try:
        first = next(stream, None)
    except BaseException as error:
        raise _as_api_error(error) from None
    return outcome, stream, first


def _as_api_error(error: BaseException) -> ApiError:
    if isinstance(error, BudgetExceeded):
        return ApiError(402, "budget_exceeded", error.message, body=error.body())
    if isinstance(error, RateLimited):
        wait = f"{error.retry_after_s:.0f}"
        return ApiError(429, "rate_limited", str(error), {"Retry-After": wait})
    if isinstance(error, SessionNotFound):
        return ApiError(404, "not_found", str(error))
    if isinstance(error, SessionBusy):
        return ApiError(409, "session_busy", str(error))
    if isinstance(error, ChatInputError):
        return ApiError(422, "invalid_request", str(error))
    if isinstance(error, DependencyError):
        if error.timeout:
            return ApiError(504, "model_timeout", str(error))
        code = "database_unavailable" if error.dependency == "database" else "model_unavailable"
        return ApiError(503, code, str(error))
    if isinstance(error, TurnFailed):
        return ApiError(502, "no_answer", str(error))
    if isinstance(error, SQLAlchemyError):
        return ApiError(503, "database_unavailable", "The database is unavailable.")
    log.exception("unexpected error in a chat turn", exc_info=error)
    return ApiError(500, "internal", "Something went wrong on our side; the error is logged.")


def _response(body: ChatRequest, outcome: TurnOutcome, *, traced: bool) -> ChatResponse:
    return ChatResponse(
        reply=outcome.text,
        session_id=outcome.session_id,
        user_id=body.user_id,
        turn=outcome.turn,
        usage=outcome.tokens(),  # type: ignore[arg-type]
        cost_usd=outcome.cost_usd,
        cost_status=outcome.cost_status,  # type: ignore[arg-type]
        latency_ms=round(outcome.wall_ms, 1),
        ttft_ms=outcome.ttft_ms,
        context_percent=outcome.context_percent,
        # The run id means something in LangSmith only when the run was traced there.
        run_id=outcome.run_id if traced else None,
        memories=outcome.memories(),  # type: ignore[arg-type]
        tools=outcome.tools(),  # type: ignore[arg-type]
        warnings=outcome.warnings,
    )


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _routes(app: FastAPI) -> None:
    @app.post(
        "/chat",
        response_model=ChatResponse,
        responses=ERRORS,
        summary="Send one message and get the answer",
        description="The seed's call works as written: `curl -X POST http://localhost:8000/chat "
        "-H 'Content-Type: application/json' -d '{\"message\": \"Hello\"}'`. With "
        "`Accept: text/event-stream` the answer streams as on /chat/stream.",
    )
    def chat(body: ChatRequest, request: Request, state: Caller) -> Any:
        if "text/event-stream" in request.headers.get("accept", ""):
            return _stream(state, body)
        outcome, stream, _ = _begin(state, body)
        try:
            for _ in stream:
                pass
        except BaseException as error:
            raise _as_api_error(error) from None
        return _response(body, outcome, traced=_tracing(state))

    @app.post(
        "/chat/stream",
        responses={200: {"content": {"text/event-stream": {}}}, **ERRORS},
        summary="Send one message and stream the answer (server-sent events)",
        description='Events: `delta` ({"text": ...}) as the answer streams, then one `done` '
        'with the same fields as POST /chat, or one `error` ({"error", "message"}) if the '
        "turn fails after it started.",
    )
    def chat_stream(body: ChatRequest, state: Caller) -> StreamingResponse:
        return _stream(state, body)

    @app.get(
        "/sessions/{session_id}",
        response_model=Transcript,
        responses=ERRORS,
        summary="The transcript of a session, for the user it belongs to",
    )
    def session(
        session_id: Annotated[str, Path(pattern=SESSION_ID, examples=["test_session"])],
        user_id: Annotated[str, Query(pattern=USER_ID, examples=["user_123"])],
        state: Caller,
    ) -> Transcript:
        try:
            found = conversations.get_session(engine=state.engine, session_id=session_id)
            if found is None or found.user_id != user_id:
                raise ApiError(404, "not_found", f"No session {session_id} for this user.")
            messages = conversations.transcript(engine=state.engine, session_id=session_id)
            verdicts = outcomes.verdict_history(engine=state.engine, session_id=session_id)
        except SQLAlchemyError:
            raise ApiError(503, "database_unavailable", "The database is unavailable.") from None
        history = [_outcome_entry(v) for v in verdicts]
        return Transcript(
            session_id=session_id,
            user_id=user_id,
            closed_at=found.closed_at.isoformat() if found.closed_at else None,
            outcome=history[0] if history else None,
            outcome_history=history,
            messages=[
                TranscriptEntry(
                    turn=m.turn,
                    role=m.role,
                    content=m.content,
                    created_at=m.created_at.isoformat(),
                    run_id=m.run_id,
                )
                for m in messages
            ],
        )

    @app.post(
        "/sessions/{session_id}/close",
        response_model=Closed,
        responses=ERRORS,
        summary="End a conversation now; its outcome is judged on the worker's next pass",
    )
    def close(
        session_id: Annotated[str, Path(pattern=SESSION_ID, examples=["test_session"])],
        user_id: Annotated[str, Query(pattern=USER_ID, examples=["user_123"])],
        state: Caller,
    ) -> Closed:
        try:
            closed = outcomes.close_session(
                engine=state.engine, session_id=session_id, user_id=user_id
            )
        except SQLAlchemyError:
            raise ApiError(503, "database_unavailable", "The database is unavailable.") from None
        if closed is None:
            raise ApiError(404, "not_found", f"No session {session_id} for this user.")
        return Closed(session_id=session_id, closed_at=closed.isoformat())

    @app.get(
        "/health",
        summary="Liveness: the process answers (no dependency is checked)",
        responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
    )
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "A dependency is not usable"}},
        summary="Readiness: database, memory store, model endpoint and Redis (when set)",
    )
    def ready(request: Request) -> JSONResponse:
        state = state_of(request)
        result = readiness(settings=state.settings, engine=state.engine, runtime=state.runtime)
        if state.runtime is None and state.runtime_error:
            result.checks["model"].error = state.runtime_error[:200]
        return JSONResponse(
            result.model_dump(), status_code=200 if result.status == "ready" else 503
        )

    @app.get("/metrics", summary="Prometheus metrics of this process", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def _tracing(state: State) -> bool:
    return state.runtime is not None and state.runtime.service.tracing.client is not None


def _stream(state: State, body: ChatRequest) -> StreamingResponse:
    outcome, stream, first = _begin(state, body)
    # Here the only reader that can stop early is the client: however the stream ends up closed
    # (below, or when the server drops it), that is the reason recorded.
    outcome.cancel_reason = "the client disconnected before the answer was complete"

    def events() -> Iterator[str]:
        try:
            if first:
                yield _sse("delta", {"text": first})
            for piece in stream:
                yield _sse("delta", {"text": piece})
        except GeneratorExit:
            # The client went away mid-answer: the turn ends now, recorded as cancelled, and
            # its session is free for the next turn (yielding here would be an error).
            stream.close()
            raise
        except BaseException as error:
            failure = _as_api_error(error)
            yield _sse("error", {"error": failure.error, "message": failure.message})
            return
        yield _sse("done", _response(body, outcome, traced=_tracing(state)).model_dump())

    return StreamingResponse(events(), media_type="text/event-stream")


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        body = error.body or error_body(error.error, error.message)
        return JSONResponse(jsonable_encoder(body), status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        fields = []
        for item in error.errors():
            if item.get("type") == "json_invalid":
                fields.append({"field": "body", "reason": "not valid JSON"})
                continue
            where = [
                str(p)
                for p in item.get("loc", ())
                if p not in ("body", "query", "path") and not isinstance(p, int)
            ]
            reason = str(item.get("msg", "invalid")).removeprefix("Value error, ")
            fields.append({"field": ".".join(where) or "body", "reason": reason[:200]})
        first = fields[0] if fields else {"field": "body", "reason": "invalid"}
        return JSONResponse(
            error_body(
                "invalid_request", f"{first['field']}: {first['reason']}", fields=fields[:20]
            ),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        codes = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}
        code = codes.get(error.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(error.detail)),
            status_code=error.status_code,
            headers=error.headers,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path, exc_info=error)
        return JSONResponse(
            error_body("internal", "Something went wrong on our side; the error is logged."),
            status_code=500,
        )


app = create_app()
