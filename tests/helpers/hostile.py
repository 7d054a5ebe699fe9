"""A corpus of hostile inputs (markup, scripts, outside fetches, directives, control
characters, huge and odd values) and the checks that they stayed inert."""

from __future__ import annotations

import re

from sqlalchemy import Engine

from data.store.conversations import add_assistant_message, start_turn
from data.store.recorder import record_event
from data.store.records import EventRecord

# Outside hosts a fetch would go to; nothing may ever request them.
OUTSIDE = "evil.example"
PAYLOADS = [
    f"![pixel](http://{OUTSIDE}/pixel.png)",
    f"![](https://{OUTSIDE}/t.gif?u=1 'title')",
    f'<img src="http://{OUTSIDE}/x.png" onerror="alert(1)">',
    "<script>alert('xss')</script>",
    '<svg onload="alert(2)"></svg>',
    '<iframe src="javascript:alert(3)"></iframe>',
    "[click me](javascript:alert(4))",
    "[click](JaVaScRiPt:alert(5))",
    "<javascript:alert(6)>",
    f"<http://{OUTSIDE}/autolink>",
    f"[ref][1]\n\n[1]: http://{OUTSIDE}/ref.png",
    f"![ref img][p]\n\n[p]: http://{OUTSIDE}/refimg.png",
    '<a href="javascript:alert(7)">link</a>',
    '<div style="background:url(http://evil.example/bg.png)">bg</div>',
    "<b data-pwned=1>bold html</b>",
    "**bold** _it_ ~~strike~~ `code`",
    "# Heading injection",
    "> quoted\n- list\n1. ordered\n---",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    ":red[colored] :material/warning: :smile:",
    "$$\\int_0^1 x\\,dx$$ and $x^2$",
    "&lt;script&gt;alert(8)&lt;/script&gt;",
    "\\<img src=x onerror=alert(9)\\>",
    "text\x00with\x07control\x1bchars\x7f",
    "bidi \u202eevil\u202c zero\u200bwidth",
    '=HYPERLINK("http://evil.example","x")',
    "+SUM(1,2)",
    "-2+3",
    "@cmd",
    "\t=tab formula",
    "\r=cr formula",
    "'; DROP TABLE users; --",
    "1 OR 1=1",
    "%00%0a%0d",
    "{{7*7}} ${7*7} <%= 7*7 %>",
    "../../etc/passwd",
    "💥" * 200,
    "A" * 5000,
    "",
    "   ",
]
# Elements that only a payload could have put into the page (Streamlit's own page has inline
# scripts, but none that calls alert).
JS_PROBE = """() => {
  const found = document.querySelector(
    "[data-pwned], [onerror], [onload], iframe[src^='javascript' i]");
  if (found) return found.outerHTML.slice(0, 200);
  const script = [...document.querySelectorAll("script")].find(
    s => s.textContent.includes("alert("));
  return script ? script.outerHTML.slice(0, 200) : null;
}"""
_UNESCAPED = re.compile(r"(?<!\\)<|(?<!\\)!(?<!\\)\[|(?<!\\)\]\(|javascript(?<!\\):", re.I)


def live_markup(value: str) -> bool:
    """Whether Markdown text would render markup a payload brought: an HTML tag or autolink,
    an image, a link or a javascript: URL that is not backslash-escaped."""
    return bool(_UNESCAPED.search(value))


