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
import sys
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import Boolean, Engine, Row, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from data.config.settings import Settings
from data.integrations.order_records import (
    COLUMNS,
    MAX_REASON_CHARS,
    ImportReport,
    OrderIn,
    OrderItem,
    OrderView,
    Rejected,
    _csv_records,
    _jsonl_records,
    file_format,
    normalize_order_number,
    validation_reason,
)
from data.store.orm_support import Order

log = logging.getLogger(__name__)

MAX_RECENT = 50
WRITE_CHUNK = 500


# -- one order, validated ------------------------------------------------------------------


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
    from data.config.urls import to_sqlalchemy_url
    from data.store.db import describe, failure_reason, make_engine
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
        print(
            f"error: the database {describe(url)} is unavailable: {failure_reason(error)}",
            file=sys.stderr,
        )
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
