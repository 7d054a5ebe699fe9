"""The help center: the team's articles (`KB_DIR`) or the built-in example entries in agent/kb,
searched by meaning.

An article is a Markdown (`.md`, `.markdown`) or text (`.txt`) file anywhere under the folder.
In Markdown, each `## ` section is one entry under the file's `# ` heading (its topic); a file
without `## ` sections is one entry titled by its `# ` heading (else its first line). A text
file is one entry titled by its first line.

Entries are embedded once per content: the vectors are kept in `DATA_DIR/kb-index/` with the
folder's content hash and the embedder's name, so a restart with an unchanged folder embeds
nothing, and a changed folder is re-indexed at start-up. While the app runs, the folder is
checked (file names, sizes, modification times) at most every few seconds before a search, and
a change re-indexes it; the embedding cache makes unchanged entries free.

    python -m agent.knowledge index [--force]    # (re)index KB_DIR now and say what is in it

A search embeds only the query and takes cosine similarities (the embedder returns
L2-normalised vectors, so a dot product is the cosine)."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from agent.context import TurnContext
    from agent.embedding_base import Embedder
    from data.config.settings import Settings

log = logging.getLogger(__name__)

KB_DIR = Path(__file__).resolve().parent / "kb"
SUFFIXES = (".md", ".markdown", ".txt")
RECHECK_S = 2.0
MAX_FILE_BYTES = 2_000_000
MAX_ENTRY_CHARS = 6000


@dataclass(frozen=True, slots=True)
class Entry:
    """One help-center answer (an article or a section of one)."""

    id: str  # "<file path without suffix>/<title slug>", stable across restarts
    topic: str  # the file's `# ` heading
    title: str  # the `## ` heading, usually the customer's question
    text: str
    file: str = ""  # the article's path inside the help-center folder, e.g. "returns.md"

    def as_text(self) -> str:
        return f"{self.title}\n{self.text}"


@dataclass(frozen=True, slots=True)
class Hit:
    entry: Entry
    score: float  # cosine similarity, -1..1


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _clean(lines: list[str]) -> str:
    return " ".join(" ".join(line.strip() for line in lines).split())[:MAX_ENTRY_CHARS]


def parse(markdown: str, *, source: str, file: str = "") -> list[Entry]:
    """Split one Markdown file into entries: a `# ` topic heading, then `## ` entries; a file
    without `## ` sections is one entry."""
    topic = source
    entries: list[Entry] = []
    title: str | None = None
    body: list[str] = []
    preamble: list[str] = []
    heading: str | None = None

    def close() -> None:
        text = _clean(body)
        if title and text:
            entries.append(
                Entry(id=f"{source}/{_slug(title)}", topic=topic, title=title, text=text, file=file)
            )

    for line in markdown.splitlines():
        if line.startswith("## "):
            close()
            title, body = line[3:].strip(), []
        elif line.startswith("# ") and heading is None:
            topic = heading = line[2:].strip()
        elif title is not None:
            body.append(line)
        else:
            preamble.append(line)
    close()
    if not entries and title is None:
        lines = [line for line in preamble if line.strip()]
        if heading is None and lines:
            heading, lines = lines[0].strip().lstrip("#").strip(), lines[1:]
        text = _clean(lines)
        if heading and text:
            entries.append(
                Entry(
                    id=f"{source}/{_slug(heading)}",
                    topic=Path(file).stem if file else source,
                    title=heading,
                    text=text,
                    file=file,
                )
            )
    return entries


def parse_text(text: str, *, source: str, file: str = "") -> list[Entry]:
    """A plain-text article: its first line is the title, the rest the answer."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return []
    title = lines[0].strip()
    return [
        Entry(
            id=f"{source}/{_slug(title)}",
            topic=Path(file).stem if file else source,
            title=title,
            text=_clean(lines[1:]),
            file=file,
        )
    ]


def article_files(directory: Path) -> list[Path]:
    """The article files under `directory`, sorted by their path (hidden files left out)."""
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def load_entries(directory: Path = KB_DIR) -> list[Entry]:
    """Every entry of every article in `directory`, in path order (see `read_folder`)."""
    return read_folder(directory).entries


@dataclass
class Folder:
    """What a help-center folder holds now."""

    directory: Path
    entries: list[Entry]
    articles: int
    content_hash: str
    signature: tuple[tuple[str, int, int], ...]
    problems: list[str] = field(default_factory=list)


