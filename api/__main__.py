"""`python -m api`: the API alone on API_HOST:API_PORT (the seed's `uvicorn src.main:app`)."""

from __future__ import annotations

import sys

from api.server import BindRefused, make_server
from data.config.settings import SettingsError, get_settings


def main() -> int:
    try:
        settings = get_settings()
        server = make_server(settings)
    except (SettingsError, BindRefused) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from data.integrations.observability import init_sentry

    init_sentry(settings, "api")
    from data.config import heap

    heap.settle(("agent.runtime",))  # out of the collector's full passes (data.config.heap)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
