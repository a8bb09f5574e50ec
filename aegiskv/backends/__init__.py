"""Storage engines behind one interface (``base.Backend``), found by entry point."""
