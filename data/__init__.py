"""Everything that stores or fetches: settings, database, recorder, prices, metrics."""
