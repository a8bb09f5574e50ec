"""SWIM membership with Lifeguard refinements, as a sans-IO state machine.

The core never touches a socket or a clock: :meth:`SwimMembership.tick` and
:meth:`SwimMembership.receive` take the current time and return the datagrams
to send as ``(address, payload)`` pairs. The same code runs in a real node
(aegiskv.cluster.gossip wires it to a UDP socket in the reactor) and in a
simulation of a thousand nodes stepped by a fake clock (bench/membership_sim.py).

The protocol, after Das et al. (SWIM) and HashiCorp's memberlist/Lifeguard:

* **Probes.** Every ``probe_interval`` a member pings the next member of a
  shuffled round-robin list. No ack within ``probe_timeout``: it asks
  ``indirect_checks`` other members to ping the target for it (PING_REQ).
  No ack by the end of the period: the target becomes *suspect*.
* **Suspicion** is gossiped to everyone. The suspect refutes it by raising its
  incarnation number. Otherwise, after a timeout it is declared *dead*. The
  timeout starts at ``suspicion_max_mult`` times the minimum and shrinks toward
  the minimum (``suspicion_mult * log10(N) * probe_interval``) as independent
  members confirm the suspicion (Lifeguard: one slow member cannot kill a
  healthy one quickly, many agreeing members kill a dead one fast).
* **Buddy system** (Lifeguard): a ping to a suspect carries the suspicion
  first, so a live suspect learns of it at once and refutes. It does so for
  as long as the prober holds the suspicion, not only while the suspicion is
  still being retransmitted, and a suspect that hears a suspicion it has
  already refuted sends its refutation again (first in its ack): in a small
  cluster an update is sent only a few times, and a refutation whose copies all
  missed the first suspector would otherwise leave it to its timeout.
* **Local health** (Lifeguard): a member that misses acks, or has to refute
  suspicions of itself, raises its health score and stretches its probe
  timeout, because the fault is then likely its own.
* **Dissemination** piggybacks membership updates on every ping, ack and
  ping-request; each update is sent at most ``retransmit_mult * log10(N+1)``
  times, least-sent first, so the per-member load does not grow with N.
* **Tombstones.** Dead and departed members are remembered for
  ``dead_reclaim_time`` so that an old "alive" message cannot bring them back
  as ghosts; a restarted node comes back with a higher incarnation (its start
  time in milliseconds), which does supersede the tombstone.
* **Reconnecting** (Serf's reconnect, in UDP): every ``reconnect_mult`` probe
  intervals a member pings one member it holds dead (not one that left),
  telling it so. A member that was only cut off (a partition that healed)
  refutes at once with a higher incarnation, in its ack, which brings it back;
  and it answers the ping of a member *it* holds dead with that news first, so
  both sides of a healed partition take each other back within a round trip
  instead of never (nobody probes the dead). A member really dead answers
  nothing; a ghost "alive" at an old incarnation still changes nothing.
* **Full state** (push-pull) is exchanged over TCP on join and every
  ``push_pull_interval`` (aegiskv.cluster.gossip): :meth:`full_state` and
  :meth:`merge_state`.

Messages are compact JSON objects (aegiskv.cluster.wire signs them when a
gossip secret is set). JSON keeps the format readable in a packet capture and
parsing it cannot execute anything; a binary encoding would save about half
the bytes, which the simulation shows is not where the cost is.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import json
import math
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aegiskv.cluster.interfaces import GossipTiming, MembershipOptions

Address = tuple[str, int]
Outbound = list[tuple[Address, bytes]]


class State(enum.IntEnum):
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@dataclass
class Member:
    node_id: str
    address: Address  # gossip (UDP) address others reach it at
    incarnation: int
    state: State = State.ALIVE
    meta: dict[str, str] = field(default_factory=dict)  # e.g. client and RESP addresses
    state_since: float = 0.0  # when it entered its current state (our clock)

    @property
    def live(self) -> bool:
        return self.state in (State.ALIVE, State.SUSPECT)

    @property
    def left(self) -> bool:
        """It stopped cleanly and said so (not declared dead): the leases' quorum floor may go down."""
        return self.state == State.LEFT


