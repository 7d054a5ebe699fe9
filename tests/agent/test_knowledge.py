"""The team's help center (KB_DIR) on the real local embedder: its articles are parsed and
searched like the built-in ones, the vectors are stored and reused while the folder is
unchanged, a change is re-indexed at start-up and while running, the index command, and the
article an answer used shown under it on the chat page."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, select
from streamlit.testing.v1 import AppTest

from agent.embedding_base import Embedder
from agent.knowledge import KnowledgeBase, from_settings, main, read_folder
from data.config.settings import SettingsError, get_settings, load_settings
from data.store.db import make_engine
from data.store.orm import AgentEvent
from data.store.orm_support import SupportTicket
from tests.helpers.embedders import Counting
from tests.helpers.pages import run
from tests.helpers.servers import APP
from tests.helpers.support import SupportChat

RETURNS = """# Returns at Nordpeak

## How long do I have to return a jacket?
Jackets can be returned within 60 days of delivery if they are unworn, with the tags on.
Print the label from your account and drop the parcel at any post office.

## Can I return a worn climbing harness?
No. For safety reasons a harness that was worn cannot be returned, only exchanged unworn.
"""
REPAIRS = """# Free repairs for life

Nordpeak repairs zips, seams and buckles of its own gear for free, for as long as you own it.
Send the item with the repair form; repairs take about three weeks including shipping.
"""
STORES = """Opening hours of the Bergen store
The Bergen flagship store opens Monday to Saturday from 10:00 to 18:00 and is closed on Sundays.
"""


@pytest.fixture
def kb_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "help"
    (folder / "care").mkdir(parents=True)
    (folder / "returns.md").write_text(RETURNS, encoding="utf-8")
    (folder / "care" / "repairs.md").write_text(REPAIRS, encoding="utf-8")
    (folder / "stores.txt").write_text(STORES, encoding="utf-8")
    (folder / ".drafts").mkdir()
    (folder / ".drafts" / "secret.md").write_text("# Draft\n\nnot published yet", encoding="utf-8")
    (folder / "broken.md").write_bytes(b"# Broken\n\n\xff\xfe not utf-8")
    (folder / "notes.pdf").write_bytes(b"%PDF-1.4")
    return folder


def test_the_teams_articles_are_read(kb_dir: Path) -> None:
    folder = read_folder(kb_dir)
    assert folder.articles == 3
    assert [(e.file, e.topic, e.title) for e in folder.entries] == [
        ("care/repairs.md", "repairs", "Free repairs for life"),
        ("returns.md", "Returns at Nordpeak", "How long do I have to return a jacket?"),
        ("returns.md", "Returns at Nordpeak", "Can I return a worn climbing harness?"),
        ("stores.txt", "stores", "Opening hours of the Bergen store"),
    ]
    assert folder.entries[0].id == "care/repairs/free-repairs-for-life"
    assert folder.entries[1].text.startswith("Jackets can be returned within 60 days")
    assert folder.problems == ["broken.md: cannot be read (UnicodeDecodeError), skipped"]
    with pytest.raises(SettingsError, match=r"KB_DIR=.*not a folder"):
        load_settings(kb_dir=kb_dir / "returns.md")


def test_vectors_are_stored_reused_and_redone_when_the_folder_changes(
    kb_dir: Path, tmp_path: Path, shared_embedder: Embedder
) -> None:
    index = tmp_path / "index"
    counting = Counting(shared_embedder)
    first = KnowledgeBase(embedder=counting, directory=kb_dir, index_dir=index)
    hits = first.search("I wore my harness once, can I send it back?", k=1)
    assert hits[0].entry.title == "Can I return a worn climbing harness?"
    assert [len(batch) for batch in counting.calls] == [4, 1]  # the entries, then the query
    # A restart with the folder unchanged embeds nothing but the query.
    counting.calls.clear()
    again = KnowledgeBase(embedder=counting, directory=kb_dir, index_dir=index)
    assert again.search("when is the Bergen shop open on saturday", k=1)[0].entry.file == (
        "stores.txt"
    )
    assert [len(batch) for batch in counting.calls] == [1]
    # A change while stopped: the next start-up re-indexes.
    (kb_dir / "stores.txt").write_text(STORES.replace("18:00", "19:00"), encoding="utf-8")
    counting.calls.clear()
    restarted = KnowledgeBase(embedder=counting, directory=kb_dir, index_dir=index)
    assert restarted.content_hash != again.content_hash
    restarted.matrix()
    assert [len(batch) for batch in counting.calls] == [4]


def test_a_file_changed_while_running_is_found_without_a_restart(
    kb_dir: Path, tmp_path: Path, shared_embedder: Embedder
) -> None:
    knowledge = KnowledgeBase(
        embedder=shared_embedder, directory=kb_dir, index_dir=tmp_path / "i", recheck_s=0
    )
    question = "Do you sell gift cards?"
    assert knowledge.search(question, k=1)[0].score < 0.5
    (kb_dir / "gift-cards.md").write_text(
        "# Gift cards\n\nNordpeak gift cards come in 25, 50 and 100 euro and never expire. "
        "Buy them in any store or online.\n",
        encoding="utf-8",
    )
    best = knowledge.search(question, k=1)[0]
    assert (best.entry.title, best.entry.file) == ("Gift cards", "gift-cards.md")
    assert best.score > 0.5
    (kb_dir / "gift-cards.md").unlink()
    assert knowledge.search(question, k=1)[0].entry.file != "gift-cards.md"


def test_the_index_command(
    kb_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KB_DIR", str(kb_dir))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    assert main(["index"]) == 0
    out = capsys.readouterr().out
    assert f"help center {kb_dir}: 3 articles, 4 entries, content hash " in out
    assert "(embedded, " in out
    assert "  broken.md: cannot be read (UnicodeDecodeError), skipped" in out
    assert main(["index"]) == 0
    assert "(unchanged, stored vectors reused, " in capsys.readouterr().out
    assert main(["index", "--force"]) == 0
    assert "(embedded, " in capsys.readouterr().out
    monkeypatch.delenv("KB_DIR")
    get_settings.cache_clear()
    assert main(["index"]) == 0
    assert "help center built-in agent/kb: 6 articles, " in capsys.readouterr().out


def test_the_agent_answers_from_the_teams_article_and_records_which(
    engine: Engine, kb_dir: Path, tmp_path: Path, shared_embedder: Embedder
) -> None:
    with engine.begin() as connection:
        connection.execute(delete(SupportTicket))
    settings = load_settings(kb_dir=kb_dir, data_dir=tmp_path / "data")
    knowledge = from_settings(settings, shared_embedder)
    chat = SupportChat(
        engine, tmp_path / "data", embedder=shared_embedder, knowledge=knowledge, tools=False
    )
    try:
        chat.say("ola", "s-ola", "How long can I wait before returning my jacket?")
    finally:
        chat.close()
    prompt = "\n".join(str(m.text) for m in chat.model.prompts[-1])
    assert "## How long do I have to return a jacket?\nJackets can be returned within 60" in prompt
    with engine.connect() as connection:
        detail = connection.execute(
            select(AgentEvent.detail).where(AgentEvent.name == "search_help_center")
        ).scalar_one()
    assert '"file": "returns.md"' in detail and '"title": "How long do I have' in detail


def test_the_chat_page_shows_the_article_an_answer_used(
    app_env: str, kb_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KB_DIR", str(kb_dir))
    at = run(AppTest.from_file(APP, default_timeout=120))
    at.sidebar.text_input(key="user_id").set_value("pia")
    run(at)
    at.chat_input[0].set_value("Is repairing a broken zip on my Nordpeak jacket free?")
    run(at)
    answer = at.chat_message[-1]
    expander = answer.expander[0]
    assert "1 tool call" in expander.label
    assert any(m.value == "**Help-center articles used**" for m in expander.markdown)
    assert [t.value for t in expander.text] == ["Free repairs for life (care/repairs.md)"]
    engine = make_engine(app_env)
    with engine.connect() as connection:
        names = connection.execute(select(AgentEvent.name).where(AgentEvent.kind == "tool_call"))
        assert list(names.scalars()) == ["search_help_center"]
    engine.dispose()
