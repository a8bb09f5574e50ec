"""The plugin interface's edges: what a backend plugin is given, and what it may rely on."""

from __future__ import annotations

import dataclasses

from aegiskv.backends.base import BackendOptions
from aegiskv.backends.memory import MemoryBackend
from aegiskv.backends.options import BuiltinBackendOptions, builtin_options
from aegiskv.backends.wal import WalBackend
from aegiskv.server import plugins
from aegiskv.server.daemon import backend_options
from aegiskv.server.settings import build


def settings(**flags: str):
    return build(environ={}, flags={"gossip": "off", **flags})


def found(distribution: str) -> plugins.FoundPlugin:
    return plugins.FoundPlugin(plugins.BACKENDS_GROUP, "some", "some_module:SomeBackend", distribution, "1.0")


# -- BackendOptions: public fields only; the built-ins' settings apart --------------------------


def test_public_backend_options_hold_nothing_of_the_builtins() -> None:
    assert [field.name for field in dataclasses.fields(BackendOptions)] == [
        "max_memory_bytes",
        "data_dir",
        "first_version",
    ]


def test_a_third_party_backend_is_given_the_public_options_only(tmp_path) -> None:
    config = settings(max_memory="1", slru_protected_fraction="0.5")
    options = backend_options(config, found("aegiskv-something"), str(tmp_path))
    assert type(options) is BackendOptions
    assert (options.max_memory_bytes, options.data_dir) == (1 << 20, str(tmp_path))
    assert options.first_version > 1  # from the clock: versions grow across restarts


def test_the_builtin_backends_are_given_their_settings(tmp_path) -> None:
    config = settings(max_memory="1", slru_protected_fraction="0.5", wal="write", snapshot_interval="7")
    options = backend_options(config, found(plugins.OWN_DISTRIBUTION), str(tmp_path))
    assert isinstance(options, BuiltinBackendOptions)
    assert (options.max_memory_bytes, options.data_dir) == (1 << 20, str(tmp_path))
    assert (options.protected_fraction, options.wal_mode, options.snapshot_interval) == (0.5, "write", 7.0)
    assert options.wal_segment_bytes == config.wal_segment_bytes


def test_builtin_backends_take_the_public_options_with_their_defaults(tmp_path) -> None:
    public = BackendOptions(max_memory_bytes=10_000, data_dir=str(tmp_path), first_version=5)
    widened = builtin_options(public)
    assert (widened.max_memory_bytes, widened.data_dir, widened.first_version) == (10_000, str(tmp_path), 5)
    assert widened == BuiltinBackendOptions(max_memory_bytes=10_000, data_dir=str(tmp_path), first_version=5)
    assert builtin_options(widened) is widened
    assert MemoryBackend(public).protected_target == 8_000  # the default starting share, 0.8
    wal = WalBackend(public)
    assert wal.log is None  # no wal_mode among the public options: no log
    assert wal.put(b"k", b"v") > 5
    wal.close()
