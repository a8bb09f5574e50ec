"""AegisKV: a distributed, in-memory key-value cache."""

__version__ = "0.1.0"
