"""The fact extractor keeps exactly the kinds of facts the issue names, from the right speaker."""

from __future__ import annotations

from agent.facts import extract_facts


def kinds(text: str, role: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for fact in extract_facts(text, role=role):
        out.setdefault(fact.kind, []).append(fact.text)
    return out


def test_customer_identifiers_and_problem() -> None:
    found = kinds(
        "Hi, my name is Dana Whitfield. My order A-10234 arrived with a cracked screen. "
        "You can reach me at dana.w+shop@example.co.uk or +44 20 7946 0958.",
        "user",
    )
    assert any("A-10234" in f for f in found["order_number"])
    assert found["name"] == ["The customer's name is Dana Whitfield."]
    assert found["email"] == ["The customer's e-mail address is dana.w+shop@example.co.uk."]
    assert found["phone"] == ["The customer's phone number is +44 20 7946 0958."]
    assert any("cracked screen" in f for f in found["problem"])


def test_hash_order_numbers_and_no_false_identifiers() -> None:
    found = kinds("Order #4471902 never arrived", "user")
    assert any("4471902" in f for f in found["order_number"])
    assert "problem" in found
    # A greeting states no fact; a date or a price is not an order number.
    assert kinds("Hello there, thanks!", "user") == {}
    assert kinds("I paid on 2024-05-01, 49.99 in total", "user") == {}


def test_promises_come_from_the_agent_only() -> None:
    said = "I will send you a replacement by Friday. Is there anything else?"
    assert kinds(said, "assistant") == {
        "promise": ["The agent promised the customer: “I will send you a replacement by Friday.”"]
    }
    # The customer saying "I will" is not the agent's promise, and the agent's mention of an
    # order is not the customer's identifier.
    assert "promise" not in kinds("I will wait for your answer.", "user")
    assert kinds("Your order A-10234 has shipped.", "assistant") == {}


def test_facts_are_deduplicated_and_clipped() -> None:
    facts = extract_facts("My order A-1111 is late. My order A-1111 is late.", role="user")
    texts = [f.text for f in facts]
    assert len(texts) == len(set(texts))
    long = "My order A-2222 is broken " + "very " * 200
    assert all(len(f.text) <= 300 for f in extract_facts(long, role="user"))
