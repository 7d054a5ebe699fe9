"""The migration files: their names follow alembic's chain, their docstrings agree with the code,
and start-up is the one place that applies them."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

from alembic.script import ScriptDirectory

from data.store.migrate import MIGRATIONS
from tests.helpers.servers import ROOT

VERSIONS = MIGRATIONS / "versions"


def chain() -> list[str]:
    """Revision ids from the first to the head, as alembic walks them."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    assert len(script.get_heads()) == 1, script.get_heads()
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def assigned(path: Path, name: str) -> str | None:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return ast.literal_eval(node.value)  # type: ignore[no-any-return]
    raise AssertionError(f"{path.name} assigns no {name}")


def test_file_order_is_chain_order() -> None:
    files = sorted(VERSIONS.glob("[0-9]*.py"))
    assert [assigned(f, "revision") for f in files] == chain()
    assert [f.name[:4] for f in files] == [f"{n:04d}" for n in range(1, len(files) + 1)]


def test_docstrings_agree_with_the_code() -> None:
    for path in VERSIONS.glob("[0-9]*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        revision = re.search(r"^Revision ID: (\d+)", doc, re.M)
        revises = re.search(r"^Revises: ?(\d*)$", doc, re.M)
        assert revision and revises, path.name
        assert revision.group(1) == assigned(path, "revision"), path.name
        assert (revises.group(1) or None) == assigned(path, "down_revision"), path.name


def test_one_place_applies_migrations() -> None:
    """Only data/store/migrate.py runs alembic's upgrade; everything else calls it."""
    found = subprocess.run(
        ["git", "grep", "-l", "command.upgrade", "--", "*.py", ":!tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert found == ["data/store/migrate.py"]
