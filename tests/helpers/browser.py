"""The served app (`python app.py`, as `make run` starts it) and headless Chromium, for the
browser tests: one way to start each."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.servers import ROOT, free_port, wait_ready

CHROMIUM = "/usr/bin/chromium"
# Chromium's own background traffic is refused by this machine's closed network; these keep
# it from trying (and from slowing every start down).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR", ROOT / "artifacts"))


def chromium_path() -> str:
    """Debian's Chromium, which `make test` installs; never a browser Playwright downloads."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; `make test` installs Debian's chromium")
    return CHROMIUM


@contextmanager
def served_app(
    data_dir: Path,
    env: Mapping[str, str],
    *,
    command: Sequence[str] = (sys.executable, str(ROOT / "app.py")),
    timeout: float = 90,
) -> Iterator[str]:
    """`python app.py` (or `command`, such as plain `streamlit run app.py`) on a free
    127.0.0.1 port with DATA_DIR=`data_dir` and `env` on top of this process's environment
    less any OPENAI_ or DATABASE_ variable; yields its base URL. Its output goes to
    `data_dir/streamlit.log`."""
    port = free_port()
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DATABASE_"))},
        "DATA_DIR": str(data_dir),
        "METRICS_PORT": str(free_port()),
        "API_PORT": str(free_port()),  # the served API too, never the default 8000
        "PYTHONPATH": str(ROOT),
        **env,
    }
    log_path = data_dir / "streamlit.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                *command,
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
            ],
            cwd=data_dir,
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(f"{url}/_stcore/health", process, log_path, timeout=timeout)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


def page_paths() -> list[tuple[str, str]]:
    """(url path, title) of every page the router lists, in its order."""
    from app import PAGES

    return [(url_path, title) for _, _, _, title, _, url_path, _ in PAGES]


def tour(page: Any, url: str, out: Path, prefix: str) -> dict[str, str]:
    """Open every page of the served app at `url` in `page` (Playwright, sync; give it a tall
    viewport: Streamlit scrolls inside its main block, so a screenshot holds one viewport),
    screenshot each to `out/{prefix}-{url path}.png`, and return what each showed that a
    person should not see: an exception box or a traceback (empty when a page is fine)."""
    out.mkdir(parents=True, exist_ok=True)
    problems: dict[str, str] = {}
    for path, title in page_paths():
        page.goto(f"{url}/{path}")
        page.get_by_role("heading", level=1).first.wait_for(timeout=60_000)
        page.wait_for_load_state("networkidle")
        # Reruns settle (charts draw, the status widget stops) before the picture.
        page.wait_for_function(
            "!document.querySelector('[data-testid=stStatusWidgetRunningIcon]')", timeout=60_000
        )
        # Charts and tables load their code on first use: wait until no placeholder is left.
        page.wait_for_function(
            "!document.querySelector('[data-testid=stSkeleton], [data-testid=stSkeletonElement]')",
            timeout=60_000,
        )
        page.wait_for_timeout(500)  # plotly's first draw
        page.screenshot(path=str(out / f"{prefix}-{path}.png"), full_page=True)
        body = page.inner_text("body")
        if page.get_by_test_id("stException").count() or "Traceback" in body:
            problems[title] = body[:500]
    return problems
