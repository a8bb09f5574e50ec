"""Nemeses: kill -9, restart, SIGSTOP/SIGCONT, partitions (nftables), heal -- each one timed.

Every action appends an :class:`~tests.faults.checker.Event` to the
:class:`~tests.faults.checker.Timeline` with the ``time.monotonic()`` moment
it acted and the *impacts* it should have: which slots (those the affected
nodes owned just before) may become unwritable, and from which client sides.
Pauses and isolations also add a :class:`~tests.faults.checker.Cut`: the
interval in which that node cannot hold a lease, for the stale-acknowledgement
check.

Partitions drop packets in the *input* hook of the receiving host's own
namespace (an nftables table of ours, ``inet aegis_fault``), so they vanish in
transit as on a real network: the sender gets no error, its retransmissions
go unanswered. ``partition([[...], [...]])`` is symmetric between groups;
``one_way(senders, receivers)`` drops only what ``senders`` send to
``receivers``. Client hosts (``c0``, ``c1``, ...) can be put in groups too,
for clients on both sides of a partition. ``tc netem`` is not on this
kernel: there is no added latency here, only loss.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections.abc import Iterable, Sequence

from aegiskv.cluster.slots import SLOTS
from tests.faults.checker import Cut, Event, Impact, Timeline
from tests.faults.cluster import FaultCluster, slots_of

TABLE = "aegis_fault"
ALL_SLOTS = frozenset(range(SLOTS))


class Nemesis:
    def __init__(self, cluster: FaultCluster, timeline: Timeline) -> None:
        self.cluster = cluster
        self.timeline = timeline
        self._owned_at_fault: dict[str, frozenset[int]] = {}
        self._paused: dict[str, float] = {}
        self._blocked: set[tuple[str, str]] = set()  # (sender host, receiver host)
        self._tables: set[str] = set()  # hosts where our table exists
        self._partition_event: Event | None = None
        self._isolated_since: dict[str, float] = {}
        self._cut_clients: list[str] = []  # client sides a partition left without a majority
        self._frozen_owners: dict[int, str] | None = None

    # -- ownership ---------------------------------------------------------------------------------

    def _owned(self, nodes: Iterable[str]) -> frozenset[int]:
        owners = self._frozen_owners or self.cluster.slot_owners(side=self._side_for_questions())
        return slots_of(owners, nodes)

    def freeze_owners(self) -> None:
        """Take the slot owners now and use them for every fault until :meth:`thaw_owners`.

        For faults meant to start together: asking the cluster in each would
        delay the second behind the first (a killed node is asked in vain).
        """
        self._frozen_owners = self.cluster.slot_owners(side=self._side_for_questions())

    def thaw_owners(self) -> None:
        self._frozen_owners = None

    def _side_for_questions(self) -> int:
        """A client side that can reach every node (for CLUSTER SLOTS before a fault)."""
        for number, client in enumerate(self.cluster.clients):
            if not any(client.name in pair for pair in self._blocked):
                return number
        return 0

    # -- processes -----------------------------------------------------------------------------------

    def kill(self, name: str) -> Event:
        """SIGKILL ``name`` and reap it."""
        owned = self._owned([name])
        self._owned_at_fault[name] = owned
        at = time.monotonic()
        self.cluster.kill(name)
        return self.timeline.add(Event(at, "kill", (name,), (Impact(owned, label=f"{name}'s slots"),)))

    def restart(self, name: str) -> Event:
        """Start ``name`` again with its id and data dir; returns once it serves."""
        owned = self._owned_at_fault.get(name, frozenset())
        at = time.monotonic()
        self.cluster.restart(name)
        ready = time.monotonic() - at
        impacts = (Impact(owned, label=f"{name}'s old slots"),) if owned else ()
        return self.timeline.add(Event(at, "restart", (name,), impacts, detail=f"serving after {ready:.2f}s"))

    def pause(self, name: str) -> Event:
        """SIGSTOP ``name``: it keeps its sockets but runs nothing, timers included."""
        owned = self._owned([name])
        self._owned_at_fault[name] = owned
        at = time.monotonic()
        self.cluster.signal(name, signal.SIGSTOP)
        self._paused[name] = at
        return self.timeline.add(Event(at, "pause", (name,), (Impact(owned, label=f"{name}'s slots"),)))

    def resume(self, name: str) -> Event:
        at = time.monotonic()
        self.cluster.signal(name, signal.SIGCONT)
        started = self._paused.pop(name)
        self.timeline.cuts.append(Cut(name, "pause", started, at))
        owned = self._owned_at_fault.get(name, frozenset())
        impacts = (Impact(owned, label=f"{name}'s old slots"),) if owned else ()
        return self.timeline.add(Event(at, "resume", (name,), impacts, detail=f"paused {at - started:.2f}s"))

    def pause_for(self, name: str, seconds: float) -> tuple[Event, Event]:
        paused = self.pause(name)
        time.sleep(max(0.0, paused.at + seconds - time.monotonic()))
        return paused, self.resume(name)

    # -- membership: planned changes --------------------------------------------------------------

    def join(self, name: str, *, side_with: str | None = None) -> Event:
        """Start a new node ``name`` that joins the running cluster; returns once it serves.

        Any slot may change owner (placement moves about 1/N of them to the new
        node, and primaries hand over): the impact is every slot. During a
        partition the new host is put on the side of node ``side_with`` before
        it starts (its first packet already obeys the cut); without
        ``side_with`` a partition in force is refused, since the new node
        would otherwise bridge it.
        """
        if self._blocked:
            if side_with is None:
                raise RuntimeError("a partition is in force: say which side the new node joins (side_with)")
            self._join_side(name, side_with)
        at = time.monotonic()
        self.cluster.add_node(name)
        ready = time.monotonic() - at
        impact = Impact(ALL_SLOTS, label="slots may move")
        return self.timeline.add(Event(at, "join", (name,), (impact,), detail=f"serving after {ready:.2f}s"))

    def _join_side(self, name: str, side_with: str) -> None:
        """Make host ``name`` and cut it from whatever ``side_with`` is cut from, both ways."""
        add_host = getattr(self.cluster, "add_host", None)
        if add_host is None:
            raise NotImplementedError(f"{self.cluster.kind}: cannot add a host during a partition")
        add_host(name)
        others = {a for a, b in self._blocked if b == side_with} | {b for a, b in self._blocked if a == side_with}
        self._blocked |= {(name, other) for other in others} | {(other, name) for other in others}
        self._apply_rules()

    def rejoin(self, name: str) -> Event:
        """Start ``name`` again after its drain, same id and data dir; returns once it serves.

        It left the membership, so coming back is a join: any slot may move.
        """
        at = time.monotonic()
        self.cluster.restart(name)
        ready = time.monotonic() - at
        impact = Impact(ALL_SLOTS, label="slots may move")
        return self.timeline.add(Event(at, "rejoin", (name,), (impact,), detail=f"serving after {ready:.2f}s"))

    def settle(self, timeout: float = 90.0, replication_factor: int | None = None) -> Event:
        """Wait until the running nodes agree on one map with nothing moving (and, given
        ``replication_factor``, until every shard has its replicas again); an event with no impact.
        """
        at = time.monotonic()
        self.cluster.wait_settled(timeout)
        if replication_factor is not None:
            wait_replicated = getattr(self.cluster, "wait_replicated", None)
            if wait_replicated is None:
                raise NotImplementedError(f"{self.cluster.kind}: no replica count to wait for")
            wait_replicated(replication_factor, timeout)
        done = time.monotonic()
        # Dated when it was settled; the wait it took is in the detail.
        return self.timeline.add(Event(done, "settled", (), (), detail=f"one map after {done - at:.2f}s"))

    def drain(self, name: str, timeout: float = 60.0) -> Event:
        """SIGTERM ``name`` (a planned leave: its graceful drain) and wait until it exited."""
        owned = self._owned([name])
        at = time.monotonic()
        code = self.cluster.drain(name, timeout)
        took = time.monotonic() - at
        event = Event(
            at, "drain", (name,), (Impact(owned, label=f"{name}'s slots"),), detail=f"exit {code} after {took:.2f}s"
        )
        return self.timeline.add(event)

    # -- the network -------------------------------------------------------------------------------

    def _apply_rules(self) -> None:
        """Rewrite our table in every host whose inbound drops changed."""
        hosts = {**self.cluster.hosts, **{client.name: client for client in self.cluster.clients}}
        receivers = {receiver for _, receiver in self._blocked} | self._tables
        for receiver in sorted(receivers):
            host = hosts[receiver]
            senders = sorted(hosts[sender].address for sender, to in self._blocked if to == receiver)
            # "add" then "delete" makes the delete succeed whether or not the table existed.
            script = f"add table inet {TABLE}\ndelete table inet {TABLE}\n"
            if senders:
                script += (
                    f"table inet {TABLE} {{\n"
                    "  chain input {\n"
                    "    type filter hook input priority -10; policy accept;\n"
                    f"    ip saddr {{ {', '.join(senders)} }} counter drop\n"
                    "  }\n"
                    "}\n"
                )
                self._tables.add(receiver)
            else:
                self._tables.discard(receiver)
            host.nft(script)

    def dropped_packets(self) -> dict[str, int]:
        """Packets our rules dropped so far, per receiving host (proof the cut was real)."""
        hosts = {**self.cluster.hosts, **{client.name: client for client in self.cluster.clients}}
        counts: dict[str, int] = {}
        for name in sorted(self._tables):
            listing = hosts[name].nft_command("list", "table", "inet", TABLE)
            packets = [int(word) for before, word in zip(listing.split(), listing.split()[1:]) if before == "packets"]
            counts[name] = sum(packets)
        return counts

    def _linked(self, first: str, second: str) -> bool:
        return (first, second) not in self._blocked and (second, first) not in self._blocked

    def _cut_off_nodes(self) -> list[str]:
        """Nodes that cannot exchange packets both ways with a majority of the nodes (themselves included)."""
        nodes = self.cluster.node_names
        majority = len(nodes) // 2 + 1
        return [
            node
            for node in nodes
            if 1 + sum(1 for other in nodes if other != node and self._linked(node, other)) < majority
        ]

    def _block(self, pairs: Iterable[tuple[str, str]], kind: str, names: Sequence[str], detail: str) -> Event:
        if self._blocked:
            raise RuntimeError("heal the current partition first")
        owners = self._frozen_owners or self.cluster.slot_owners(side=self._side_for_questions())
        self._blocked = set(pairs)
        nodes = self.cluster.node_names
        majority = len(nodes) // 2 + 1
        isolated = self._cut_off_nodes()
        impacts: list[Impact] = []
        for client in self.cluster.clients:
            reachable = [node for node in nodes if self._linked(client.name, node)]
            side = frozenset({client.name})
            if len([node for node in reachable if node not in isolated]) < majority:
                impacts.append(Impact(ALL_SLOTS, side, f"{client.name} cut from majority", math.inf))
                self._cut_clients.append(client.name)
                continue
            failing = list(isolated)
            if failing:
                impacts.append(Impact(slots_of(owners, failing), side, f"{client.name}: {','.join(failing)} fail over"))
            unreachable = [node for node in nodes if node not in reachable and node not in isolated]
            if unreachable:
                impacts.append(
                    Impact(
                        slots_of(owners, unreachable), side, f"{client.name} cut from {','.join(unreachable)}", math.inf
                    )
                )
        for node in isolated:
            self._owned_at_fault[node] = slots_of(owners, [node])
        at = time.monotonic()
        self._apply_rules()
        for node in isolated:
            self._isolated_since[node] = at
        event = Event(at, kind, tuple(names), tuple(impacts), detail=detail)
        self._partition_event = event
        return self.timeline.add(event)

    def partition(self, groups: Sequence[Sequence[str]]) -> Event:
        """Symmetric: no packet between hosts (nodes or client sides) of different groups."""
        membership = {host: number for number, group in enumerate(groups) for host in group}
        pairs = {(a, b) for a in membership for b in membership if membership[a] != membership[b]}
        detail = " | ".join(",".join(group) for group in groups)
        cut = [node for group in groups for node in group if node in self.cluster.hosts]
        return self._block(pairs, "partition", cut, detail)

    def one_way(self, senders: Sequence[str], receivers: Sequence[str]) -> Event:
        """Packets from ``senders`` to ``receivers`` are dropped; the other direction still flows."""
        pairs = {(sender, receiver) for sender in senders for receiver in receivers}
        detail = f"{','.join(senders)} -> {','.join(receivers)} dropped"
        return self._block(pairs, "one-way", [*senders, *receivers], detail)

    def heal(self) -> Event:
        """Remove every drop rule; records the packets they dropped."""
        dropped = self.dropped_packets()
        self._blocked = set()
        at_before = time.monotonic()
        self._apply_rules()
        at = time.monotonic()
        # The partition's "until heal" impacts end now.
        if self._partition_event is not None:
            old = self._partition_event
            impacts = tuple(
                dataclasses.replace(impact, lasts_until=at) if impact.lasts_until is not None else impact
                for impact in old.impacts
            )
            position = self.timeline.events.index(old)
            self.timeline.events[position] = dataclasses.replace(old, impacts=impacts)
            self._partition_event = None
        for node, since in self._isolated_since.items():
            self.timeline.cuts.append(Cut(node, "isolated", since, at_before))
        healed_nodes = tuple(self._isolated_since)
        impacts_after = tuple(
            Impact(self._owned_at_fault.get(node, frozenset()), label=f"{node}'s old slots") for node in healed_nodes
        ) + tuple(Impact(ALL_SLOTS, frozenset({side}), f"{side} back") for side in self._cut_clients)
        self._isolated_since = {}
        self._cut_clients = []
        return self.timeline.add(
            Event(at, "heal", healed_nodes, impacts_after, detail=f"dropped packets per host {dropped}")
        )

    def repair(self) -> None:
        """Resume what is paused and heal what is cut (a scenario that failed half-way leaves both)."""
        for name in list(self._paused):
            self.resume(name)
        if self._blocked:
            self.heal()

    def close(self) -> None:
        """Remove our rules wherever they are (teardown; the namespaces go away right after)."""
        self._blocked = set()
        try:
            self._apply_rules()
        except Exception:
            pass
