"""The agent as an HTTP service (FastAPI). Nothing in agent/ or data/ imports it."""
