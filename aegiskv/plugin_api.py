"""The public plugin API: everything a third-party AegisKV plugin may import.

A plugin is an installable distribution that registers an object in one of
three entry-point groups:

* ``aegiskv.backends`` (:data:`BACKENDS_GROUP`): a :class:`Backend` subclass,
  built as ``YourBackend(options, clock)`` with a :class:`BackendOptions` and a
  :data:`Clock`; chosen with ``aegis --backend NAME``.
* ``aegiskv.placement`` (:data:`PLACEMENT_GROUP`): a factory taking a
  :class:`PlacementOptions` and returning a :class:`Placement`; chosen with the
  ``placement`` setting.
* ``aegiskv.membership`` (:data:`MEMBERSHIP_GROUP`): a factory taking a
  :class:`MembershipOptions` and returning a :class:`MembershipCore`; chosen
  with the ``membership`` setting.

Import those names from this module only. Everything else in ``aegiskv`` is
internal and may change in any release; this module's names change only under
the rule below. The conformance suites that go with it are in
``aegiskv.testing``: :mod:`aegiskv.testing.backend_contract` and
:mod:`aegiskv.testing.placement_contract`. ``plugins/aegiskv-dictstore``
(a backend) and ``plugins/aegiskv-rendezvous`` (a placement) in the AegisKV
repository are complete examples that use nothing else.

Declaring the API version
-------------------------

A plugin may declare the API it was written against, as
``AEGISKV_PLUGIN_API = 1`` in the module its entry point names (or as an
attribute of the registered object itself). The loader refuses a plugin whose
declared version is not :data:`API_VERSION`, with a one-line error naming the
plugin and both versions, before the node binds a port; a plugin that declares
nothing is loaded and checked by shape only.

Deprecation rule
----------------

:data:`API_VERSION` counts incompatible changes to the names exported here and
to the methods and fields of the classes among them. Adding a name, an optional
method with a default, or an optional field with a default is compatible and
keeps the version. Removing or renaming a name, changing a method's signature or
meaning, or adding an abstract method is not: such a change happens only after
the old form has been kept, working and raising a ``DeprecationWarning`` that
names its replacement, for at least one minor release; the release that
finally removes it raises :data:`API_VERSION` by one.
"""

from __future__ import annotations

from typing import Final

from aegiskv.backends.base import (
    BACKENDS_GROUP,
    NO_EXPIRY,
    Backend,
    BackendOptions,
    BackendStats,
    Clock,
    Entry,
    StorageError,
    StorageUnavailable,
    Value,
    ValueTooLarge,
    WriteAheadLogLike,
    wall_clock_ms,
)
from aegiskv.cluster.interfaces import (
    DEFAULT_PLACEMENT_OPTIONS,
    MEMBERSHIP_GROUP,
    PLACEMENT_GROUP,
    Address,
    GossipTiming,
    MembershipCore,
    MembershipFactory,
    MembershipOptions,
    MemberView,
    Outbound,
    Placement,
    PlacementFactory,
    PlacementOptions,
)

API_VERSION: Final = 1

# The name a plugin's module (or registered object) declares its API version under.
DECLARATION: Final = "AEGISKV_PLUGIN_API"

__all__ = [
    "API_VERSION",
    "BACKENDS_GROUP",
    "DECLARATION",
    "DEFAULT_PLACEMENT_OPTIONS",
    "MEMBERSHIP_GROUP",
    "NO_EXPIRY",
    "PLACEMENT_GROUP",
    "Address",
    "Backend",
    "BackendOptions",
    "BackendStats",
    "Clock",
    "Entry",
    "GossipTiming",
    "MemberView",
    "MembershipCore",
    "MembershipFactory",
    "MembershipOptions",
    "Outbound",
    "Placement",
    "PlacementFactory",
    "PlacementOptions",
    "StorageError",
    "StorageUnavailable",
    "Value",
    "ValueTooLarge",
    "WriteAheadLogLike",
    "wall_clock_ms",
]
