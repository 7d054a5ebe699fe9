"""Settings from the environment, and the parsers and process tuning they rely on."""
