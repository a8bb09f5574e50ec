"""A deterministic simulated network for the membership core (tests and bench/membership_sim.py).

Every member is a real :class:`SwimMembership`; the network delivers its
datagrams after a configurable delay, drops a configurable fraction, can cut
the nodes into partitions, and can kill a node (its messages stop, it stops
answering). Time is a number stepped by :meth:`Simulation.run_until`; the same
seed gives the same run.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from aegiskv.cluster.membership import Address, State, SwimConfig, SwimMembership


@dataclass
class NetworkConditions:
    loss: float = 0.0  # fraction of datagrams dropped
    delay: float = 0.001  # seconds from send to delivery
    jitter: float = 0.0005  # up to this much more, uniformly
    partitions: list[set[str]] = field(default_factory=list)  # nodes in different sets cannot talk


class Simulation:
    def __init__(
        self,
        size: int,
        config: SwimConfig | None = None,
        conditions: NetworkConditions | None = None,
        seed: int = 1,
        tick: float = 0.1,
    ) -> None:
        self.rng = random.Random(seed)
        self.config = config or SwimConfig()
        self.conditions = conditions or NetworkConditions()
        self.tick_interval = tick
        self.now = 0.0
        self.nodes: dict[str, SwimMembership] = {}
        self.by_address: dict[Address, str] = {}
        self.dead: set[str] = set()
        self._queue: list[tuple[float, int, Address, Address, bytes]] = []
        self._sequence = itertools.count()
        self.delivered = 0
        self.dropped = 0
        self.observers: list[Callable[[str, str, State, float], None]] = []  # (observer, subject, state, time)
        for index in range(size):
            self.add_node(f"n{index:04d}")
        self._bootstrap()

    def address_of(self, node_id: str) -> Address:
        high, low = divmod(int(node_id[1:]) + 1, 250)
        return (f"10.0.{high}.{low}", 7701)

    def _bootstrap(self) -> None:
        """Start as if a full-state exchange had already happened: every node knows every other.

        One combined state merged into each node: O(N^2) member entries, where
        merging the nodes pairwise was O(N^3) (minutes at 300 nodes, hours at 1,000).
        """
        entries = [entry for node in self.nodes.values() for entry in json.loads(node.full_state())["m"]]
        combined = json.dumps({"t": "state", "from": "bootstrap", "m": entries}).encode()
        for node in self.nodes.values():
            node.merge_state(combined, self.now)

    def add_node(self, node_id: str, incarnation: int = 0) -> SwimMembership:
        address = self.address_of(node_id)
        node = SwimMembership(
            node_id,
            address,
            incarnation=incarnation,
            config=self.config,
            rng=random.Random(self.rng.random()),
            now=self.now,
        )

        def observe(member: object, observer: str = node_id) -> None:
            for callback in self.observers:
                callback(observer, member.node_id, member.state, self.now)  # type: ignore[attr-defined]

        node.listeners.append(observe)
        self.nodes[node_id] = node
        self.by_address[address] = node_id
        self.dead.discard(node_id)
        return node

    def join(self, node_id: str, seed: str, incarnation: int = 0) -> SwimMembership:
        """A node joining through ``seed`` (its ping carries its ALIVE; a push-pull follows)."""
        node = self.add_node(node_id, incarnation=incarnation)
        self._send(node.me.address, node.join([self.nodes[seed].me.address], self.now))
        node.merge_state(self.nodes[seed].full_state(), self.now)
        self.nodes[seed].merge_state(node.full_state(), self.now, disseminate=True)
        return node

    def kill(self, node_id: str) -> None:
        self.dead.add(node_id)

    def _reachable(self, source: str, target: str) -> bool:
        return all((source in group) == (target in group) for group in self.conditions.partitions)

    def _send(self, source: Address, messages: list[tuple[Address, bytes]]) -> None:
        conditions = self.conditions
        for target, payload in messages:
            if conditions.loss and self.rng.random() < conditions.loss:
                self.dropped += 1
                continue
            at = self.now + conditions.delay + self.rng.random() * conditions.jitter
            heapq.heappush(self._queue, (at, next(self._sequence), source, target, payload))

    def step(self) -> None:
        end = self.now + self.tick_interval
        queue = self._queue
        while queue and queue[0][0] <= end:
            at, _, source, target, payload = heapq.heappop(queue)
            self.now = max(self.now, at)
            sender = self.by_address.get(source)
            receiver = self.by_address.get(target)
            if receiver is None or receiver in self.dead or sender is None:
                continue
            if not self._reachable(sender, receiver):
                self.dropped += 1
                continue
            self.delivered += 1
            self._send(target, self.nodes[receiver].receive(source, payload, self.now))
        self.now = end
        for node_id, node in self.nodes.items():
            if node_id not in self.dead:
                self._send(node.me.address, node.tick(self.now))

    def run_until(self, time: float) -> None:
        while self.now < time:
            self.step()

    def run_while(self, condition: Callable[[], bool], limit: float) -> bool:
        """Step until ``condition()`` is false or ``limit`` seconds pass; returns True if it became false."""
        deadline = self.now + limit
        while condition():
            if self.now >= deadline:
                return False
            self.step()
        return True

    def view(self, observer: str, subject: str) -> State | None:
        member = self.nodes[observer].member(subject)
        return None if member is None else member.state

    def alive_nodes(self) -> list[str]:
        return [node_id for node_id in self.nodes if node_id not in self.dead]
