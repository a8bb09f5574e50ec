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

A plugin imports these names from :mod:`aegiskv.plugin_api`, the public
import surface (its docstring holds the API version and the deprecation rule),
not from here. ``plugins/aegiskv-rendezvous`` in the AegisKV repository is a
complete example, with its own tests, meant to be copied.

Groups
------

``aegiskv.placement`` (setting ``placement``, built-in ``ring``) decides which
nodes hold each shard; ``aegiskv.membership`` (setting ``membership``,
built-in ``swim``) decides who is in the cluster.

Group ``aegiskv.placement``
---------------------------

The entry point names a *factory*: a callable (usually the class) taking one
:class:`PlacementOptions` and returning an object with the :class:`Placement`
interface. Every node of a cluster must run the same placement with the same
options, or they will disagree about who owns what.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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

    Properties AegisKV relies on (:mod:`aegiskv.testing.placement_contract` checks them
    for the built-in ring and for the example plugin; a plugin author runs the
    same suite):

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


# -- membership ------------------------------------------------------------------------------

MEMBERSHIP_GROUP = "aegiskv.membership"

Address = tuple[str, int]
Outbound = list[tuple[Address, bytes]]


@dataclass(frozen=True)
class GossipTiming:
    """Failure-detector and dissemination timing (seconds), memberlist's LAN profile by default.

    The node fills it from its ``gossip_*`` settings; a membership plugin reads
    what applies to it.
    """

    probe_interval: float = 1.0  # time between two probes
    probe_timeout: float = 0.5  # wait for a direct ack before indirect probes
    suspicion_mult: int = 4  # suspicion timeout = mult x log10(N) x probe_interval
    indirect_checks: int = 3  # members asked to probe for us
    push_pull_interval: float = 30.0  # full-state exchange with a random member
    dead_reclaim_time: float = 30.0  # how long dead and departed members are remembered
    gossip_interval: float = 0.2  # how often pending news is pushed ...
    gossip_nodes: int = 3  # ... to this many random members


@dataclass(frozen=True)
class MembershipOptions:
    """What a membership factory is given. Times are seconds on the caller's monotonic clock."""

    node_id: str
    address: Address  # where the others reach this node's gossip port
    meta: dict[str, str]  # published with the node: "client" and "resp" addresses
    incarnation: int  # grows across restarts (start time in milliseconds)
    now: float
    timing: GossipTiming = field(default_factory=GossipTiming)


class MemberView(Protocol):
    """One member as the membership reports it.

    Optionally also ``left: bool``: the member stopped cleanly and said so, as
    opposed to being declared dead. Only such leaves lower the leases' quorum
    floor (aegiskv.cluster.leases); a membership without the attribute never does.
    """

    node_id: str
    address: Address
    meta: dict[str, str]


@runtime_checkable
class MembershipCore(Protocol):
    """Who is in the cluster, as a sans-IO state machine (group ``aegiskv.membership``).

    AegisKV's gossip transport (aegiskv/cluster/gossip.py) owns the sockets
    and the clock: it calls :meth:`tick` every 50 ms, hands every datagram
    that arrives on the gossip port (already authenticated when a gossip
    secret is set) to :meth:`receive`, and sends whatever either returns. Full
    states travel over TCP on join and every ``push_pull_interval``. All calls
    come from one thread.

    ``listeners`` are called with a :class:`MemberView` whenever a member's
    state or addresses change; the shard map is then rebuilt from
    :meth:`live_members`, so that list must include this node itself.
    """

    listeners: list[Callable[[Any], None]]
    counters: dict[str, int]  # reported in INFO cluster as gossip_<name>

    def tick(self, now: float) -> Outbound:
        """Advance timers to ``now`` (probes, suspicion, gossip); returns the datagrams to send."""
        ...

    def receive(self, source: Address, payload: bytes, now: float) -> Outbound:
        """Take one datagram from ``source``; returns the datagrams to send (acks, forwards).

        A payload that cannot be read is ignored (or counted), never raised.
        """
        ...

    def join(self, seeds: Iterable[Address], now: float) -> Outbound:
        """Start joining through ``seeds`` (gossip addresses); returns the datagrams to send."""
        ...

    def leave(self, now: float) -> Outbound:
        """Announce that this node leaves (a drain); returns the datagrams to send."""
        ...

    def full_state(self) -> bytes:
        """Everything this node knows about the members, for a peer's :meth:`merge_state`."""
        ...

    def merge_state(self, payload: bytes, now: float, disseminate: bool = False) -> None:
        """Take in a peer's :meth:`full_state`; raise ``ValueError`` for one that cannot be read."""
        ...

    def live_members(self) -> Sequence[MemberView]:
        """The members the shard map is built from (alive and suspect), this node included."""
        ...

    def update_meta(self, meta: dict[str, str], now: float) -> None:
        """Publish new metadata for this node to the others (the shards it leads change at a failover)."""
        ...

    def state_counts(self) -> dict[str, int]:
        """Members by state, for INFO: at least ``alive``; also ``suspect``, ``dead``, ``left`` if known."""
        ...


MembershipFactory = Callable[[MembershipOptions], MembershipCore]
