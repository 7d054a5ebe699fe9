"""What an order is: its number, items and status as the tools show them, the validation of an
order from an import or POST /orders, and the CSV and JSON-lines forms a file gives it in."""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# "A-10234": one letter, a hyphen, five digits. Customers also type "a10234" or "#A-10234".
ORDER_NUMBER = re.compile(r"^#?\s*([A-Z])-?(\d{5})$", re.IGNORECASE)


# The same shape inside free text, for finding order numbers in a chat message.
ORDER_NUMBER_IN_TEXT = re.compile(r"(?<![\w-])#?([A-Z])-?(\d{5})(?![\w-])", re.IGNORECASE)


MAX_ITEMS = 200


# The columns of an import file (CSV header or JSON keys); see OrderIn.
COLUMNS = (
    "order_number",
    "user_id",
    "status",
    "items",
    "total_usd",
    "placed_at",
    "shipped_at",
    "delivered_at",
    "carrier",
    "tracking_number",
)


@dataclass(frozen=True, slots=True)
class OrderItem:
    name: str
    qty: int
    unit_usd: float


@dataclass(frozen=True, slots=True)
class OrderView:
    """One order as support sees it."""

    order_number: str
    user_id: str
    status: str
    items: tuple[OrderItem, ...]
    total_usd: float
    placed_at: datetime
    shipped_at: datetime | None
    delivered_at: datetime | None
    carrier: str | None
    tracking_number: str | None


def normalize_order_number(text: str) -> str | None:
    """The canonical form ("A-10234") of an order number as a customer may type it, or None
    when `text` is not an order number."""
    match = ORDER_NUMBER.match(text.strip())
    return f"{match[1].upper()}-{match[2]}" if match else None


def order_numbers_in(text: str) -> list[str]:
    """The order numbers mentioned in free text, canonical and in order of first mention."""
    found = (f"{m[1].upper()}-{m[2]}" for m in ORDER_NUMBER_IN_TEXT.finditer(text))
    return list(dict.fromkeys(found))


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


class OrderItemIn(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    qty: int = Field(ge=1, le=100_000)
    unit_usd: float = Field(ge=0, le=1_000_000)

    _unit_finite = field_validator("unit_usd")(_finite)


class OrderIn(BaseModel):
    """One order as the import, `POST /orders` and the orders API give it. Times are ISO 8601;
    a time without an offset is taken as UTC. Unknown fields are ignored."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="ignore")

    order_number: str = Field(description='One letter, a hyphen, five digits: "A-10234".')
    user_id: str = Field(min_length=1, max_length=128, description="The customer's user id.")
    status: Literal["placed", "paid", "shipped", "delivered", "returned", "cancelled"]
    items: list[OrderItemIn] = Field(min_length=1, max_length=MAX_ITEMS)
    total_usd: float = Field(ge=0, le=100_000_000)
    placed_at: datetime
    shipped_at: datetime | None = None
    delivered_at: datetime | None = None
    carrier: str | None = Field(default=None, max_length=32)
    tracking_number: str | None = Field(default=None, max_length=64)

    _total_finite = field_validator("total_usd")(_finite)

    @field_validator("order_number")
    @classmethod
    def _number(cls, value: str) -> str:
        number = normalize_order_number(value)
        if number is None:
            raise ValueError(f"{value!r} is not an order number like A-10234")
        return number

    @field_validator("placed_at", "shipped_at", "delivered_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)

    @field_validator("carrier", "tracking_number", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _in_order(self) -> OrderIn:
        if self.shipped_at is not None and self.shipped_at < self.placed_at:
            raise ValueError("shipped_at is before placed_at")
        if self.delivered_at is not None and self.delivered_at < (
            self.shipped_at or self.placed_at
        ):
            raise ValueError("delivered_at is before it shipped or was placed")
        return self

    def view(self) -> OrderView:
        return OrderView(
            order_number=self.order_number,
            user_id=self.user_id,
            status=self.status,
            items=tuple(OrderItem(i.name, i.qty, i.unit_usd) for i in self.items),
            total_usd=self.total_usd,
            placed_at=self.placed_at,
            shipped_at=self.shipped_at,
            delivered_at=self.delivered_at,
            carrier=self.carrier,
            tracking_number=self.tracking_number,
        )


def validation_reason(error: ValidationError) -> str:
    """A pydantic error as one line: "status: Input should be ...; placed_at: ..."."""
    parts = []
    for problem in error.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "order"
        message = str(problem["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)[:MAX_REASON_CHARS]


def _items_cell(text: str) -> Any:
    """A CSV `items` cell: a JSON list, or "2 x Socks @ 5.00; 1 x Shoes @ 89"."""
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    items = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        match = re.fullmatch(r"(\d+)\s*[x×]\s*(.+?)\s*@\s*\$?([\d.]+)", part)
        if match is None:
            raise ValueError(f"item {part!r} is not like '2 x Socks @ 5.00'")
        items.append({"qty": int(match[1]), "name": match[2], "unit_usd": float(match[3])})
    return items


def _csv_records(lines: Iterable[str], report: ImportReport) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(lines)
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    report.ignored_columns = [h for h in header if h and h not in COLUMNS]
    missing = [
        c for c in ("order_number", "user_id", "status", "items", "placed_at") if c not in header
    ]
    if missing:
        raise ValueError(f"the CSV header lacks the column(s) {', '.join(missing)}")
    line = 2
    for record in reader:
        # An empty cell is a missing value ("Field required" for a required column).
        row = {k: v for k, v in record.items() if k and v is not None and v.strip()}
        if row.get("items") is not None:
            try:
                row["items"] = _items_cell(str(row["items"]))
            except ValueError as error:
                yield line, ValueError(f"items: {error}")
                line = reader.line_num + 1
                continue
        yield line, row
        line = reader.line_num + 1


def _jsonl_records(lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as error:
            yield number, ValueError(f"not valid JSON ({error.msg} at column {error.colno})")


def file_format(path: Path, head: str) -> Literal["csv", "jsonl"]:
    """CSV or JSON lines, from the file name, else from the first character."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "jsonl" if head.lstrip().startswith("{") else "csv"


MAX_REASON_CHARS = 300


@dataclass(frozen=True, slots=True)
class Rejected:
    line: int  # the file's line (CSV: where the row starts), or the position in a list
    order_number: str | None
    reason: str


@dataclass
class ImportReport:
    """What an import or `upsert_orders` did."""

    read: int = 0
    inserted: int = 0
    updated: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    written: bool = True  # False for a dry run

    def summary(self) -> str:
        verb = "written" if self.written else "would be written (dry run)"
        text = (
            f"{self.read} rows read: {self.inserted} new, {self.updated} updated {verb}, "
            f"{len(self.rejected)} rejected"
        )
        if self.ignored_columns:
            text += f"; ignored columns: {', '.join(self.ignored_columns)}"
        return text
