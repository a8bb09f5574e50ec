"""The plugin interface's edges: the public import surface, what a backend plugin is given,
and what it may rely on."""

from __future__ import annotations

import dataclasses
import inspect
import sys

import pytest

from aegiskv import plugin_api
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
    return plugins.FoundPlugin(plugin_api.BACKENDS_GROUP, "some", "some_module:SomeBackend", distribution, "1.0")


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


# -- aegiskv.plugin_api: one import surface, documented, versioned -----------------------------


def test_the_api_module_exports_exactly_its_all() -> None:
    public = {name for name in vars(plugin_api) if not name.startswith("_")} - {"annotations", "Final"}
    assert public == set(plugin_api.__all__)
    assert plugin_api.API_VERSION == 1
    # The node's direct calls to the built-ins' in-memory store are no part of the plugin API.
    assert not hasattr(plugin_api.Backend, "memory")
    assert plugin_api.BACKENDS_GROUP == plugins.GROUPS[0] == "aegiskv.backends"
    assert set(plugins.GROUPS) == {plugin_api.BACKENDS_GROUP, plugin_api.PLACEMENT_GROUP, plugin_api.MEMBERSHIP_GROUP}


INTERFACES = [plugin_api.Backend, plugin_api.Placement, plugin_api.MembershipCore, plugin_api.WriteAheadLogLike]


@pytest.mark.parametrize("interface", INTERFACES, ids=lambda interface: interface.__name__)
def test_every_interface_method_has_a_docstring(interface: type) -> None:
    assert inspect.getdoc(interface)
    undocumented = [
        name
        for name, member in vars(interface).items()
        if (not name.startswith("_") or name == "__len__")
        and (inspect.isfunction(member) or isinstance(member, property))
        and not (member.__doc__ or "").strip()
    ]
    assert not undocumented, f"{interface.__name__}: {undocumented} have no docstring"


def _plugin_module(tmp_path, monkeypatch, name: str, code: str) -> plugins.FoundPlugin:
    (tmp_path / f"{name}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return plugins.FoundPlugin(plugin_api.BACKENDS_GROUP, "store", f"{name}:Store", "some-store", "2.0")


STORE = "from aegiskv.plugin_api import Backend\n\nclass Store(Backend):\n    pass\n"


@pytest.mark.parametrize(
    "declaration",
    ["", "AEGISKV_PLUGIN_API = 1\n", "Store.AEGISKV_PLUGIN_API = 1\n"],
    ids=["undeclared", "module", "object"],
)
def test_a_plugin_of_this_api_version_or_none_declared_loads(tmp_path, monkeypatch, declaration: str) -> None:
    plugin = _plugin_module(tmp_path, monkeypatch, f"store_ok_{len(declaration)}", STORE + declaration)
    assert plugins.load(plugin).obj.__name__ == "Store"


@pytest.mark.parametrize(
    "declaration, shown",
    [("AEGISKV_PLUGIN_API = 2\n", "2"), ("AEGISKV_PLUGIN_API = '1'\n", "'1'"), ("Store.AEGISKV_PLUGIN_API = 0\n", "0")],
    ids=["newer", "not-an-int", "older-on-the-object"],
)
def test_a_plugin_of_another_api_version_is_refused_in_one_line(
    tmp_path, monkeypatch, declaration: str, shown: str
) -> None:
    plugin = _plugin_module(tmp_path, monkeypatch, f"store_other_{abs(hash(declaration))}", STORE + declaration)
    with pytest.raises(plugins.PluginError) as refused:
        plugins.load(plugin)
    message = str(refused.value)
    assert "\n" not in message
    assert "plugin 'store'" in message and "some-store 2.0" in message
    assert f"written for plugin API {shown}, but this AegisKV provides plugin API 1" in message
