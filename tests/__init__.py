"""agent-chatbase tests."""
