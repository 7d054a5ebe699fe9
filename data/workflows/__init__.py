"""Team workflows on top of the store: the review queue and spending budgets."""
