"""The topic taxonomy conversation outcomes are filed under: TOPICS_FILE, or the default support
taxonomy in data/config/topics.txt. One topic per line, `name: hint words`; `#` starts a comment.
"other" is always a topic, so every verdict has one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DEFAULT_FILE = Path(__file__).with_name("topics.txt")
OTHER = "other"
MAX_TOPICS = 50
_NAME = re.compile(r"^[a-z0-9][a-z0-9 &/-]{0,63}$")


class TopicsError(ValueError):
    """TOPICS_FILE cannot be used (one line naming the file and the line)."""


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    hints: tuple[str, ...]


def parse_topics(text: str, *, source: str = "TOPICS_FILE") -> tuple[Topic, ...]:
    found: dict[str, Topic] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, hints = line.partition(":")
        name = " ".join(name.lower().split())
        if not _NAME.match(name):
            raise TopicsError(
                f"{source} line {number}: {name[:40]!r} is not a topic name (lower-case letters,"
                " digits, spaces, & / -; at most 64 characters)"
            )
        if name in found:
            raise TopicsError(f"{source} line {number}: {name!r} is listed twice")
        words = tuple(h.strip().lower() for h in hints.split(",") if h.strip())
        found[name] = Topic(name, words)
    found.setdefault(OTHER, Topic(OTHER, ()))
    if len(found) > MAX_TOPICS:
        raise TopicsError(f"{source} lists {len(found)} topics; at most {MAX_TOPICS}")
    return tuple(found.values())


@lru_cache(maxsize=8)
def load_topics(path: Path | None = None) -> tuple[Topic, ...]:
    """The taxonomy in `path` (TOPICS_FILE) or the default one; TopicsError says what is wrong."""
    chosen = path or DEFAULT_FILE
    try:
        text = chosen.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TopicsError(f"TOPICS_FILE {chosen} cannot be read: {error}") from None
    return parse_topics(text, source=f"TOPICS_FILE {chosen.name}")


def topic_names(path: Path | None = None) -> list[str]:
    return [t.name for t in load_topics(path)]


def guess_topic(text: str, topics: tuple[Topic, ...]) -> str:
    """The topic whose hint words occur most often in `text` ("other" when none does): the topic
    of a conversation whose outcome the rules decided, with no judge reading it."""
    lowered = " ".join(text.lower().split())
    best, best_hits = OTHER, 0
    for topic in topics:
        hits = sum(lowered.count(h) for h in topic.hints)
        if hits > best_hits:
            best, best_hits = topic.name, hits
    return best
