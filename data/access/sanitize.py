"""Untrusted text made inert: Markdown escaping for the pages (no HTML, no image fetch, no live
link, no Streamlit directive), CSV cells that a spreadsheet will not run as formulas, and PII
masking (e-mail addresses, phone numbers, card numbers) for reviewers and exports."""

from __future__ import annotations

import csv
import re
import unicodedata
from typing import Any

import pandas as pd

# Characters that open Markdown or Streamlit constructs anywhere in a line: emphasis and code
# (* _ ` ~), links and images ([ ] !), raw HTML and autolinks (< >), entities (&), tables (|),
# math ($), headings (#), emoji, icons and colored text (:), and the backslash itself.
_INLINE = re.compile(r"([\\`*_~\[\]!<>&|$#:])")
# Characters that only mean something at the start of a line: list bullets and setext or
# thematic rules (- + =), and ordered lists (1. or 1)).
_LINE_START = re.compile(r"^(\s*)([-+=])", re.MULTILINE)
_ORDERED = re.compile(r"^(\s*\d+)([.)])", re.MULTILINE)
# C0 and C1 control characters other than tab and newline; bidi overrides and zero-width ones
# that can disguise text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


# Letters and symbols that draw nothing: the Hangul fillers, the halfwidth filler and the blank
# Braille pattern (their categories say "letter" or "symbol", but a message of them is empty).
_BLANK_GLYPHS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Categories of characters that draw nothing on their own: controls, format characters
# (zero-width spaces and joiners, bidi marks, the BOM), surrogates, separators and combining
# marks with nothing to combine with.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp", "Mn", "Me"})


def is_blank(text: str | None) -> bool:
    """True when `text` shows nothing a person could read: empty, white space, or only
    zero-width, control, combining or filler characters. Such a message is refused like a
    blank one (a zero-width space passes `str.strip`)."""
    return not any(
        unicodedata.category(c) not in _INVISIBLE and c not in _BLANK_GLYPHS for c in text or ""
    )


def plain(text: Any) -> str:
    """`text` as a string without control characters (tabs and newlines kept)."""
    return _CONTROL.sub("", "" if text is None else str(text)).replace("\r\n", "\n")


def md(text: Any) -> str:
    """Escape `text` for st.markdown / st.caption / st.info and friends, so that it is shown
    exactly as typed: every construct is backslash-escaped and line breaks are kept."""
    escaped = _INLINE.sub(r"\\\1", plain(text).replace("\r", "\n"))
    escaped = _ORDERED.sub(r"\1\\\2", _LINE_START.sub(r"\1\\\2", escaped))
    # Leading spaces would make an indented code block; a hard break keeps each line.
    escaped = re.sub(r"^[ \t]+", lambda m: "\u00a0" * len(m.group(0)), escaped, flags=re.M)
    return escaped.replace("\n", "  \n")


# CSV ------------------------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell that a spreadsheet shows as text: strings that start with = + - @ tab or CR get
    a leading apostrophe (OWASP's advice for CSV injection). Numbers stay numbers."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_bytes(frame: pd.DataFrame, *, mask: bool = False) -> bytes:
    """The frame as UTF-8 CSV with every text cell escaped (and PII masked when `mask`)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            values = out[column].map(lambda v: mask_pii(v) if mask and isinstance(v, str) else v)
            out[column] = values.map(csv_cell).astype(object)
    out.columns = [csv_cell(str(c)) for c in out.columns]
    # Every text cell quoted: a lone CR inside a cell would otherwise end the row.
    return out.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC).encode()


# PII ------------------------------------------------------------------------------------------

_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")
# 13-19 digits, optionally grouped by spaces or dashes (card numbers, checked with Luhn).
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
# Phone numbers: an optional +country code, then 7-15 digits in groups (spaces, dots, dashes,
# parentheses); order numbers like A-10234 have a letter prefix and are left alone.
_PHONE = re.compile(
    r"(?<![\w-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}\b"
)


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{2}[./-]\d{2}[./-]\d{4}|\d{4}[./]\d{2}[./]\d{2}")


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        n = int(char)
        if index % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if not _luhn(digits):
        return match.group(0)
    return f"[card ••••{digits[-4:]}]"


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    if _DATE.fullmatch(text) or not 7 <= len(digits) <= 15:
        return text
    if len(digits) < 9 and not text.startswith(("+", "(")):
        return text  # a short number without a country or area code: an amount, an id
    return f"[phone ••{digits[-2:]}]"


def mask_pii(text: Any) -> str:
    """E-mail addresses, card numbers (Luhn-valid) and phone numbers replaced by a masked
    form that keeps a hint (the first letter, the last digits)."""
    value = "" if text is None else str(text)
    value = _EMAIL.sub(lambda m: f"[email {m.group(1)}…]", value)
    value = _CARD.sub(_card, value)
    return _PHONE.sub(_phone, value)
