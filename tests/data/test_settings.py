"""Settings: defaults, sources, and one clear line for every bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from data.config.settings import SettingsError, load_settings
from data.config.urls import to_libpq_url, to_sqlalchemy_url
from tests.helpers.servers import ROOT


def test_defaults_need_no_service_and_no_key() -> None:
    settings = load_settings()
    assert settings.uses_local_model
    assert settings.chat_model == "gpt-4o-mini"
    assert settings.langsmith_project == "agent_chatbase"
    assert settings.metrics_port == 9464
    assert settings.sqlalchemy_url.startswith("sqlite:///")
    assert settings.sqlalchemy_url.endswith(".data/agent_chatbase.sqlite3")


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        ("METRICS_PORT", "99999", "Invalid setting METRICS_PORT='99999': Input should be less"),
        ("METRICS_PORT", "abc", "Invalid setting METRICS_PORT='abc': Input should be a valid"),
        ("PROMETHEUS_URL", "not a url", "Invalid setting PROMETHEUS_URL='not a url'"),
        ("OPENAI_BASE_URL", "ftp://x", "Invalid setting OPENAI_BASE_URL='ftp://x': URL scheme"),
        ("DATABASE_URL", "mysql://u:pw@h/db", "Invalid setting DATABASE_URL: unsupported"),
        ("DATABASE_URL", "::::", "Invalid setting DATABASE_URL: not a database URL"),
        ("REDIS_URL", "http://r", "Invalid setting REDIS_URL: not a Redis URL"),
        ("LOG_LEVEL", "LOUD", "Invalid setting LOG_LEVEL='LOUD'"),
        ("SUMMARY_TRIGGER_FRACTION", "1.5", "Invalid setting SUMMARY_TRIGGER_FRACTION='1.5'"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_secret_values_never_appear_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://user:hunter2@db/x")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "hunter2" not in str(caught.value)


def test_sources_env_over_dotenv_over_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(
        'CHAT_MODEL = "from-secrets"\nSUMMARY_MODEL = "sum-secrets"\n'
        'LANGSMITH_PROJECT = "p-secrets"\n'
    )
    monkeypatch.setattr("data.config.settings.SECRETS_FILES", (secrets,))
    (tmp_path / ".env").write_text("CHAT_MODEL=from-dotenv\nSUMMARY_MODEL=sum-dotenv\n")
    monkeypatch.setenv("CHAT_MODEL", "from-env")
    settings = load_settings()
    assert settings.chat_model == "from-env"
    assert settings.summary_model == "sum-dotenv"
    assert settings.langsmith_project == "p-secrets"


def test_empty_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")
    monkeypatch.setenv("DATABASE_URL", " ")
    settings = load_settings()
    assert settings.openai_api_key is None and settings.uses_local_model
    assert settings.database_url is None


def test_postgres_url_forms() -> None:
    seed_url = "postgresql://agent_user:pw@localhost:5432/agent_db"
    assert (
        to_sqlalchemy_url(seed_url) == "postgresql+psycopg://agent_user:pw@localhost:5432/agent_db"
    )
    assert to_libpq_url(to_sqlalchemy_url(seed_url)) == seed_url
    settings = load_settings(database_url=seed_url)
    assert settings.is_postgres


def test_cli_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "METRICS_PORT": "70000", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "data.store.migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: Invalid setting METRICS_PORT='70000': Input should be less than or equal to 65535"
    ]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("primary", "replica", "expected"),
    [
        (None, "postgresql://r:pw@replica/db", "DATABASE_READ_URL needs DATABASE_URL"),
        (
            "postgresql://p@primary/db",
            "sqlite:///r.sqlite3",
            "DATABASE_READ_URL must be a Postgres",
        ),
        (
            "postgresql://p@primary/db",
            "mysql://u:hunter2@r/db",
            "Invalid setting DATABASE_READ_URL",
        ),
    ],
)
def test_a_read_replica_needs_a_postgres_primary(
    monkeypatch: pytest.MonkeyPatch, primary: str | None, replica: str, expected: str
) -> None:
    if primary:
        monkeypatch.setenv("DATABASE_URL", primary)
    monkeypatch.setenv("DATABASE_READ_URL", replica)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert expected in str(caught.value) and "hunter2" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_read_replica_url_in_sqlalchemy_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://p@primary/db")
    monkeypatch.setenv("DATABASE_READ_URL", "postgresql://r@replica:5433/db")
    monkeypatch.setenv("DATABASE_READ_MAX_WAIT_MS", "0")
    settings = load_settings()
    assert settings.sqlalchemy_read_url == "postgresql+psycopg://r@replica:5433/db"
    assert settings.database_read_max_wait_ms == 0
    monkeypatch.setenv("DATABASE_READ_MAX_WAIT_MS", "-5")
    with pytest.raises(SettingsError, match="DATABASE_READ_MAX_WAIT_MS"):
        load_settings()
