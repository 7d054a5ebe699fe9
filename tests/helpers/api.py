"""The API served for real: uvicorn on a free port of 127.0.0.1, the app's own runtime around
a model served by tests/helpers/fake_openai.py (the real OpenAI client, the real wire format)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from agent.runtime import Runtime, build_runtime
from api.main import create_app
from data.config.settings import Settings, load_settings
from data.store.db import make_engine
from tests.helpers.fake_openai import FakeOpenAI


def api_settings(
    model: FakeOpenAI | str, tmp_path: Path, db_url: str, **overrides: Any
) -> Settings:
    """Settings of a production-like API: an OpenAI-compatible model (the fake server, or its
    URL), its embeddings, the test database, no metrics port."""
    values: dict[str, Any] = {
        "openai_api_key": "sk-test-not-a-real-key",
        "openai_base_url": model if isinstance(model, str) else model.url,
        "chat_model": "gpt-4o-mini",
        "database_url": db_url,
        "data_dir": tmp_path / "data",
        "metrics_port": 0,
        "model_max_retries": 0,
        "model_timeout_s": 5.0,
        "rate_limit_per_minute": 10_000,
        "rate_limit_burst": 10_000,
        "agent_tools": "off",
    }
    values.update(overrides)
    return load_settings(**values)


class ServedApi:
    def __init__(self, url: str, runtime: Runtime, server: uvicorn.Server) -> None:
        self.url = url
        self.runtime = runtime
        self.server = server
        self.client = httpx.Client(base_url=url, timeout=30)

    def chat(self, **body: Any) -> httpx.Response:
        return self.client.post("/chat", json=body)


@contextmanager
def serve_api(settings: Settings, port: int) -> Iterator[ServedApi]:
    """The app's API with its own runtime, served until the block ends."""
    engine = make_engine(settings.sqlalchemy_url)
    runtime = build_runtime(settings, engine=engine)
    app = create_app(settings.model_copy(update={"api_port": port}), runtime=runtime)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.02)
    served = ServedApi(f"http://127.0.0.1:{port}", runtime, server)
    try:
        yield served
    finally:
        served.client.close()
        server.should_exit = True
        thread.join(timeout=10)
        runtime.parts.middleware.flush()
        if runtime.parts.memory is not None:
            runtime.parts.memory.close()
        engine.dispose()
