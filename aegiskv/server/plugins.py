"""Entry-point plugins: find, load and check them, in that order.

Built-in parts register through the same entry points as third-party ones
(see ``setup.cfg``), so there is one way in. Discovery follows flake8's plugin
finder: each stage returns small named tuples; a plugin that cannot be
imported, or whose object is not what the group expects, becomes a
:class:`PluginError` that names its distribution; results are sorted so the
listing is stable.

A plugin that declares the plugin API version it was written against
(``AEGISKV_PLUGIN_API`` in its module or on its object, see
:mod:`aegiskv.plugin_api`) is refused unless it is this AegisKV's
:data:`~aegiskv.plugin_api.API_VERSION`.

Setting ``AEGIS_DISABLE_PLUGIN_AUTOLOAD=1`` loads only AegisKV's own plugins
(third-party distributions are ignored), for tests and for ruling a plugin out.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from importlib import metadata
from typing import Any, NamedTuple

from aegiskv.plugin_api import (
    API_VERSION,
    BACKENDS_GROUP,
    DECLARATION,
    MEMBERSHIP_GROUP,
    PLACEMENT_GROUP,
    Backend,
    MembershipCore,
    MembershipFactory,
    MembershipOptions,
    Placement,
    PlacementOptions,
)

GROUPS = (BACKENDS_GROUP, MEMBERSHIP_GROUP, PLACEMENT_GROUP)
OWN_DISTRIBUTION = "aegiskv"

# Used only when AegisKV runs from a source tree that was never installed (no
# entry-point metadata at all); an installed AegisKV always goes through entry points.
_BUILTIN_FALLBACK: Mapping[str, Mapping[str, str]] = {
    BACKENDS_GROUP: {
        "memory": "aegiskv.backends.memory:MemoryBackend",
        "wal": "aegiskv.backends.wal:WalBackend",
        "snapshot": "aegiskv.backends.snapshot:SnapshotBackend",
    },
    PLACEMENT_GROUP: {"ring": "aegiskv.cluster.placement:RingPlacement"},
    MEMBERSHIP_GROUP: {"swim": "aegiskv.cluster.membership:swim_membership"},
}


class PluginError(Exception):
    """A plugin is missing or broken; the message names it and its distribution."""


class FoundPlugin(NamedTuple):
    group: str
    name: str
    value: str  # "module:attribute"
    distribution: str
    version: str


class LoadedPlugin(NamedTuple):
    plugin: FoundPlugin
    obj: Any


def _autoload_disabled() -> bool:
    return os.environ.get("AEGIS_DISABLE_PLUGIN_AUTOLOAD", "") not in ("", "0")


def find(group: str) -> list[FoundPlugin]:
    """Every plugin registered in ``group``, sorted by name then distribution."""
    found: list[FoundPlugin] = []
    own_installed = False
    for distribution in metadata.distributions():
        dist_name = distribution.metadata["Name"] or "unknown"
        is_own = dist_name.lower() == OWN_DISTRIBUTION
        own_installed = own_installed or is_own
        if not is_own and _autoload_disabled():
            continue
        for entry_point in distribution.entry_points:
            if entry_point.group == group:
                found.append(FoundPlugin(group, entry_point.name, entry_point.value, dist_name, distribution.version))
    if not own_installed:
        import aegiskv

        for name, value in _BUILTIN_FALLBACK.get(group, {}).items():
            found.append(FoundPlugin(group, name, value, OWN_DISTRIBUTION, aegiskv.__version__))
    # Deduplicate (the same distribution can be visible twice on sys.path).
    unique = {(plugin.name, plugin.distribution): plugin for plugin in found}
    return sorted(unique.values(), key=lambda plugin: (plugin.name, plugin.distribution))


def load(plugin: FoundPlugin) -> LoadedPlugin:
    module_name, _, attribute = plugin.value.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in filter(None, attribute.split(".")):
            obj = getattr(obj, part)
    except Exception as error:
        raise PluginError(
            f"plugin {plugin.name!r} in group {plugin.group} from distribution "
            f"{plugin.distribution} {plugin.version} failed to load {plugin.value}: {type(error).__name__}: {error}"
        ) from error
    declared = _declared_api(obj, module_name)
    if declared is not None and (type(declared) is not int or declared != API_VERSION):
        raise _refuse(
            plugin, f"written for plugin API {declared!r}, but this AegisKV provides plugin API {API_VERSION}"
        )
    return LoadedPlugin(plugin, obj)


def _declared_api(obj: Any, module_name: str) -> object:
    """The plugin API version the plugin declares (on its object, else its module), or None."""
    declared = getattr(obj, DECLARATION, None)
    if declared is None:
        declared = getattr(importlib.import_module(module_name), DECLARATION, None)
    return declared


def _load_named(group: str, name: str, what: str) -> LoadedPlugin:
    """The one plugin registered as ``name`` in ``group``, loaded."""
    candidates = [plugin for plugin in find(group) if plugin.name == name]
    if not candidates:
        known = ", ".join(sorted({plugin.name for plugin in find(group)})) or "none"
        raise PluginError(f"{what} {name!r} is not installed (group {group}; installed: {known})")
    if len(candidates) > 1:
        sources = ", ".join(plugin.distribution for plugin in candidates)
        raise PluginError(f"{what} {name!r} is registered by several distributions: {sources}")
    return load(candidates[0])


def _refuse(plugin: FoundPlugin, problem: str) -> PluginError:
    return PluginError(
        f"plugin {plugin.name!r} in group {plugin.group} from distribution {plugin.distribution} "
        f"{plugin.version}: {problem}"
    )


def load_backend(name: str) -> LoadedPlugin:
    """The backend class registered as ``name``, checked to be a ``Backend`` subclass."""
    loaded = _load_named(BACKENDS_GROUP, name, "backend")
    if not (isinstance(loaded.obj, type) and issubclass(loaded.obj, Backend)):
        raise _refuse(loaded.plugin, f"{loaded.plugin.value} is not a subclass of aegiskv.plugin_api.Backend")
    return loaded


def load_placement(name: str, options: PlacementOptions) -> tuple[FoundPlugin, Placement]:
    """The placement registered as ``name``, built with ``options`` and checked to have ``assign``."""
    loaded = _load_named(PLACEMENT_GROUP, name, "placement")
    if not callable(loaded.obj):
        raise _refuse(loaded.plugin, f"{loaded.plugin.value} is not callable (a placement factory)")
    try:
        placement = loaded.obj(options)
    except Exception as error:
        raise _refuse(loaded.plugin, f"refused its options: {type(error).__name__}: {error}") from error
    if not isinstance(placement, Placement):
        raise _refuse(loaded.plugin, f"{loaded.plugin.value} built {type(placement).__name__}, which has no assign()")
    return loaded.plugin, placement


def load_membership(name: str) -> tuple[FoundPlugin, MembershipFactory]:
    """The membership factory registered as ``name``, tried once on throwaway options.

    The trial catches a plugin that fails to build or builds something without
    the :class:`MembershipCore` methods before the node binds any port.
    """
    loaded = _load_named(MEMBERSHIP_GROUP, name, "membership")
    factory = loaded.obj
    if not callable(factory):
        raise _refuse(loaded.plugin, f"{loaded.plugin.value} is not callable (a membership factory)")
    trial_options = MembershipOptions(node_id="trial", address=("127.0.0.1", 0), meta={}, incarnation=1, now=0.0)
    try:
        core = factory(trial_options)
    except Exception as error:
        raise _refuse(loaded.plugin, f"failed to build: {type(error).__name__}: {error}") from error
    if not isinstance(core, MembershipCore):
        raise _refuse(loaded.plugin, f"{loaded.plugin.value} built {type(core).__name__}, which lacks MembershipCore")
    return loaded.plugin, factory


def describe_all() -> list[str]:
    """One line per plugin in every group, loaded and checked (for ``aegis plugins``)."""
    lines = []
    for group in GROUPS:
        for plugin in find(group):
            try:
                load(plugin)
                state = "ok"
            except PluginError as error:
                state = f"BROKEN: {error}"
            lines.append(f"{group}\t{plugin.name}\t{plugin.distribution} {plugin.version}\t{plugin.value}\t{state}")
    return lines
