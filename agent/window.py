"""The model's input window: how requests are counted and the budgets that keep them inside it.

A request is the system prompt, the conversation's messages, and what memory recall adds to the
request (memories, an order, a help-center entry). Summarization decides on the conversation's
messages before recall runs, so the injected text gets a fixed reserve instead of a count. The
budgets, as shares of the model's input window:

- `INJECT_SHARE` (15 %): the most that recall may add to one request; MemoryMiddleware cuts its
  block to fit.
- `MESSAGE_SHARE` (50 %): the largest single customer message. A longer one is refused before
  anything is stored or sent: there is no room left for the summary, the memories and the answer.
- the keep budget (`SUMMARY_KEEP_BUDGET_FRACTION`, 40 % by default): when keeping the configured
  number of recent messages would itself pass the trigger, the fold keeps only as many recent
  messages as fit in this budget (never fewer than the current exchange).

Tokens are counted with the serving model's own tokenizer where the server has one (the embedded
llama.cpp server's `/extras/tokenize/count`), and with LangChain's approximate counter otherwise.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import count_tokens_approximately

log = logging.getLogger(__name__)

INJECT_SHARE = 0.15
MESSAGE_SHARE = 0.50
# ChatML adds the assistant prompt after the last message.
_GENERATION_PROMPT_TOKENS = 3
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}

# (role, text) -> tokens, by the serving model's tokenizer
TextCounter = Callable[[str, str], int]


class ContextWindowExceeded(RuntimeError):
    """A request would not fit the model's input window; it was not sent (the text says why)."""


class MessageTooLong(ValueError):
    """One message alone takes more of the window than a message may (the text says how much)."""

    def __init__(self, message: str, *, tokens: int, limit: int) -> None:
        super().__init__(message)
        self.tokens = tokens
        self.limit = limit


class WindowCounter:
    """Counts the tokens of messages for one model: by its server's tokenizer when given one
    (each message once, remembered), approximately otherwise."""

    def __init__(self, *, window: int, count_text: TextCounter | None = None) -> None:
        self.window = window
        self.count_text = count_text
        self._cache: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def exact(self) -> bool:
        return self.count_text is not None

    @property
    def method(self) -> str:
        return "server tokenizer" if self.exact else "approximate"

    def message_tokens(self, role: str, text: str) -> int:
        if self.count_text is None:
            return int(count_tokens_approximately([(role, text)]))
        key = (role, text)
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        try:
            tokens = self.count_text(role, text)
        except Exception as error:  # the server is down: the model call will say so
            log.warning("token count by the server failed, counted approximately: %s", error)
            return int(count_tokens_approximately([(role, text)]))
        with self._lock:
            self._cache[key] = tokens
            while len(self._cache) > 20_000:
                self._cache.popitem(last=False)
        return tokens

    def __call__(self, messages: Sequence[BaseMessage]) -> int:
        """Tokens of `messages` as one request (the `token_counter` SummarizationMiddleware
        takes)."""
        if self.count_text is None:
            return int(count_tokens_approximately(list(messages)))
        total = sum(self.message_tokens(_ROLES.get(m.type, m.type), _text(m)) for m in messages)
        return total + _GENERATION_PROMPT_TOKENS

    def approximate(self, messages: Sequence[BaseMessage]) -> int:
        return int(count_tokens_approximately(list(messages)))

    # Budgets ---------------------------------------------------------------------------------

    @property
    def inject_tokens(self) -> int:
        return int(self.window * INJECT_SHARE)

    @property
    def message_limit(self) -> int:
        return int(self.window * MESSAGE_SHARE)

    def check_message(self, text: str) -> int:
        """The message's tokens, or MessageTooLong when it alone takes more than its share."""
        tokens = self.message_tokens("user", text)
        if tokens > self.message_limit:
            raise MessageTooLong(
                f"This message is {tokens:,} tokens long; one message may use at most "
                f"{self.message_limit:,} tokens (half of the model's {self.window:,}-token input "
                "window), so it was not sent. Shorten it or send it in parts.",
                tokens=tokens,
                limit=self.message_limit,
            )
        return tokens


def _text(message: BaseMessage) -> str:
    text = str(message.text)
    calls: Any = getattr(message, "tool_calls", None)
    if calls:  # tool calls travel as JSON arguments beside the text
        text += "".join(f"{c.get('name')}({c.get('args')})" for c in calls)
    return text
