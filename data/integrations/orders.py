"""Orders the support tools look up, from one of two sources behind one small interface.

- `TableOrders`: the built-in `orders` table, filled by `python -m data.integrations.orders import
FILE`
  (CSV or JSON lines, with a report of the rows it rejected and why), by `upsert_orders` (the
  API's admin-only `POST /orders`) and by the demo generator.
- `HttpOrders`: the team's own orders API at `ORDERS_API_URL` (the contract is in docs/agent.md:
  `GET {url}/customers/{user_id}/orders/{order_number}` and
  `GET {url}/customers/{user_id}/orders?limit=N`).

`order_source(settings, engine=...)` picks one. Every lookup takes the user id and filters on
it, so a caller cannot read another user's order by guessing its number; a source that cannot
answer raises `OrdersUnavailable` with a one-line reason.

    python -m data.integrations.orders import FILE [--db URL] [--dry-run]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import Boolean, Engine, Row, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from data.config.settings import Settings
from data.store.orm_support import Order

log = logging.getLogger(__name__)

# "A-10234": one letter, a hyphen, five digits. Customers also type "a10234" or "#A-10234".
ORDER_NUMBER = re.compile(r"^#?\s*([A-Z])-?(\d{5})$", re.IGNORECASE)
# The same shape inside free text, for finding order numbers in a chat message.
ORDER_NUMBER_IN_TEXT = re.compile(r"(?<![\w-])#?([A-Z])-?(\d{5})(?![\w-])", re.IGNORECASE)
MAX_ITEMS = 200
MAX_RECENT = 50
WRITE_CHUNK = 500
MAX_REASON_CHARS = 300
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


# -- one order, validated ------------------------------------------------------------------


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


# -- the interface the tools call ------------------------------------------------------------


class OrdersUnavailable(RuntimeError):
    """The order source cannot answer now; the message names it and says why (no secrets)."""


class OrderSource(Protocol):
    """Where the support tools read orders. Both methods raise OrdersUnavailable."""

    @property
    def label(self) -> str: ...

    def get_order(self, *, user_id: str, order_number: str) -> OrderView | None:
        """The user's order with this number; None when there is none *for this user*."""
        ...

    def recent_orders(self, *, user_id: str, limit: int = 5) -> list[OrderView]:
        """The user's newest orders, newest first."""
        ...


def _view(row: Row[Any]) -> OrderView:
    return OrderView(
        order_number=row.order_number,
        user_id=row.user_id,
        status=row.status,
        items=tuple(OrderItem(**item) for item in json.loads(row.items)),
        total_usd=row.total_usd,
        placed_at=row.placed_at,
        shipped_at=row.shipped_at,
        delivered_at=row.delivered_at,
        carrier=row.carrier,
        tracking_number=row.tracking_number,
    )


def get_order(*, engine: Engine, user_id: str, order_number: str) -> OrderView | None:
    """The user's order with this number in the orders table; None when it does not exist *or*
    belongs to someone else (the two cases look the same, so numbers cannot be probed)."""
    number = normalize_order_number(order_number)
    if number is None:
        return None
    query = select(Order).where(Order.order_number == number, Order.user_id == user_id)
    with engine.connect() as connection:
        row = connection.execute(query).first()
    return _view(row) if row else None


