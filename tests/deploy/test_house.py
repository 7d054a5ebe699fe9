"""The house rules hold: no module imports another in a circle, no module of the app grows past
about 500 lines, pages/ holds only pages and none of them contains SQL, and nothing below the
pages imports upward."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers.servers import ROOT

PACKAGES = ("agent", "api", "data", "pages")
# "About 500": the largest, agent/memory.py (530), is one MemoryStore class whose methods share
# its locks.
MAX_LINES = 550
# Over it, with why: one declaration of every setting with its bounds and its description (the
# configuration page is generated from it).
LARGER = {"data/config/settings.py": 690}


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the app (migrations are alembic's)."""
    found = {"app": ROOT / "app.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The app modules a file imports anywhere: at the top, inside a function, or for type
    checking only (each ties the two modules together all the same)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names} & known
    return out


def test_no_import_circle() -> None:
    found = modules()
    graph = {name: imports(path, set(found)) - {name} for name, path in found.items()}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            raise AssertionError(
                "import circle: " + " -> ".join([*trail[trail.index(name) :], name])
            )
        if name in done:
            return
        for target in sorted(graph.get(name, ())):
            visit(target, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_nothing_imports_upward() -> None:
    """agent/ and data/ never import pages/, api/ or app; data/ never imports agent/."""
    found = modules()
    for name, path in found.items():
        targets = imports(path, set(found))
        if name.startswith(("agent.", "data.")):
            assert not {t for t in targets if t.startswith(("pages", "api", "app"))}, name
        if name.startswith("data."):
            assert not {t for t in targets if t.startswith("agent")}, name


def test_modules_stay_small() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in modules().values()
    }
    over = {p: n for p, n in sizes.items() if n > LARGER.get(p, MAX_LINES)}
    assert over == {}


def test_pages_hold_pages_without_sql() -> None:
    """Every file directly in pages/ is a page app.py routes to; shared UI is in pages/ui/; no
    page or UI module builds SQL (the figures come from data/)."""
    routed = (ROOT / "app.py").read_text()
    for path in (ROOT / "pages").glob("*.py"):
        if path.name != "__init__.py":
            assert f'"pages/{path.name}"' in routed, f"{path.name} is not a page"
    for path in (ROOT / "pages").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "sqlalchemy":
                names = {a.name for a in node.names}
                assert not names & {"select", "text", "insert", "update", "delete"}, path
