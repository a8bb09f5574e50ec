"""The node's wiring: settings, daemon and CLI, the request pipeline, health and metrics."""