def recent_orders(*, engine: Engine, user_id: str, limit: int = 5) -> list[OrderView]:
    """The user's newest orders in the orders table, newest first."""
    query = (
        select(Order)
        .where(Order.user_id == user_id)
        .order_by(Order.placed_at.desc(), Order.id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [_view(row) for row in rows]


class TableOrders:
    """The built-in orders table."""

    label = "the orders table"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get_order(self, *, user_id: str, order_number: str) -> OrderView | None:
        try:
            return get_order(engine=self.engine, user_id=user_id, order_number=order_number)
        except SQLAlchemyError as error:  # the database is down: say so, do not fail the turn
            raise OrdersUnavailable(
                f"{self.label} cannot be read ({type(error).__name__})"
            ) from error

    def recent_orders(self, *, user_id: str, limit: int = 5) -> list[OrderView]:
        try:
            return recent_orders(engine=self.engine, user_id=user_id, limit=limit)
        except SQLAlchemyError as error:
            raise OrdersUnavailable(
                f"{self.label} cannot be read ({type(error).__name__})"
            ) from error


class _RecentAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    orders: list[OrderIn]


class HttpOrders:
    """The team's orders API (contract in docs/agent.md). One `httpx.Client` (thread-safe, kept
    alive) for every lookup; no retries inside a chat turn, a timeout instead."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base = url.rstrip("/")
        self.timeout_s = timeout_s
        host = httpx.URL(self.base).host or self.base
        self.label = f"the orders API at {host}"
        headers = {"Accept": "application/json", "User-Agent": "agent-chatbase"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout_s), headers=headers, transport=transport
        )

    def close(self) -> None:
        self.client.close()

    def _get(self, path: str, **params: Any) -> Any | None:
        """The JSON of a 200 answer, None for a 404; OrdersUnavailable for anything else."""
        try:
            response = self.client.get(f"{self.base}{path}", params=params or None)
        except httpx.TimeoutException:
            raise OrdersUnavailable(
                f"{self.label} did not answer within {self.timeout_s:g} s"
            ) from None
        except httpx.HTTPError as error:
            raise OrdersUnavailable(
                f"{self.label} is unreachable ({type(error).__name__})"
            ) from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise OrdersUnavailable(f"{self.label} answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise OrdersUnavailable(f"{self.label} sent an answer that is not JSON") from None

    def get_order(self, *, user_id: str, order_number: str) -> OrderView | None:
        number = normalize_order_number(order_number)
        if number is None:
            return None
        body = self._get(f"/customers/{quote(user_id, safe='')}/orders/{quote(number)}")
        if body is None:
            return None
        try:
            order = OrderIn.model_validate(body)
        except ValidationError as error:
            raise OrdersUnavailable(
                f"{self.label} sent an order that does not fit the contract "
                f"({validation_reason(error)[:150]})"
            ) from None
        if order.user_id != user_id or order.order_number != number:
            # Never show a customer an order the API says is someone else's.
            log.warning("%s answered for order %s with another order or user", self.label, number)
            return None
        return order.view()

    def recent_orders(self, *, user_id: str, limit: int = 5) -> list[OrderView]:
        limit = max(1, min(limit, MAX_RECENT))
        body = self._get(f"/customers/{quote(user_id, safe='')}/orders", limit=limit)
        if body is None:
            return []  # an unknown customer has no orders
        try:
            answer = _RecentAnswer.model_validate(body)
        except ValidationError as error:
            raise OrdersUnavailable(
                f"{self.label} sent an order list that does not fit the contract "
                f"({validation_reason(error)[:150]})"
            ) from None
        mine = [o.view() for o in answer.orders if o.user_id == user_id]
        mine.sort(key=lambda o: o.placed_at, reverse=True)
        return mine[:limit]


def order_source(settings: Settings, *, engine: Engine) -> OrderSource:
    """The orders API when ORDERS_API_URL is set, else the orders table."""
    if settings.orders_api_url is None:
        return TableOrders(engine)
    token = settings.orders_api_token
    return HttpOrders(
        str(settings.orders_api_url),
        token=token.get_secret_value() if token is not None else None,
        timeout_s=settings.orders_api_timeout_s,
    )


# -- filling the table -----------------------------------------------------------------------


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


def _row(order: OrderIn) -> dict[str, Any]:
    return dict(
        order_number=order.order_number,
        user_id=order.user_id,
        status=order.status,
        items=json.dumps([item.model_dump() for item in order.items]),
        total_usd=order.total_usd,
        placed_at=order.placed_at,
        shipped_at=order.shipped_at,
        delivered_at=order.delivered_at,
        carrier=order.carrier,
        tracking_number=order.tracking_number,
        demo=False,
    )


def _write(
    *, engine: Engine, numbered: list[tuple[int, OrderIn]], report: ImportReport, dry_run: bool
) -> ImportReport:
    """Insert or update the valid orders in one transaction (a later duplicate of an order
    number in the same batch is rejected, naming the first)."""
    first_seen: dict[str, int] = {}
    unique: list[OrderIn] = []
    for line, order in numbered:
        if order.order_number in first_seen:
            report.rejected.append(
                Rejected(
                    line,
                    order.order_number,
                    f"order_number: {order.order_number} already appears at "
                    f"{first_seen[order.order_number]}",
                )
            )
            continue
        first_seen[order.order_number] = line
        unique.append(order)
    report.rejected.sort(key=lambda r: r.line)
    numbers = [o.order_number for o in unique]
    postgres = engine.dialect.name == "postgresql"
    report.written = not dry_run
    with engine.begin() as connection:
        if dry_run or not postgres:
            existing: set[str] = set()
            for start in range(0, len(numbers), WRITE_CHUNK):
                chunk = numbers[start : start + WRITE_CHUNK]
                existing |= set(
                    connection.execute(
                        select(Order.order_number).where(Order.order_number.in_(chunk))
                    ).scalars()
                )
            report.inserted = len(set(numbers) - existing)
            report.updated = len(existing)
        if dry_run or not unique:
            return report
        dialect = postgresql if postgres else sqlite
        inserted = 0
        for start in range(0, len(unique), WRITE_CHUNK):
            rows = [_row(o) for o in unique[start : start + WRITE_CHUNK]]
            statement = dialect.insert(Order)
            statement = statement.on_conflict_do_update(
                index_elements=[Order.order_number],
                set_={c: statement.excluded[c] for c in rows[0] if c != "order_number"},
            )
            if postgres:
                # Postgres says which rows it inserted (xmax = 0) in the same statement; a
                # separate IN lookup right after a bulk load, before the table is analyzed,
                # is planned as a scan and took 1.2 s per 500 numbers at 20k orders.
                flags = connection.execute(
                    statement.returning(literal_column("(xmax = 0)", Boolean)), rows
                ).scalars()
                inserted += sum(1 for flag in flags if flag)
            else:
                connection.execute(statement, rows)
        if postgres:
            report.inserted, report.updated = inserted, len(unique) - inserted
    return report


def upsert_orders(*, engine: Engine, orders: list[OrderIn]) -> ImportReport:
    """Insert new orders and update existing ones (by order number) in one transaction; what
    `POST /orders` calls. A second occurrence of a number in `orders` is rejected (its
    `line` is its 1-based position)."""
    report = ImportReport(read=len(orders))
    return _write(
        engine=engine,
        numbered=list(enumerate(orders, start=1)),
        report=report,
        dry_run=False,
    )


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


def import_file(*, engine: Engine, path: Path, dry_run: bool = False) -> ImportReport:
    """Read CSV or JSON lines of orders, write the valid ones (one transaction) and report the
    rejected rows with their line and reason. Raises ValueError for a file that cannot be read
    as either format at all (nothing is written then)."""
    report = ImportReport()
    numbered: list[tuple[int, OrderIn]] = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        head = handle.read(4096)
        handle.seek(0)
        records = (
            _csv_records(handle, report)
            if file_format(path, head) == "csv"
            else _jsonl_records(handle)
        )
        try:
            for line, record in records:
                report.read += 1
                if isinstance(record, Exception):
                    report.rejected.append(Rejected(line, None, str(record)[:MAX_REASON_CHARS]))
                    continue
                if not isinstance(record, dict):
                    report.rejected.append(Rejected(line, None, "not a JSON object"))
                    continue
                number = record.get("order_number")
                try:
                    numbered.append((line, OrderIn.model_validate(record)))
                except ValidationError as error:
                    report.rejected.append(
                        Rejected(
                            line, None if number is None else str(number), validation_reason(error)
                        )
                    )
        except (csv.Error, UnicodeDecodeError) as error:
            raise ValueError(f"{path} cannot be read: {error}") from None
    return _write(engine=engine, numbered=numbered, report=report, dry_run=dry_run)


MAX_PRINTED = 50


def main(argv: list[str] | None = None) -> int:
    from data.config.settings import to_sqlalchemy_url
    from data.store.db import describe, make_engine
    from data.store.migrate import upgrade_for_command

    parser = argparse.ArgumentParser(
        prog="python -m data.integrations.orders", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser(
        "import",
        help="insert or update orders from a CSV or JSON-lines file",
        description="Columns / keys: " + ", ".join(COLUMNS) + ". `items` is a JSON list of "
        '{"name", "qty", "unit_usd"} (in CSV also "2 x Socks @ 5.00; 1 x Shoes @ 89"). '
        "Times are ISO 8601 (no offset = UTC). Valid rows are written in one transaction; "
        "rejected rows are listed with their line and reason (exit status 1).",
    )
    load.add_argument("file", type=Path)
    load.add_argument("--db", help="database URL (default: the configured one)")
    load.add_argument("--dry-run", action="store_true", help="check the file, write nothing")
    args = parser.parse_args(argv)
    if not args.file.is_file():
        print(f"error: {args.file} is not a file", file=sys.stderr)
        return 2
    migrated = upgrade_for_command(args.db)
    if migrated is None:
        return 2
    url = to_sqlalchemy_url(migrated)
    engine = make_engine(url)
    try:
        report = import_file(engine=engine, path=args.file, dry_run=args.dry_run)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        print(f"error: the database {describe(url)} is unavailable: {reason}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(f"{args.file} into {describe(url)}: {report.summary()}")
    for rejected in report.rejected[:MAX_PRINTED]:
        number = f" ({rejected.order_number})" if rejected.order_number else ""
        print(f"  line {rejected.line}{number}: {rejected.reason}")
    if len(report.rejected) > MAX_PRINTED:
        print(f"  … and {len(report.rejected) - MAX_PRINTED} more rejected rows")
    return 1 if report.rejected else 0


if __name__ == "__main__":
    sys.exit(main())
