"""The figures the analyst pages show, each defined once: rollups, sessions, cost, context,
latency, feedback, agreement, and how a page reads them."""
