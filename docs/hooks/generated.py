"""MkDocs hook: pages that are generated from the code at build time, so they cannot drift.

- `<!-- settings -->` in configuration.md becomes every setting of `Settings`, grouped by the
  section comments of data/config/settings.py, with its default, accepted values and meaning.
- `<!-- layout -->` in architecture.md becomes every package and module of the app, each with
  the first line of its docstring and its length."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _sections() -> dict[str, str]:
    """Field name -> the section comment above it in Settings."""
    source = (ROOT / "data" / "config" / "settings.py").read_text()
    body = source[source.index("class Settings(") :]
    section, out = "General", {}
    pending: list[str] = []
    for line in body.splitlines()[1:]:
        if re.match(r"^    # ", line):
            pending.append(line.strip("# ").strip())
            continue
        if not line.strip():
            if pending:
                section, pending = pending[0], []
            continue
        if pending:
            section, pending = pending[0], []
        if field := re.match(r"^    ([a-z_][a-z0-9_]*)\s*:", line):
            title = re.sub(r"\s*\((seed|issue)[^)]*\)", "", section).split(":")[0].split(" (")[0]
            out[field.group(1)] = title.rstrip(".")
        if line.startswith("    def ") or line.startswith("    @"):
            break
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _accepted(info: Any) -> str:
    bounds = []
    for item in info.metadata:
        for name, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if (value := getattr(item, name, None)) is not None:
                bounds.append(f"{sign} {value:,}" if isinstance(value, int) else f"{sign} {value}")
    kind = re.sub(r"typing\.|pydantic\.\w+\.|<class '(\w+)'>", r"\1", str(info.annotation))
    kind = kind.replace("NoneType", "unset").replace("SecretStr", "secret")
    return ", ".join([f"`{kind}`", *bounds])


def settings_table() -> str:
    from pydantic_core import PydanticUndefined

    from data.config.settings import Settings

    sections = _sections()
    groups: dict[str, list[str]] = {}
    for name, info in Settings.model_fields.items():
        default = info.default
        if default is PydanticUndefined and info.default_factory is not None:
            default = info.default_factory()  # type: ignore[call-arg]
        if "Secret" in str(info.annotation) and default not in (None, "", [], ()):
            shown = "(set)"
        elif default in (None, "", [], ()):
            shown = "unset"
        else:
            shown = f"`{_cell(str(default))}`"
        meaning = _cell(info.description or "")
        row = f"| `{name.upper()}` | {shown} | {_cell(_accepted(info))} | {meaning} |"
        groups.setdefault(sections.get(name, "General"), []).append(row)
    out = []
    for section, rows in groups.items():
        out += [
            f"### {section}",
            "",
            "| variable | default | accepted | meaning |",
            "|---|---|---|---|",
        ]
        out += [*rows, ""]
    return "\n".join(out)


def _doc_line(path: Path) -> str:
    try:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    except SyntaxError:
        return ""
    first = doc.strip().split("\n\n")[0].replace("\n", " ")
    return _cell(first)


def layout() -> str:
    out = []
    for folder in [
        "agent",
        "api",
        "pages",
        *sorted(
            f"data/{p.name}" for p in (ROOT / "data").iterdir() if (p / "__init__.py").exists()
        ),
    ]:
        base = ROOT / folder
        modules = sorted(p for p in base.glob("*.py") if p.name != "__init__.py")
        lines = sum(len(p.read_text().splitlines()) for p in modules)
        intro = _doc_line(base / "__init__.py") if (base / "__init__.py").exists() else ""
        out += [f"### `{folder}/`: {len(modules)} modules, {lines:,} lines", ""]
        if intro:
            out += [intro, ""]
        out += ["| module | lines | what it does |", "|---|---|---|"]
        for p in modules:
            out.append(f"| `{p.name}` | {len(p.read_text().splitlines())} | {_doc_line(p)} |")
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if str(ROOT) not in sys.path:  # MkDocs restores sys.path after loading a hook
        sys.path.insert(0, str(ROOT))
    if "<!-- settings -->" in markdown:
        markdown = markdown.replace("<!-- settings -->", settings_table())
    if "<!-- layout -->" in markdown:
        markdown = markdown.replace("<!-- layout -->", layout())
    return markdown
