"""The help-center knowledge base: FAQ and policy entries shipped in agent/kb, searched by meaning.

Each `## ` section of a markdown file in agent/kb is one entry. The entries are embedded once,
when the KnowledgeBase is built; a search embeds only the query and takes cosine similarities
(the embedder returns L2-normalised vectors, so a dot product is the cosine)."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from agent.embeddings import Embedder, TurnRef

KB_DIR = Path(__file__).resolve().parent / "kb"


@dataclass(frozen=True, slots=True)
class Entry:
    """One FAQ or policy answer."""

    id: str  # "<file stem>/<title slug>", stable across restarts
    topic: str  # the file's `# ` heading
    title: str  # the `## ` heading, usually the customer's question
    text: str

    def as_text(self) -> str:
        return f"{self.title}\n{self.text}"


@dataclass(frozen=True, slots=True)
class Hit:
    entry: Entry
    score: float  # cosine similarity, -1..1


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def parse(markdown: str, *, source: str) -> list[Entry]:
    """Split one markdown file into entries: a `# ` topic heading, then `## ` entries."""
    topic, entries = source, []
    title: str | None = None
    body: list[str] = []

    def close() -> None:
        text = " ".join(" ".join(body).split())
        if title and text:
            entries.append(
                Entry(id=f"{source}/{_slug(title)}", topic=topic, title=title, text=text)
            )

    for line in markdown.splitlines():
        if line.startswith("## "):
            close()
            title, body = line[3:].strip(), []
        elif line.startswith("# "):
            topic = line[2:].strip()
        elif title is not None:
            body.append(line.strip())
    close()
    return entries


def load_entries(directory: Path = KB_DIR) -> list[Entry]:
    """Every entry of every markdown file in `directory`, in file-name order."""
    entries = [
        entry
        for path in sorted(directory.glob("*.md"))
        for entry in parse(path.read_text(encoding="utf-8"), source=path.stem)
    ]
    ids = [entry.id for entry in entries]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate knowledge-base titles in {directory}")
    return entries


class KnowledgeBase:
    """The entries and their embeddings. The entries are embedded on first use, not at
    construction, so an embeddings API that is down at start-up costs the help-center search
    (an error the tool reports to the model), never the app's start."""

    def __init__(self, *, embedder: Embedder, entries: Sequence[Entry] | None = None) -> None:
        self.embedder = embedder
        self.entries = list(entries) if entries is not None else load_entries()
        if not self.entries:
            raise ValueError("the knowledge base has no entries")
        self._matrix: np.ndarray | None = None
        self._lock = threading.Lock()

    def matrix(self) -> np.ndarray:
        """The entries' embeddings, one row each; computed once (raises EmbeddingError)."""
        with self._lock:
            if self._matrix is None:
                vectors = self.embedder.embed([entry.as_text() for entry in self.entries])
                self._matrix = np.asarray(vectors, dtype=np.float32)
            return self._matrix

    def search(self, query: str, k: int = 3, *, ref: TurnRef | None = None) -> list[Hit]:
        """The `k` entries most similar to `query`, best first (a blank query finds nothing).
        With `ref`, the embedding call is recorded against that chat turn."""
        if not query.strip() or k < 1:
            return []
        matrix = self.matrix()
        vector = np.asarray(self.embedder.embed([query], ref=ref)[0], dtype=np.float32)
        scores = matrix @ vector
        best = np.argsort(-scores, kind="stable")[:k]
        return [Hit(entry=self.entries[i], score=float(scores[i])) for i in best]
