"""AegisKV's binary protocol: codec and handlers."""
