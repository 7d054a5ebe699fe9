"""Background loops that run beside the app and the API: LangSmith feedback sync, the ticket
webhook outbox, and the dependency status probe."""