@dataclass(frozen=True)
class SwimConfig(GossipTiming):
    """The plugin-facing timing plus this implementation's own knobs.

    Besides piggybacking on probes, pending updates are pushed to
    ``gossip_nodes`` random members every ``gossip_interval`` (memberlist's
    defaults): a suspicion or a death then reaches everyone in a few hundred
    milliseconds instead of one hop per probe interval. Nothing is sent when
    there is nothing new.
    """

    suspicion_max_mult: int = 6
    retransmit_mult: int = 4
    max_updates_per_message: int = 12
    max_health: int = 8  # local-health score ceiling (probe timeout is multiplied by score + 1)
    reconnect_mult: int = 2  # a member held dead is pinged every this many probe intervals (0: never)


@dataclass
class _Update:
    """A membership fact being gossiped, and how often it has been sent."""

    node_id: str
    state: State
    incarnation: int
    address: Address
    meta: dict[str, str]
    source: str  # who asserts it (for suspicion confirmations)
    transmits: int = 0

    def encode(self) -> list[Any]:
        return [
            self.node_id,
            int(self.state),
            self.incarnation,
            self.address[0],
            self.address[1],
            self.meta,
            self.source,
        ]


@dataclass
class _Probe:
    target: str
    seq: int
    started: float
    indirect_sent: bool = False
    acked: bool = False


@dataclass
class _Suspicion:
    started: float
    confirmations: set[str]


class MessageError(ValueError):
    """A gossip message that cannot be understood; it is dropped and counted."""


