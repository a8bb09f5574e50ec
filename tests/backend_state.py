"""Reading a backend's whole keyspace back, for the durability tests."""

from __future__ import annotations

from aegiskv.backends.base import Backend

# key -> (value, version, expires_at_ms): everything a restart must bring back.
State = dict[bytes, tuple[bytes, int, int]]


def state_of(backend: Backend) -> State:
    """Every live key with its value, version and deadline (reads do not touch the SLRU)."""
    result = {}
    live_keys = backend.keys()  # a method of the backend (not a dict view)
    for key in live_keys:
        entry = backend.get_entry(key, touch=False)
        assert entry is not None, key
        result[key] = (bytes(entry.value), entry.version, entry.expires_at_ms)
    return result
