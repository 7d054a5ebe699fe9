"""Critical facts of a support conversation, pulled out of each message before it can be folded.

Seed 6.3 asks for an `after_model` step that extracts entities before summarization drops them.
The extractor is deterministic pattern matching, not a model call: it costs nothing, runs in
microseconds, behaves the same with the 135M local model (which cannot extract reliably) as with
GPT-4o, and a test can state exactly which facts must survive. It keeps the kinds the issue names:
order numbers, names, e-mail addresses, promises made, and the customer's stated problem.
Each fact is a short sentence for the prompt, searched by the customer's own sentence it came
from: that is what a later question resembles, and the recall of the same message has usually
just embedded it, so storing the fact needs no second model run."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_FACT_CHARS = 300

# Customers type order numbers in either case ("a-10234"); identifier() upper-cases them.
ORDER_RE = re.compile(r"(?<![\w-])(?:#\s?(\d{5,10})|([A-Z]{1,4}-\d{3,10}))(?![\w-])", re.IGNORECASE)
EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}(?![\w-])")
NAME_RE = re.compile(
    r"\b(?:my name is|my name's|i am called|call me|this is)\s+"
    r"((?:[A-Z][a-z'’-]+)(?:\s+[A-Z][a-z'’-]+){0,2})"
)
# "card ending in 4242", "card ending 4242", "last four digits 4242", "last 4 digits are 4242"
CARD_RE = re.compile(
    r"\b(?:card\s+(?:number\s+)?end(?:s|ing)\s+(?:in\s+|with\s+)?|"
    r"last\s+(?:four|4)\s+digits\s+(?:of\s+my\s+card\s+)?(?:are\s+|is\s+)?)(\d{4})\b",
    re.IGNORECASE,
)
PHONE_RE = re.compile(r"(?<!\w)(\+?\d[\d ()-]{7,}\d)(?!\w)")
# A customer sentence that states a problem.
PROBLEM_RE = re.compile(
    r"\b(broken|damaged|defective|faulty|cracked|missing|never arrived|hasn'?t arrived|"
    r"not arrived|late|delayed|lost|wrong|not working|doesn'?t work|does not work|stopped working|"
    r"won'?t|can'?t|cannot|unable|error|charged twice|double charged|overcharged|refund|return|"
    r"problem|issue|complain)\b",
    re.IGNORECASE,
)
# An agent sentence that commits to something.
PROMISE_RE = re.compile(
    r"\b(i will|i'll|we will|we'll|i have (?:opened|escalated|issued|sent|arranged|refunded)|"
    r"we have (?:opened|escalated|issued|sent|arranged|refunded)|you will (?:receive|get)|"
    r"you'll (?:receive|get)|is on its way|will be (?:refunded|replaced|shipped|credited))\b",
    re.IGNORECASE,
)
SENTENCE_RE = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True, slots=True)
class Fact:
    """One fact worth keeping: `kind` is order_number, email, card, name, phone, problem or promise.
    `keys` are the identifiers in it (order numbers, e-mail addresses), normalised with
    `identifier()`, so that a later message naming one recalls it exactly."""

    kind: str
    text: str
    keys: tuple[str, ...] = ()
    embed_text: str = ""  # the sentence the fact came from: what its memory is searched by


def identifier(text: str) -> str:
    """The form an identifier is stored and looked up in: upper case, no '#', no spaces."""
    return text.strip().lstrip("#").replace(" ", "").upper()


def identifiers(text: str) -> list[str]:
    """The order numbers and e-mail addresses in a message, normalised, each once."""
    found = [identifier(m.group(1) or m.group(2)) for m in ORDER_RE.finditer(text)]
    found += [identifier(e) for e in EMAIL_RE.findall(text)]
    return list(dict.fromkeys(found))


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_RE.split(text) if s and s.strip()]


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_FACT_CHARS else text[: MAX_FACT_CHARS - 1] + "…"


def extract_facts(text: str, *, role: str) -> list[Fact]:
    """The facts in one message. `role` is "user" (the customer) or "assistant" (the agent).

    Identifiers (orders, e-mails, names, phones) come from the customer's messages; promises
    come from the agent's. Duplicates within the message are dropped, order is kept."""
    facts: list[Fact] = []
    seen: set[str] = set()

    def add(kind: str, fact: str, *keys: str, source: str = "") -> None:
        fact = _clip(fact)
        if fact.lower() not in seen:
            seen.add(fact.lower())
            keyed = tuple(identifier(key) for key in keys)
            facts.append(Fact(kind, fact, keyed, _clip(source) if source else fact))

    if role == "user":
        for sentence in _sentences(text):
            for match in ORDER_RE.finditer(sentence):
                number = match.group(1) or match.group(2)
                add(
                    "order_number",
                    f"The customer's order number is {number}: “{sentence}”",
                    number,
                    source=sentence,
                )
            for email in EMAIL_RE.findall(sentence):
                add("email", f"The customer's e-mail address is {email}.", email, source=sentence)
            for digits in CARD_RE.findall(sentence):
                # Only the last four digits a customer gives to identify a card, never more.
                add("card", f"The customer's card ends in {digits}.", source=sentence)
            for name in NAME_RE.findall(sentence):
                add("name", f"The customer's name is {name}.", source=sentence)
            for phone in PHONE_RE.findall(sentence):
                digits = re.sub(r"\D", "", phone)
                # A leading + or 10+ digits: dates and amounts are not phone numbers.
                international = phone.strip().startswith("+") and len(digits) >= 8
                if (international or len(digits) >= 10) and len(digits) <= 15:
                    add(
                        "phone", f"The customer's phone number is {phone.strip()}.", source=sentence
                    )
            if PROBLEM_RE.search(sentence) and len(sentence) >= 12:
                keys = [m.group(1) or m.group(2) for m in ORDER_RE.finditer(sentence)]
                add("problem", f"The customer's problem: “{sentence}”", *keys, source=sentence)
    elif role == "assistant":
        for sentence in _sentences(text):
            if PROMISE_RE.search(sentence):
                add("promise", f"The agent promised the customer: “{sentence}”", source=sentence)
    return facts