class SwimMembership:
    """One member's view of the cluster. Not thread-safe: one owner calls it (the reactor)."""

    def __init__(
        self,
        node_id: str,
        address: Address,
        *,
        meta: dict[str, str] | None = None,
        incarnation: int = 0,
        config: SwimConfig | None = None,
        rng: random.Random | None = None,
        now: float = 0.0,
    ) -> None:
        self.config = config or SwimConfig()
        self.rng = rng or random.Random()
        self.me = Member(node_id, address, incarnation, State.ALIVE, dict(meta or {}), now)
        self.members: dict[str, Member] = {node_id: self.me}
        self._updates: dict[str, _Update] = {}
        self._probe_order: list[str] = []
        self._probe: _Probe | None = None
        self._next_probe_at = now
        self._next_gossip_at = now
        self._next_reconnect_at = now
        self._seq = 0
        # PING_REQ relays: our seq -> (requester address, requester's seq)
        self._relays: dict[int, tuple[Address, int, float]] = {}
        self._suspicions: dict[str, _Suspicion] = {}
        self.health = 0
        self.leaving = False
        self._size_cache = 0
        self.listeners: list[Callable[[Member], None]] = []
        self.counters: dict[str, int] = {
            "messages_sent": 0,
            "messages_received": 0,
            "bytes_sent": 0,
            "bytes_received": 0,
            "malformed": 0,
            "refutations": 0,
            "refutations_repeated": 0,
            "pingreq_refused": 0,
            "reconnect_pings": 0,
        }
        self._queue_update(self.me, source=node_id)

    # -- views -----------------------------------------------------------------------

    def live_members(self) -> list[Member]:
        """Alive and suspect members, this one included, sorted by id."""
        return sorted((m for m in self.members.values() if m.live), key=lambda m: m.node_id)

    def member(self, node_id: str) -> Member | None:
        return self.members.get(node_id)

    def _others(self, *states: State) -> list[Member]:
        wanted = states or (State.ALIVE, State.SUSPECT)
        return [m for m in self.members.values() if m.node_id != self.me.node_id and m.state in wanted]

    def state_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("alive", "suspect", "dead", "left"), 0)
        for member in self.members.values():
            counts[member.state.name.lower()] += 1
        return counts

    def estimated_size(self) -> int:
        """Live members, recounted only after a change (it is read for every message sent)."""
        if not self._size_cache:
            self._size_cache = max(1, sum(1 for m in self.members.values() if m.live))
        return self._size_cache

    # -- driving ------------------------------------------------------------------------

    def tick(self, now: float) -> Outbound:
        """Advance timers: probes, indirect probes, suspicion timeouts, tombstones."""
        out: Outbound = []
        if self.leaving:
            return out
        probe = self._probe
        config = self.config
        if probe is not None and not probe.acked:
            if not probe.indirect_sent and now >= probe.started + self._probe_timeout():
                probe.indirect_sent = True
                out.extend(self._send_indirect(probe, now))
            if now >= probe.started + config.probe_interval:
                self._probe = None
                self._probe_failed(probe.target, now)
        elif probe is not None and now >= probe.started + config.probe_interval:
            self._probe = None
        if now >= self._next_probe_at and self._probe is None:
            self._next_probe_at = now + config.probe_interval
            out.extend(self._start_probe(now))
        if now >= self._next_gossip_at:
            self._next_gossip_at = now + config.gossip_interval
            out.extend(self._gossip(now))
        if config.reconnect_mult and now >= self._next_reconnect_at:
            self._next_reconnect_at = now + config.reconnect_mult * config.probe_interval
            out.extend(self._reconnect(now))
        self._expire_suspicions(now)
        self._reclaim_tombstones(now)
        self._expire_relays(now)
        return out

    def receive(self, source: Address, payload: bytes, now: float) -> Outbound:
        """Handle one datagram; returns replies. Malformed input is counted and dropped."""
        self.counters["messages_received"] += 1
        self.counters["bytes_received"] += len(payload)
        try:
            message = json.loads(payload)
            if not isinstance(message, dict):
                raise MessageError("not an object")
            kind = message.get("t")
            updates = message.get("u", [])
            if not isinstance(updates, list):
                raise MessageError("updates is not a list")
            for raw in updates:
                self._apply(_decode_update(raw), now)
            return self._handle(kind, message, source, now)
        except (MessageError, ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError):
            self.counters["malformed"] += 1
            return []

    def join(self, seeds: Iterable[Address], now: float) -> Outbound:
        """Announce ourselves to ``seeds`` (UDP pings carrying our ALIVE); push-pull does the rest."""
        out: Outbound = []
        for seed in seeds:
            if seed != self.me.address:
                self._seq += 1
                out.append(self._message(seed, {"t": "ping", "s": self._seq, "to": ""}, now, force_self=True))
        return out

    def leave(self, now: float) -> Outbound:
        """Graceful leave: tell a few members (who gossip it on) that we left, then stop probing."""
        self.me.state = State.LEFT
        self.me.incarnation += 1
        self.me.state_since = now
        self._queue_update(self.me, source=self.me.node_id)
        self.leaving = True
        targets = self._others(State.ALIVE)
        self.rng.shuffle(targets)
        out: Outbound = []
        for member in targets[: max(3, self.config.indirect_checks)]:
            self._seq += 1
            out.append(self._message(member.address, {"t": "ping", "s": self._seq, "to": member.node_id}, now))
        return out

    # -- full state (push-pull over TCP) -----------------------------------------------------

    def full_state(self) -> bytes:
        members = [
            _Update(m.node_id, m.state, m.incarnation, m.address, m.meta, self.me.node_id).encode()
            for m in self.members.values()
        ]
        return json.dumps({"t": "state", "from": self.me.node_id, "m": members}, separators=(",", ":")).encode()

    def merge_state(self, payload: bytes, now: float, disseminate: bool = False) -> None:
        """Take in another member's full state (push-pull).

        ``disseminate`` also gossips what was new to us: a seed does when a new
        member joins through it (the rest of the cluster must hear of the
        newcomer); the newcomer itself, and the periodic anti-entropy exchange,
        do not (the others already know what a full state holds, and gossiping
        a thousand members' entries from one node would flood the cluster).
        """
        try:
            message = json.loads(payload)
        except ValueError:
            raise MessageError("state is not JSON") from None
        if not isinstance(message, dict) or message.get("t") != "state" or not isinstance(message.get("m"), list):
            raise MessageError("not a state message")
        for raw in message["m"]:
            update = _decode_update(raw)
            # Another member's word that someone is dead is taken as a suspicion
            # only: we may still reach it (memberlist does the same).
            if update.state == State.DEAD and update.node_id != self.me.node_id:
                update.state = State.SUSPECT
            self._apply(update, now, disseminate)

    # -- probing ---------------------------------------------------------------------------

    def _probe_timeout(self) -> float:
        return self.config.probe_timeout * (self.health + 1)

    def _start_probe(self, now: float) -> Outbound:
        target = self._next_target()
        if target is None:
            return []
        self._seq += 1
        self._probe = _Probe(target.node_id, self._seq, now)
        return [self._message(target.address, {"t": "ping", "s": self._seq, "to": target.node_id}, now, about=target)]

    def _next_target(self) -> Member | None:
        for _ in range(2):
            while self._probe_order:
                node_id = self._probe_order.pop()
                member = self.members.get(node_id)
                if member is not None and member.live and node_id != self.me.node_id:
                    return member
            candidates = [m.node_id for m in self._others()]
            if not candidates:
                return None
            self.rng.shuffle(candidates)
            self._probe_order = candidates
        return None

    def _gossip(self, now: float) -> Outbound:
        if not self._updates or not self.config.gossip_nodes:
            return []
        targets = self._others()
        self.rng.shuffle(targets)
        out: Outbound = []
        for member in targets[: self.config.gossip_nodes]:
            if not self._updates:
                break  # every update used up its retransmissions
            out.append(self._message(member.address, {"t": "gossip"}, now))
        return out

    def _reconnect(self, now: float) -> Outbound:
        """Ping one member held dead, telling it so: if it is only cut off, its ack refutes.

        Not a probe (no suspicion follows silence): a dead member stays dead
        until it answers with a higher incarnation.
        """
        dead = self._others(State.DEAD)
        if not dead:
            return []
        target = self.rng.choice(dead)
        self._seq += 1
        self.counters["reconnect_pings"] += 1
        body = {"t": "ping", "s": self._seq, "to": target.node_id}
        return [self._message(target.address, body, now, about=target, force_self=True)]

    def _send_indirect(self, probe: _Probe, now: float) -> Outbound:
        target = self.members.get(probe.target)
        if target is None:
            return []
        helpers = [m for m in self._others(State.ALIVE) if m.node_id != probe.target]
        self.rng.shuffle(helpers)
        return [
            self._message(
                helper.address,
                {"t": "pingreq", "s": probe.seq, "to": target.node_id, "h": target.address[0], "p": target.address[1]},
                now,
            )
            for helper in helpers[: self.config.indirect_checks]
        ]

    def _probe_failed(self, node_id: str, now: float) -> None:
        self.health = min(self.config.max_health, self.health + 1)
        member = self.members.get(node_id)
        if member is not None and member.state == State.ALIVE:
            self._suspect(member, self.me.node_id, member.incarnation, now)
        elif member is not None and member.state == State.SUSPECT:
            # Our own failed probe of a suspect is an independent confirmation:
            # count it and gossip it (with us as the source) so others count it too.
            suspicion = self._suspicions.get(node_id)
            if suspicion is not None:
                suspicion.confirmations.add(self.me.node_id)
            self._queue_update(member, self.me.node_id)

    # -- messages ----------------------------------------------------------------------------

    def _handle(self, kind: Any, message: dict[str, Any], source: Address, now: float) -> Outbound:
        if self.leaving:
            return []
        seq = int(message.get("s", 0))
        if kind == "ping":
            # A member we hold dead pings us (a partition healed): our ack tells it first, so it
            # refutes and comes back rather than waiting for its tombstone to go.
            sender = self.members.get(str(message.get("f", "")))
            about = sender if sender is not None and sender.state == State.DEAD else None
            return [self._message(source, {"t": "ack", "s": seq}, now, about=about)]
        if kind == "ack":
            probe = self._probe
            if probe is not None and probe.seq == seq:
                probe.acked = True
                self.health = max(0, self.health - 1)
                return []
            relay = self._relays.pop(seq, None)
            if relay is not None:
                requester, their_seq, _expires = relay
                return [self._message(requester, {"t": "ack", "s": their_seq}, now)]
            return []
        if kind == "gossip":
            return []  # its updates were applied above; nothing to answer
        if kind == "pingreq":
            # Only relay to a member we know at that address: a ping request must
            # not make us send datagrams to arbitrary hosts (a reflector).
            target_id = str(message.get("to", ""))
            target = (str(message["h"]), int(message["p"]))
            known = self.members.get(target_id)
            if known is None or known.address != target or not known.live:
                self.counters["pingreq_refused"] += 1
                return []
            self._seq += 1
            self._relays[self._seq] = (source, seq, now + self.config.probe_interval)
            return [self._message(target, {"t": "ping", "s": self._seq, "to": str(message.get("to", ""))}, now)]
        raise MessageError(f"unknown message type {kind!r}")

    def _message(
        self, address: Address, body: dict[str, Any], now: float, about: Member | None = None, force_self: bool = False
    ) -> tuple[Address, bytes]:
        body["f"] = self.me.node_id
        body["u"] = self._piggyback(about, force_self)
        payload = json.dumps(body, separators=(",", ":")).encode()
        self.counters["messages_sent"] += 1
        self.counters["bytes_sent"] += len(payload)
        return address, payload

    def _piggyback(self, about: Member | None, force_self: bool) -> list[list[Any]]:
        """Least-sent updates first; the ones about the probe target before all (buddy system)."""
        updates = self._updates
        accused = about is not None and about.state in (State.SUSPECT, State.DEAD)
        if not updates and not force_self and not accused:
            return []
        limit = self.config.retransmit_mult * math.ceil(math.log10(self.estimated_size() + 1))
        chosen: list[_Update] = []
        if accused:
            assert about is not None
            # Buddy system: every probe of a suspect tells it so, even after the
            # suspicion's own retransmissions ran out, until it refutes or dies.
            # The same for a member held dead that we reach again (reconnecting).
            news = updates.get(about.node_id)
            if news is None or news.state != about.state:
                news = _Update(
                    about.node_id, about.state, about.incarnation, about.address, about.meta, self.me.node_id
                )
            chosen.append(news)
        ordered = sorted((u for u in updates.values() if u not in chosen), key=lambda u: u.transmits)
        chosen.extend(ordered[: self.config.max_updates_per_message - len(chosen)])
        if force_self and all(u.node_id != self.me.node_id for u in chosen):
            chosen.append(
                _Update(
                    self.me.node_id, self.me.state, self.me.incarnation, self.me.address, self.me.meta, self.me.node_id
                )
            )
        encoded = []
        for update in chosen:
            encoded.append(update.encode())
            update.transmits += 1
            if update.transmits >= limit and updates.get(update.node_id) is update:
                del updates[update.node_id]
        return encoded

    def update_meta(self, meta: dict[str, str], now: float) -> None:
        """Publish new metadata for this node (which shards it leads, say).

        A new incarnation carries it, so it supersedes the old everywhere as any
        other news of this node does (memberlist's UpdateNode).
        """
        if meta == self.me.meta:
            return
        self.me.meta = dict(meta)
        self.me.incarnation += 1
        self._queue_update(self.me, self.me.node_id)
        self._notify(self.me)

    # -- state changes -------------------------------------------------------------------------

    def _queue_update(self, member: Member, source: str) -> None:
        self._updates[member.node_id] = _Update(
            member.node_id, member.state, member.incarnation, member.address, member.meta, source
        )

    def _apply(self, update: _Update, now: float, disseminate: bool = True) -> None:  # noqa: C901 - SWIM's update rules by state and incarnation, side by side
        """SWIM's precedence rules: higher incarnation wins; at equal incarnation dead > suspect > alive."""
        me = self.me
        if update.node_id == me.node_id:
            if update.state in (State.SUSPECT, State.DEAD) and not self.leaving:
                if update.incarnation >= me.incarnation:
                    me.incarnation = update.incarnation + 1  # refute
                    self.counters["refutations"] += 1
                    self.health = min(self.config.max_health, self.health + 1)
                else:
                    # Someone still holds a suspicion we refuted already: our refutation
                    # used up its retransmissions without reaching them. Send it again
                    # (the reply to their message carries it first, being the least sent).
                    self.counters["refutations_repeated"] += 1
                self._queue_update(me, me.node_id)
            return
        member = self.members.get(update.node_id)
        if member is None:
            if update.state in (State.DEAD, State.LEFT):
                return  # never heard of it alive: nothing to bury
            member = Member(update.node_id, update.address, update.incarnation, update.state, update.meta, now)
            self.members[member.node_id] = member
            self._size_cache = 0
            if update.state == State.SUSPECT:
                self._suspicions[member.node_id] = _Suspicion(now, {update.source})
            if disseminate:
                self._queue_update(member, update.source)
            self._notify(member)
            return
        if update.state == State.ALIVE:
            if update.incarnation <= member.incarnation:
                return  # old news, or a ghost of a dead member
            self._set(member, State.ALIVE, update.incarnation, now, update, disseminate)
        elif update.state == State.SUSPECT:
            if member.state == State.SUSPECT and update.incarnation == member.incarnation:
                suspicion = self._suspicions.get(member.node_id)
                if suspicion is not None and update.source not in suspicion.confirmations:
                    suspicion.confirmations.add(update.source)  # Lifeguard: shortens the timeout
                    if disseminate:
                        self._queue_update(member, update.source)
                return
            if update.incarnation < member.incarnation or member.state in (State.DEAD, State.LEFT):
                return
            self._suspect(member, update.source, update.incarnation, now)
        else:  # DEAD or LEFT
            if member.state in (State.DEAD, State.LEFT) and update.incarnation <= member.incarnation:
                return
            if update.incarnation < member.incarnation:
                return
            self._set(member, update.state, update.incarnation, now, update, disseminate)

    def _set(
        self,
        member: Member,
        state: State,
        incarnation: int,
        now: float,
        update: _Update | None = None,
        disseminate: bool = True,
    ) -> None:
        changed = member.state != state
        moved = False
        if changed:
            self._size_cache = 0
        member.state = state
        member.incarnation = incarnation
        if update is not None:
            # A restarted member may come back on new ports: listeners must hear of it.
            moved = member.address != update.address or member.meta != update.meta
            member.address = update.address
            member.meta = dict(update.meta)
        if state != State.SUSPECT:
            self._suspicions.pop(member.node_id, None)
        if changed:
            member.state_since = now
        if disseminate:
            self._queue_update(member, update.source if update is not None else self.me.node_id)
        if changed or moved:
            self._notify(member)

    def _suspect(self, member: Member, source: str, incarnation: int, now: float) -> None:
        member.incarnation = incarnation
        self._suspicions[member.node_id] = _Suspicion(now, {source})
        self._set(member, State.SUSPECT, incarnation, now)
        self._updates[member.node_id].source = source

    def _suspicion_timeout(self, confirmations: int) -> float:
        config = self.config
        size = self.estimated_size()
        minimum = config.suspicion_mult * max(1.0, math.log10(size)) * config.probe_interval
        maximum = config.suspicion_max_mult * minimum
        expected = config.suspicion_mult - 2
        if size - 2 < expected:  # too few members to wait for confirmations
            expected = 0
        if expected <= 0:
            return minimum
        fraction = math.log(confirmations + 1) / math.log(expected + 1)
        return max(minimum, maximum - (maximum - minimum) * min(1.0, fraction))

    def _expire_suspicions(self, now: float) -> None:
        for node_id, suspicion in list(self._suspicions.items()):
            member = self.members.get(node_id)
            if member is None or member.state != State.SUSPECT:
                del self._suspicions[node_id]
                continue
            # The first suspector does not confirm itself; later sources each do.
            confirmations = max(0, len(suspicion.confirmations) - 1)
            if now >= suspicion.started + self._suspicion_timeout(confirmations):
                del self._suspicions[node_id]
                self._set(member, State.DEAD, member.incarnation, now)

    def _reclaim_tombstones(self, now: float) -> None:
        reclaim = self.config.dead_reclaim_time
        for node_id, member in list(self.members.items()):
            if member.state in (State.DEAD, State.LEFT) and now - member.state_since > reclaim:
                del self.members[node_id]
                self._updates.pop(node_id, None)
                self._size_cache = 0

    def _expire_relays(self, now: float) -> None:
        for seq, (_requester, _their_seq, expires) in list(self._relays.items()):
            if now > expires:
                del self._relays[seq]

    def _notify(self, member: Member) -> None:
        for listener in self.listeners:
            listener(member)