def _signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    found = []
    for path in article_files(directory):
        try:
            stat = path.stat()
        except OSError:
            continue
        found.append((str(path.relative_to(directory)), stat.st_size, stat.st_mtime_ns))
    return tuple(found)


def read_folder(directory: Path) -> Folder:
    """Parse every article; a file that cannot be read is skipped and named in `problems`.
    Two entries with the same id (a title repeated in one file) get a numbered suffix."""
    entries: list[Entry] = []
    problems: list[str] = []
    digest = hashlib.sha256()
    articles = 0
    for path in article_files(directory):
        relative = path.relative_to(directory).as_posix()
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                problems.append(f"{relative}: larger than {MAX_FILE_BYTES:,} bytes, skipped")
                continue
            raw = path.read_bytes()
            text = raw.decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            problems.append(f"{relative}: cannot be read ({type(error).__name__}), skipped")
            continue
        digest.update(relative.encode() + b"\0" + raw + b"\0")
        source = relative.rsplit(".", 1)[0]
        reader = parse_text if path.suffix.lower() == ".txt" else parse
        found = reader(text, source=source, file=relative)
        if not found:
            problems.append(f"{relative}: no article text found")
            continue
        articles += 1
        entries += found
    seen: dict[str, int] = {}
    unique = []
    for entry in entries:
        count = seen.get(entry.id, 0) + 1
        seen[entry.id] = count
        if count > 1:
            entry = Entry(f"{entry.id}-{count}", entry.topic, entry.title, entry.text, entry.file)
        unique.append(entry)
    return Folder(
        directory=directory,
        entries=unique,
        articles=articles,
        content_hash=digest.hexdigest(),
        signature=_signature(directory),
        problems=problems,
    )


@dataclass(frozen=True)
class IndexReport:
    directory: Path
    articles: int
    entries: int
    content_hash: str
    embedded: bool  # False: the stored vectors were still right
    seconds: float
    problems: list[str]


