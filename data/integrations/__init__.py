"""The outside world: orders and tickets, model prices, Prometheus, metrics, Sentry."""
