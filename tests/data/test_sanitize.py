"""Markdown escaping, CSV cell escaping and PII masking, checked against what each construct
would do."""

from __future__ import annotations

import csv
import io

import pandas as pd
import pytest

from data.access.sanitize import csv_bytes, csv_cell, mask_pii, md, plain
from tests.helpers.hostile import PAYLOADS, live_markup


@pytest.mark.parametrize("payload", PAYLOADS)
def test_every_payload_is_escaped(payload: str) -> None:
    escaped = md(payload)
    assert not live_markup(escaped)
    # Undoing the escapes gives back the text as typed (without control characters).
    restored = escaped.replace("  \n", "\n").replace("\u00a0", " ")
    restored = "".join(
        c for i, c in enumerate(restored) if not (c == "\\" and i + 1 < len(restored))
    )
    expected = plain(payload).replace("\r", "\n").replace("\t", " ")  # leading tabs: spaces
    assert restored.replace("\\", "").replace("\t", " ") == expected.replace("\\", "")


def test_streamlit_directives_and_line_starts() -> None:
    assert md(":red[x] :material/home:") == "\\:red\\[x\\] \\:material/home\\:"
    assert md("- a\n+ b\n1. c\n2) d\n===") == "\\- a  \n\\+ b  \n1\\. c  \n2\\) d  \n\\==="
    assert md("B-7731 costs 4.50 (paid)") == "B-7731 costs 4.50 (paid)"  # plain text stays


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\t=x", "\r=x"])
def test_csv_formula_cells_are_escaped(cell: str) -> None:
    frame = pd.DataFrame({"text": [cell, "plain"], "n": [-1, 2]})
    rows = list(csv.reader(io.StringIO(csv_bytes(frame).decode())))
    assert rows[1][0] == "'" + cell and rows[2][0] == "plain"
    assert rows[1][1] == "-1"  # numbers stay numbers
    assert csv_cell(-5) == -5


def test_csv_headers_and_masking() -> None:
    frame = pd.DataFrame({"=evil": ["mail me at ann@example.com"]})
    rows = list(csv.reader(io.StringIO(csv_bytes(frame, mask=True).decode())))
    assert rows == [["'=evil"], ["mail me at [email a…]"]]


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("write to john.doe+x@mail.example.org now", "write to [email j…] now"),
        ("call +44 20 7946 0958", "call [phone ••58]"),
        ("call (415) 555-2671", "call [phone ••71]"),
        ("call 0151 496 0123 please", "call [phone ••23] please"),
        ("card 4111-1111-1111-1111 ok", "card [card ••••1111] ok"),
        ("card 4242424242424242", "card [card ••••4242]"),
        # Not PII: order numbers, dates, amounts, a 16-digit number failing Luhn.
        ("order A-10234 on 2026-11-30 for 1234.56", "order A-10234 on 2026-11-30 for 1234.56"),
        ("ref 1234567812345678", "ref 1234567812345678"),
        ("tracking 1Z999AA10123456784", "tracking 1Z999AA10123456784"),
    ],
)
def test_pii_masking(text: str, masked: str) -> None:
    assert mask_pii(text) == masked
