"""The settings of AegisKV's own backends, beyond the public :class:`BackendOptions`.

The plugin interface (``aegiskv.backends.base``, re-exported by
``aegiskv.plugin_api``) tells a backend only what any store needs. The
built-in backends read more: the memory SLRU's starting protected share, and
for the durable ones the write-ahead log's mode, segment size and salvage
switch and the snapshot timer. Those settings live here, in a subclass the
server builds for its own backends only (``aegiskv.server.daemon``), so a
third-party backend never sees -- or comes to depend on -- the built-ins'
internals, and they can change without a new plugin API version.

A built-in backend given the public options (a test, or a plugin composing a
MemoryBackend) runs with the defaults below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from aegiskv.backends.base import BackendOptions


@dataclass(frozen=True)
class BuiltinBackendOptions(BackendOptions):
    """BackendOptions plus what the memory, WAL and snapshot backends read."""

    protected_fraction: float = 0.8  # share of the budget the SLRU protected segment starts with (it adapts)
    # Charge the tables (dicts, indexes) as well as the entries. Always on in the
    # server; off only where a test needs eviction points that depend on entry
    # sizes alone (the SLRU model test).
    count_structures: bool = True
    # One read or write in this many updates the LFU access counters (aegiskv.backends.access),
    # standing for them all; 1 counts every access, as Redis does.
    access_sample: int = 16
    # Durable backends (aegiskv.backends.wal, .snapshot):
    wal_mode: str = "off"  # "off", "write" (survives a process crash), "fsync" (survives power loss)
    wal_segment_bytes: int = 64 * 1024 * 1024
    wal_salvage: bool = False  # start from the prefix before a corrupt record instead of refusing
    snapshot_interval: float = 0.0  # seconds between automatic snapshots; 0 = only on command and shutdown


def builtin_options(options: BackendOptions) -> BuiltinBackendOptions:
    """``options`` itself when it is a BuiltinBackendOptions, else its public fields with the defaults above."""
    if isinstance(options, BuiltinBackendOptions):
        return options
    public = {field.name: getattr(options, field.name) for field in dataclasses.fields(BackendOptions)}
    return BuiltinBackendOptions(**public)
