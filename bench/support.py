"""How fast the support systems' paths are: importing orders, looking one up over HTTP, and
the ticket webhook draining a backlog after the receiver comes back.

Prints one JSON object: import_orders_per_s (new rows) and reimport_orders_per_s (the same file
again: every row an update), http_lookup_p50_ms / http_lookup_p95_ms (HttpOrders against a
local server speaking the contract), and webhook_backlog_drain_s (tickets opened while the
receiver was down, from its return and Retry now until all are delivered, one worker) with
webhook_deliveries_per_s.

    python bench/support.py [--db URL] [--orders N] [--lookups N] [--tickets N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import delete

from data.config.service_times import BusinessHours, ServiceLevels
from data.config.urls import to_sqlalchemy_url
from data.integrations.orders import HttpOrders, import_file
from data.integrations.tickets import create_ticket
from data.store.db import describe, make_engine
from data.store.migrate import upgrade
from data.store.orm_support import Order, SupportTicket
from data.workers.ticket_webhook import WebhookWorker, retry_now, webhook_status
from tests.helpers.fake_helpdesk import FakeHelpdesk
from tests.helpers.fake_orders import FakeOrdersApi
from tests.helpers.support import dumps, order_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--tickets", type=int, default=500)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-support-"))
    url = to_sqlalchemy_url(args.db) if args.db else f"sqlite:///{work / 'bench.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(delete(Order).where(Order.order_number.like("Z-%")))
        connection.execute(delete(SupportTicket).where(SupportTicket.user_id.like("bench-%")))
    result: dict[str, object] = {"database": describe(url)}

    rows = [order_json(f"Z-{i:05d}", f"bench-{i % 1000}", "shipped") for i in range(args.orders)]
    path = work / "orders.jsonl"
    path.write_text(dumps(rows), encoding="utf-8")
    for label in ("import_orders_per_s", "reimport_orders_per_s"):
        started = time.perf_counter()
        report = import_file(engine=engine, path=path)
        assert not report.rejected, report.rejected[:3]
        result[label] = round(args.orders / (time.perf_counter() - started))

    with FakeOrdersApi() as api:
        for row in rows[:1000]:
            api.add(**row)
        source = HttpOrders(api.url, timeout_s=5)
        times = []
        for i in range(args.lookups):
            started = time.perf_counter()
            assert source.get_order(user_id=f"bench-{i % 1000}", order_number=f"Z-{i % 1000:05d}")
            times.append((time.perf_counter() - started) * 1000)
        cuts = statistics.quantiles(times, n=100)
        result["http_lookup_p50_ms"], result["http_lookup_p95_ms"] = (
            round(cuts[49], 2),
            round(cuts[94], 2),
        )

    levels = ServiceLevels(
        timedelta(hours=12), timedelta(hours=4), BusinessHours("Mon-Sun 00:00-24:00", "UTC")
    )
    helpdesk = FakeHelpdesk("bench")  # down while the tickets are opened
    for i in range(args.tickets):
        create_ticket(
            engine=engine,
            user_id=f"bench-{i}",
            session_id=f"s-{i}",
            turn=1,
            kind="ticket",
            subject=f"Ticket {i}",
            body="body",
            levels=levels,
            notify=True,
        )
    worker = WebhookWorker(engine, url=helpdesk.url, secret=b"bench", interval_s=0.1)
    worker.run_once()  # fails: the receiver is down, the worker rests
    helpdesk.up()
    retry_now(engine=engine)  # what Retry now on the Tickets page does
    worker.resume()
    started = time.perf_counter()
    worker.start()
    while webhook_status(engine=engine)["pending"] and time.perf_counter() - started < 120:
        time.sleep(0.02)
    drain = time.perf_counter() - started
    worker.stop()
    helpdesk.down()
    counts = helpdesk.counts()
    result["webhook_backlog"] = args.tickets
    result["webhook_backlog_drain_s"] = round(drain, 2)
    result["webhook_deliveries_per_s"] = round(args.tickets / drain)
    result["webhook_exactly_once"] = len(counts) == args.tickets and set(counts.values()) == {1}
    engine.dispose()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
