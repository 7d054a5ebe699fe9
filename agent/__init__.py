"""The support agent: model factory, middleware, telemetry, prompts and the chat service."""
