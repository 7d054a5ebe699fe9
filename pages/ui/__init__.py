"""Shared UI for the pages: cached resources, sign-in, filters, transcripts, charts and the
budgets section. Pages import these; nothing here is a page of its own."""
