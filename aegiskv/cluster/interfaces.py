"""What a cluster plugin implements: the plugin author's documentation.

AegisKV finds cluster components through entry points, exactly as it finds its
own built-in ones (see ``setup.cfg``). A plugin is an installable distribution
that declares, for example::

    [options.entry_points]
    aegiskv.placement =
        rendezvous = my_package.placement:RendezvousPlacement

and is chosen by configuration (``placement = "rendezvous"`` in the TOML file,
or ``AEGIS_PLACEMENT=rendezvous``). ``aegis plugins`` lists every plugin found,
with its distribution and whether it loads; a node configured with a plugin that
is missing or broken refuses to start with a one-line error naming it.

``plugins/aegiskv-rendezvous`` in the AegisKV repository is a complete example,
with its own tests, meant to be copied.

Group ``aegiskv.placement``
---------------------------

The entry point names a *factory*: a callable (usually the class) taking one
:class:`PlacementOptions` and returning an object with the :class:`Placement`
interface. Every node of a cluster must run the same placement with the same
options, or they will disagree about who owns what.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

PLACEMENT_GROUP = "aegiskv.placement"


@dataclass(frozen=True)
class PlacementOptions:
    """Settings handed to a placement factory (from the node's configuration).

    A placement may ignore settings that mean nothing to it (rendezvous hashing
    has no virtual nodes), but must not change its answers for anything else.
    """

    virtual_nodes: int = 128  # points per node on a hash ring (``virtual_nodes``)
    load_factor: float = 1.25  # most replicas a node may hold, as a multiple of the mean (``placement_load_factor``)


DEFAULT_PLACEMENT_OPTIONS = PlacementOptions()


@runtime_checkable
class Placement(Protocol):
    """Maps shards to replica sets. Must be a pure function of its arguments.

    Every node computes the shard map on its own from its view of the
    membership, so ``assign`` must give the same answer on every node for the
    same arguments: no randomness, no clock, no dependence on the order of
    ``members`` or on Python's per-process ``hash()`` salt (use hashlib).

    Properties AegisKV relies on (:mod:`aegiskv.cluster.placement_checks` checks them
    for the built-in ring and for the example plugin; a plugin author can call
    the same checks):

    * the result has exactly ``shards`` entries, one per shard, in shard order;
    * each entry holds ``min(replication_factor, len(members))`` distinct
      members; the first is the shard's primary (until leases exist);
    * with no members, every entry is empty;
    * a member joining or leaving should move about 1/N of the replicas
      (``bench/placement_sim.py`` measures it).
    """

    def assign(self, members: Sequence[str], shards: int, replication_factor: int) -> list[tuple[str, ...]]:
        """The replica set (primary first) of every shard ``0 .. shards - 1``."""
        ...


PlacementFactory = Callable[[PlacementOptions], Placement]