def import_hostile(engine: Engine, *, session_id: str, user_id: str) -> list[int]:
    """A conversation whose every text field is a payload: user and assistant messages, the
    recalled memories, a summary, tool arguments and errors (imported data). Returns the
    assistant message ids."""
    ids: list[int] = []
    for n, payload in enumerate(p for p in PAYLOADS[:20] if p.strip()):
        turn = start_turn(engine=engine, session_id=session_id, user_id=user_id, text=payload)
        add_assistant_message(
            engine=engine,
            session_id=session_id,
            turn=turn,
            text=f"answer {n}: {payload}",
            run_id=None,
        )
        if n == 0:
            record_event(
                engine=engine,
                event=EventRecord(
                    user_id=user_id,
                    session_id=session_id,
                    turn=turn,
                    kind="memory_recall",
                    name="memory",
                    latency_ms=3.0,
                    hits=2,
                    detail={"memories": [{"text": p, "score": 0.8} for p in PAYLOADS[:6]]},
                ),
            )
            record_event(
                engine=engine,
                event=EventRecord(
                    user_id=user_id,
                    session_id=session_id,
                    turn=turn,
                    kind="tool_call",
                    name="<b data-pwned=1>tool</b>",
                    latency_ms=4.0,
                    status="error",
                    error=PAYLOADS[2],
                    detail={"args": {"q": PAYLOADS[0]}},
                ),
            )
            record_event(
                engine=engine,
                event=EventRecord(
                    user_id=user_id,
                    session_id=session_id,
                    turn=turn,
                    kind="summarization",
                    name="summary",
                    latency_ms=5.0,
                    model="m",
                    tokens_before=100,
                    tokens_after=10,
                    messages_folded=4,
                    detail={"summary": PAYLOADS[0] + " " + PAYLOADS[6]},
                ),
            )
    from sqlalchemy import select

    from data.store.orm import Message

    with engine.connect() as connection:
        ids = list(
            connection.execute(
                select(Message.id).where(
                    Message.session_id == session_id, Message.role == "assistant"
                )
            ).scalars()
        )
    return ids


# URL parameters: every edge a shared link can have.
URL_PARAMS: list[dict[str, str | list[str]]] = [
    {"range": "custom", "from": "9999-12-31", "to": "9999-12-31"},
    {"range": "custom", "from": "2026-01-01", "to": "9999-12-31"},
    {"range": "custom", "from": "0001-01-01", "to": "0001-01-01"},
    {"range": "custom", "from": "0001-01-01", "to": "2026-11-30"},
    {"range": "custom", "from": "2024-02-29", "to": "2024-03-01"},
    {"range": "custom", "from": "2023-02-29", "to": "2023-03-01"},
    {"range": "custom", "from": "2026-13-01", "to": "2026-12-01"},
    {"range": "custom", "from": "2026-12-31", "to": "2026-01-01"},
    {"range": "custom", "from": "", "to": ""},
    {"range": "custom"},
    {"range": "custom", "from": "1970-01-01T00:00:00", "to": "now"},
    {"range": "custom", "from": "-1", "to": "+1"},
    {"range": "custom", "from": "2026-11-01\x00", "to": "2026-11-02"},
    {"range": ["7d", "30d", "24h"]},
    {"range": ["custom", "bogus"]},
    {"range": "x" * 10_000},
    {"range": ""},
    {"range": "<script>alert(1)</script>"},
    {"range": f"![x](http://{OUTSIDE}/r.png)"},
    {"model": ["nope"] * 50},
    {"model": ",".join(f"m{n}" for n in range(500))},
    {"model": f"<img src=http://{OUTSIDE}/m.png>"},
    {"model": ""},
    {"user": "u" * 129},
    {"user": "x" * 100_000},
    {"user": "\x00\x01\x1b[31m"},
    {"user": f"[a](javascript:alert(1)) ![b](http://{OUTSIDE}/u.png)"},
    {"user": ["a", "b", "c"]},
    {"session": "s" * 129},
    {"session": "'; DROP TABLE model_calls; --"},
    {"session": f"<svg onload=alert(1)>{OUTSIDE}"},
    {"grain": "minute"},
    {"grain": "hour", "range": "90d"},
    {"grain": ["hour", "day"]},
    {"grain": ":material/warning:"},
    {"unknown": "param", "range": "24h"},
    {"range": "24h", "from": "2026-01-01"},
    {"range": "%00"},
    {"range": "7d", "model": "SmolLM2-135M-Instruct", "user": "guest", "session": "x"},
    {"range": "\u202e7d"},
]
