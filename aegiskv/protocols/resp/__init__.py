"""The Redis protocol (RESP2/RESP3): reader, encoder, handlers."""