def _valid_meta(name: str, value: str) -> bool:
    """Addresses in meta ("client", "resp", "replica", "peer", "health") must read as host:port ([v6]:port).

    Clients resolve the host.
    """
    if name == "lead":  # the shards a node holds leases for, as a bitmap in hex (1024 chars: 4096 shards)
        return len(value) <= 1024 and all(char in "0123456789abcdef" for char in value)
    if name not in ("client", "resp", "replica", "peer", "health"):
        return len(name) <= 64 and len(value) <= 256
    host, separator, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not separator or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        return False
    if host and _HOST_NAME.fullmatch(host) is None:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
    return True


_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")


def swim_membership(options: MembershipOptions) -> SwimMembership:
    """The built-in membership (entry point ``swim`` in group ``aegiskv.membership``)."""
    return SwimMembership(
        options.node_id,
        options.address,
        meta=options.meta,
        incarnation=options.incarnation,
        config=SwimConfig(**dataclasses.asdict(options.timing)),
        now=options.now,
    )


def _decode_update(raw: Any) -> _Update:
    if not isinstance(raw, list) or len(raw) != 7:
        raise MessageError("update is not a 7-element list")
    node_id, state, incarnation, host, port, meta, source = raw
    if not isinstance(node_id, str) or not node_id or not isinstance(source, str):
        raise MessageError("bad node id")
    if not isinstance(incarnation, int) or incarnation < 0 or not isinstance(port, int) or not 1 <= port <= 65535:
        raise MessageError("bad incarnation or port")
    if not isinstance(host, str) or not isinstance(meta, dict):
        raise MessageError("bad host or meta")
    try:
        # IP literals only: a host name would make the reactor block on DNS to send to it.
        ipaddress.ip_address(host)
    except ValueError:
        raise MessageError(f"host {host[:64]!r} is not an IP address") from None
    if not all(isinstance(k, str) and isinstance(v, str) and _valid_meta(k, v) for k, v in meta.items()):
        raise MessageError("bad meta")
    return _Update(node_id, State(state), incarnation, (host, port), meta, source)
