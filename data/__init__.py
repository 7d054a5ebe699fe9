"""Everything that stores or fetches, by role: `config` (settings), `store` (the database: engine,
tables, migrations, what a turn writes), `analytics` (rollups and every figure the pages show),
`workflows` (the review queue, budgets), `workers` (background loops), `integrations` (orders,
tickets, prices, Prometheus, metrics, Sentry) and `access` (users, roles, audit, sanitizing)."""