class KnowledgeBase:
    """The entries and their embeddings. The entries are embedded on first use, not at
    construction, so an embeddings API that is down at start-up costs the help-center search
    (an error the tool reports to the model), never the app's start.

    With `entries`, the knowledge base is exactly those (tests); otherwise it is the folder
    `directory` (default: the built-in agent/kb), watched for changes. With `index_dir`, the
    vectors are stored there and reused while the folder's content hash is the same."""

    def __init__(
        self,
        *,
        embedder: Embedder,
        entries: Sequence[Entry] | None = None,
        directory: Path | None = None,
        index_dir: Path | None = None,
        recheck_s: float = RECHECK_S,
    ) -> None:
        self.embedder = embedder
        self.directory = None if entries is not None else (directory or KB_DIR)
        self.builtin = entries is None and self.directory == KB_DIR
        self.index_dir = index_dir
        self.recheck_s = recheck_s
        self.problems: list[str] = []
        self._lock = threading.RLock()
        self._matrix: np.ndarray | None = None
        self._hash = ""
        self._signature: tuple[tuple[str, int, int], ...] = ()
        self._checked = 0.0
        self.articles = 0
        if entries is not None:
            self.entries = list(entries)
            if not self.entries:
                raise ValueError("the knowledge base has no entries")
        else:
            self._read()
            if self.builtin and not self.entries:
                raise ValueError(f"the built-in knowledge base in {KB_DIR} has no entries")

    def _read(self) -> bool:
        """Re-read the folder; True when its content changed."""
        assert self.directory is not None
        folder = read_folder(self.directory)
        changed = folder.content_hash != self._hash
        self.entries = folder.entries
        self.articles = folder.articles
        self.problems = folder.problems
        self._signature = folder.signature
        self._checked = time.monotonic()
        if changed:
            self._hash = folder.content_hash
            self._matrix = None
            for problem in folder.problems:
                log.warning("help center %s: %s", self.directory, problem)
        return changed

    def refresh(self, *, force: bool = False) -> bool:
        """Look at the folder (at most every `recheck_s` seconds unless `force`) and re-read it
        when a file was added, removed or changed; True when the content changed."""
        if self.directory is None:
            return False
        with self._lock:
            if not force and time.monotonic() - self._checked < self.recheck_s:
                return False
            self._checked = time.monotonic()
            if not force and _signature(self.directory) == self._signature:
                return False
            return self._read()

    @property
    def content_hash(self) -> str:
        return self._hash

    # The stored index ---------------------------------------------------------------------

    def _index_file(self) -> Path | None:
        if self.index_dir is None or self.directory is None:
            return None
        name = _slug(f"{self.embedder.provider}-{self.embedder.model}")
        where = hashlib.sha256(str(self.directory.resolve()).encode()).hexdigest()[:12]
        return self.index_dir / f"kb-{where}-{name}.npz"

    def _load_index(self) -> np.ndarray | None:
        path = self._index_file()
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                meta = json.loads(str(stored["meta"]))
                vectors = np.asarray(stored["vectors"], dtype=np.float32)
        except (OSError, ValueError, KeyError):
            log.warning("the stored help-center index %s is unreadable; re-indexing", path)
            return None
        ids = [e.id for e in self.entries]
        if meta.get("hash") != self._hash or meta.get("ids") != ids or len(vectors) != len(ids):
            return None
        return vectors

    def _store_index(self, vectors: np.ndarray) -> None:
        path = self._index_file()
        if path is None:
            return
        meta = {
            "hash": self._hash,
            "ids": [e.id for e in self.entries],
            "model": self.embedder.model,
            "directory": str(self.directory),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial.npz")
            np.savez(partial, vectors=vectors, meta=np.array(json.dumps(meta)))
            os.replace(partial, path)
        except OSError:
            log.warning("could not store the help-center index in %s", path, exc_info=True)

    def matrix(self) -> np.ndarray:
        """The entries' embeddings, one row each: from the stored index when the folder is
        unchanged, else embedded now and stored (raises EmbeddingError)."""
        with self._lock:
            if self._matrix is None:
                vectors = self._load_index()
                if vectors is None:
                    vectors = self._embed()
                self._matrix = vectors
            return self._matrix

    def _embed(self) -> np.ndarray:
        if not self.entries:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        vectors = self.embedder.embed([entry.as_text() for entry in self.entries])
        matrix = np.asarray(vectors, dtype=np.float32)
        self._store_index(matrix)
        return matrix

    def index(self, *, force: bool = False) -> IndexReport:
        """Re-read the folder and make sure its vectors are current (with `force`, embed them
        again even if the stored ones fit)."""
        started = time.perf_counter()
        with self._lock:
            if self.directory is not None:
                self._read()
            self._matrix = None
            stored = None if force else self._load_index()
            self._matrix = stored if stored is not None else self._embed()
            return IndexReport(
                directory=self.directory or Path("."),
                articles=self.articles,
                entries=len(self.entries),
                content_hash=self._hash,
                embedded=stored is None,
                seconds=time.perf_counter() - started,
                problems=list(self.problems),
            )

    # Search -------------------------------------------------------------------------------

    def search(self, query: str, k: int = 3, *, ref: TurnContext | None = None) -> list[Hit]:
        """The `k` entries most similar to `query`, best first (a blank query finds nothing).
        With `ref`, the embedding call is recorded against that chat turn."""
        if not query.strip() or k < 1:
            return []
        self.refresh()
        with self._lock:
            matrix = self.matrix()
            entries = list(self.entries)
        if not entries:
            return []
        vector = np.asarray(self.embedder.embed([query], ref=ref)[0], dtype=np.float32)
        scores = matrix @ vector
        best = np.argsort(-scores, kind="stable")[:k]
        return [Hit(entry=entries[i], score=float(scores[i])) for i in best]


def from_settings(settings: Settings, embedder: Embedder) -> KnowledgeBase:
    """The app's help center: KB_DIR when set, else the built-in entries; vectors stored in
    DATA_DIR/kb-index."""
    return KnowledgeBase(
        embedder=embedder,
        directory=settings.kb_dir,
        index_dir=settings.data_dir / "kb-index",
    )


def main(argv: list[str] | None = None) -> int:
    from agent.embedding_base import EmbeddingError
    from agent.embeddings import make_embedder
    from data.config.settings import SettingsError, get_settings

    parser = argparse.ArgumentParser(
        prog="python -m agent.knowledge", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("index", help="(re)index the help-center folder now")
    command.add_argument("--force", action="store_true", help="embed even if nothing changed")
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
        knowledge = from_settings(settings, make_embedder(settings))
        report = knowledge.index(force=args.force)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except EmbeddingError as error:
        print(f"error: the help center cannot be embedded: {error}", file=sys.stderr)
        return 2
    where = "built-in agent/kb" if knowledge.builtin else str(report.directory)
    action = "embedded" if report.embedded else "unchanged, stored vectors reused"
    print(
        f"help center {where}: {report.articles} articles, {report.entries} entries, "
        f"content hash {report.content_hash[:12]} ({action}, {report.seconds:.2f} s)"
    )
    for problem in report.problems:
        print(f"  {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
