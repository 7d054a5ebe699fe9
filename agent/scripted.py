"""A scripted, instant chat model: LangChain's FakeMessagesListChatModel that accepts tools,
has an input window, reports usage and keeps every prompt it was sent.

It is what the tests and `bench/turn_overhead.py` put in place of a real model, so that they
measure and check everything around the model (middleware, memory, tools, recording) with the
model's time taken out. It is never used by the app."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

Reply = Callable[[list[BaseMessage]], AIMessage]


class ScriptedChatModel(FakeMessagesListChatModel):
    """Answers from `responses` in turn (cycling), or from `reply(messages)` when given."""

    reply: Reply | None = None
    prompts: list[list[BaseMessage]] = Field(default_factory=list)
    model_name: str = "scripted"

    def __init__(self, *, window: int = 8_000, **kwargs: Any) -> None:
        kwargs.setdefault("responses", [AIMessage("OK")])
        super().__init__(**kwargs)
        # SummarizationMiddleware's fraction trigger reads the input window from the profile.
        self.profile = {"max_input_tokens": window}

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.prompts.append(list(messages))
        message: BaseMessage
        if self.reply is not None:
            message = self.reply(list(messages))
        else:
            message = (
                super()._generate(messages, stop, run_manager, **kwargs).generations[0].message
            )
        prompt = count_tokens_approximately(messages)
        answer = count_tokens_approximately([message])
        usage = {"input_tokens": prompt, "output_tokens": answer, "total_tokens": prompt + answer}
        # A fresh copy each time: the same scripted message must not share an id across turns.
        message = message.model_copy(update={"usage_metadata": usage, "id": None})
        return ChatResult(generations=[ChatGeneration(message=message)])
