"""The gossip transport: SWIM membership on a real UDP socket, state exchange over TCP.

:class:`SwimMembership` is sans-IO; this module gives it a clock, sockets and
the reactor:

* one UDP socket on the ``--gossip`` port for probes, acks and ping requests
  (each datagram sealed by :class:`~aegiskv.cluster.wire.Envelope`);
* a TCP listener on the same port number for full-state (push-pull) exchanges:
  the caller sends its state, the listener answers with its own. A joining node
  exchanges with a seed; every ``push_pull_interval`` a random member is picked.
  The connecting side runs in the worker pool (a blocking connect must not hold
  the reactor); the answering side is an ordinary reactor connection;
* a timer that calls :meth:`SwimMembership.tick` every ``TICK_SECONDS``;
* joining through ``--seeds``, retried with exponential backoff (0.5 s doubling
  to 10 s) until one exchange succeeds, so a node that starts before its seeds
  still joins once they are up;
* with each periodic exchange, one with a seed that is no live member's
  address, if there is one: after a partition that outlasted the tombstones
  (``dead_reclaim_time``) each side has forgotten the other, and only the
  seeds still say where to look. (A partition healed sooner is mended by the
  membership itself, which pings the members it holds dead.)

Whenever the set of live members (or their addresses) changes, ``on_change``
gets the new member list for the shard map.

TCP frames are a frame header (:meth:`Envelope.seal_frame_header`: the length,
signed when a gossip secret is set) and a sealed state message of at most
``MAX_STATE_BYTES``. The listener reads the header alone, checks its signature,
freshness and nonce, and only then buffers the frame it announces: a stranger
can make a node hold one header's bytes per connection, and a connection that
sends a bad one is closed and counted at once (``header_refused``). Until its
header verifies, a connection counts against ``max_unauthenticated_memory``
and is the first to go when the port is full (net/reactor.py). Without a
secret nothing can be verified; the frame then stays unauthenticated bytes,
bounded by that budget.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from loguru import logger

from aegiskv.cluster.interfaces import MembershipCore, MemberView
from aegiskv.cluster.seen_members import SeenMembers
from aegiskv.cluster.shard_map import Endpoint
from aegiskv.cluster.shard_map import Member as ShardMember
from aegiskv.cluster.wire import Envelope, EnvelopeError
from aegiskv.net.poller import READ
from aegiskv.net.reactor import ConnectionHandler, ListenerOptions, Reactor
from aegiskv.obs.repeats import RepeatLimiter

Address = tuple[str, int]

TICK_SECONDS = 0.05
# A full state is about 150 bytes per member: this is room for 25,000 members.
MAX_STATE_BYTES = 4 * 1024 * 1024
_DATAGRAMS_PER_EVENT = 64
_JOIN_BACKOFF_FIRST = 0.5
_JOIN_BACKOFF_MAX = 10.0
_EXCHANGE_TIMEOUT = 3.0


def parse_endpoint(text: str, default_host: str) -> Endpoint:
    """``host:port`` (``[v6]:port``; an empty host means ``default_host``)."""
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") else host
    return Endpoint(host or default_host, int(port))


def bind_gossip(address: Address) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same port (port 0: the OS picks one free for both)."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    for _attempt in range(20):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            udp.bind(address)
        except OSError:
            udp.close()
            raise
        port = udp.getsockname()[1]
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((address[0], port))
        except OSError:
            udp.close()
            tcp.close()
            if address[1]:
                raise
            continue  # the OS gave us a UDP port whose TCP twin is taken: try another
        udp.setblocking(False)
        return udp, tcp
    raise OSError(f"no port free for both UDP and TCP on {address[0]}")


def advertised_gossip_address(bound: Address, advertise: str | None, seeds: Sequence[Address]) -> Address:
    """What others should send to: the advertised address, the bound one, or a routed guess."""
    if advertise:
        advertised_host, _, advertised_port = advertise.rpartition(":")
        return advertised_host.strip("[]"), int(advertised_port)
    host, port = bound
    if host not in ("0.0.0.0", "::", ""):
        return host, port
    # A wildcard bind: the local address this host uses to reach the first seed,
    # or without seeds the one it would use for the default route (TEST-NET-1,
    # RFC 5737: a UDP connect picks a route and sends nothing).
    for seed in [*seeds, ("192.0.2.1", 9)]:
        try:
            with socket.socket(socket.AF_INET6 if ":" in seed[0] else socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect(seed)  # UDP connect sends nothing; it only picks a route
                local_host: str = probe.getsockname()[0]
                return local_host, port
        except OSError:
            continue
    return "127.0.0.1", port


def resolve_seeds(seeds: Sequence[Address]) -> list[Address]:
    """Seeds as IP addresses, resolved once at start-up (never on the reactor while serving)."""
    resolved = []
    for host, port in seeds:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as error:
            logger.warning("seed {}:{} does not resolve ({}); skipped", host, port, error)
            continue
        resolved.append((str(infos[0][4][0]), port))
    return resolved


def _receive_exactly(sock: socket.socket, count: int) -> bytes:
    chunks = []
    while count:
        chunk = sock.recv(min(count, 1 << 20))
        if not chunk:
            raise ConnectionError("peer closed the state exchange early")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def exchange_state(
    address: Address, framed_state: bytes, envelope: Envelope, timeout: float = _EXCHANGE_TIMEOUT
) -> bytes:
    """Blocking push-pull (worker thread): send our framed state, return the peer's sealed state.

    The answer's header is checked before its frame is read (signature and
    freshness: ``open_frame_header`` without state, safe off the reactor); the
    frame itself is opened on the reactor with the replay check.
    """
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(framed_state)
        try:
            length = envelope.open_frame_header(_receive_exactly(sock, envelope.frame_header_size), remember=False)
        except EnvelopeError as refused:
            raise ConnectionError(f"answer refused: {refused}") from None
        if length > MAX_STATE_BYTES:
            raise ConnectionError(f"state of {length} bytes is over the {MAX_STATE_BYTES}-byte limit")
        return _receive_exactly(sock, length)


class _StateExchange(ConnectionHandler):
    """The answering side of a push-pull: read one framed state, answer with ours, close."""

    def __init__(self, service: GossipService) -> None:
        self._service = service
        self._buffer = bytearray()
        self._length: int | None = None  # what the verified header announced; None: no header yet
        self._transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._transport.closed:
            return
        buffer = self._buffer
        buffer += data
        envelope = self._service.envelope
        if self._length is None:
            size = envelope.frame_header_size
            if buffer[0] != envelope.frame_version:
                self._refuse(EnvelopeError("malformed", f"a frame header starting with byte {buffer[0]}"))
                return
            if len(buffer) < size:
                return  # at most one header's bytes wait (a read holds at most one)
            try:
                length = envelope.open_frame_header(bytes(buffer[:size]))
            except EnvelopeError as refused:
                self._refuse(refused, counted=True)
                return
            if length > MAX_STATE_BYTES:
                self._refuse(EnvelopeError("malformed", f"a frame of {length} bytes (limit {MAX_STATE_BYTES})"))
                return
            del buffer[:size]
            self._length = length
            if envelope.signed:
                self._transport.mark_trusted()  # the header is signed: a member sent it
        length = self._length
        if len(buffer) < length:
            return
        if len(buffer) > length:
            self._refuse(EnvelopeError("malformed", "bytes after the frame"))
            return
        sealed = bytes(buffer)
        buffer.clear()
        reply = self._service.answer_exchange(sealed, getattr(self._transport, "peer", None))
        if reply is not None:
            self._transport.write(self._service.frame(reply))
        self._transport.close(flush=True)

    def _refuse(self, refused: EnvelopeError, counted: bool = False) -> None:
        """A bad header or frame: close at once, count it, one log line per host (repeats counted).

        ``counted``: the envelope already counted it under its drop reason.
        """
        self._buffer.clear()
        service = self._service
        service.counters["header_refused"] += 1
        if not counted:
            service.envelope.dropped[refused.reason] += 1
        peer = getattr(self._transport, "peer", None)
        host = peer[0] if isinstance(peer, tuple) else peer
        service.repeats.log("INFO", ("header refused", host), "state exchange from {} refused: {}", host, refused)
        self._transport.close(flush=False)

    def partial_request(self) -> bool:
        return bool(self._buffer)

    def input_buffered(self) -> int:
        return len(self._buffer)


class GossipService:
    """Runs one node's membership in the reactor. Reactor thread only, except where noted."""

    def __init__(
        self,
        reactor: Reactor,
        node_id: str,
        bind: Address,
        *,
        advertise: str | None,
        seeds: Sequence[Address],
        secret: bytes | None,
        max_skew: float,
        make_membership: Callable[[Address], MembershipCore],
        push_pull_interval: float,
        on_change: Callable[[list[ShardMember]], None],
    ) -> None:
        self.reactor = reactor
        seeds = resolve_seeds(seeds)
        self._udp, tcp = bind_gossip(bind)
        self.bound: Address = self._udp.getsockname()[:2]
        self.address = advertised_gossip_address(self.bound, advertise, seeds)
        self.seeds = [seed for seed in seeds if seed != self.address and seed != self.bound]
        self.envelope = Envelope(secret, max_skew=max_skew)
        self.node_id = node_id
        self.membership = make_membership(self.address)
        self.membership.listeners.append(self._member_changed)
        self._push_pull_interval = push_pull_interval
        self._on_change = on_change
        self._changed = True
        self._departed: set[str] = set()  # members whose last word was a graceful leave
        # Members reported, as last reported: the dashboard shows the dead ones too, which
        # live_members() no longer lists (bounded under node id churn, see SeenMembers).
        self._seen = SeenMembers()
        self._joined = not self.seeds
        self._join_attempts = 0
        self._exchange_running = False
        self._rejoin_running = False
        self._rng = random.Random()
        # A seed that is down fails every join retry the same way: one line, repeats counted.
        self.repeats = RepeatLimiter()
        self.counters = {
            "send_errors": 0,
            "state_refused": 0,
            "header_refused": 0,
            "exchanges": 0,
            "exchange_failures": 0,
            "membership_errors": 0,
            "unreadable_members": 0,
        }
        self._stats: dict[str, int] = {}
        self._listener = reactor.listen_on(
            tcp,
            ListenerOptions(
                name="gossip",
                protocol_factory=lambda: _StateExchange(self),
                max_connections=64,
                idle_timeout=_EXCHANGE_TIMEOUT * 2,
                request_timeout=_EXCHANGE_TIMEOUT * 2,
                output_high_water=MAX_STATE_BYTES + 128,  # one framed state (the header is 53 bytes)
                counts_as_client=False,
            ),
        )
        reactor.poller.register(self._udp, READ, self)

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.reactor.call_every(TICK_SECONDS, self._tick)
        if self._push_pull_interval:
            self.reactor.call_every(self._push_pull_interval, self._periodic_exchange)
        if self.seeds:
            self._try_join()
        self._publish()
        self._take_stats()

    def leave(self) -> None:
        """Graceful leave: tell some members we are going (they gossip it on)."""
        self._send(self.membership.leave(time.monotonic()))

    def close(self) -> None:
        try:
            self.reactor.poller.unregister(self._udp)
        except (KeyError, ValueError):
            pass
        self._udp.close()

    # -- views --------------------------------------------------------------------------

    def shard_members(self) -> list[ShardMember]:
        """Live members as the shard map lists them; empty hosts become the member's gossip host.

        A member whose published addresses cannot be read is left out (it
        cannot be routed to) and counted.
        """
        members = []
        for member in self.membership.live_members():
            try:
                members.append(_shard_member(member))
            except (ValueError, TypeError):
                self.counters["unreadable_members"] += 1
        return members

    @property
    def joined(self) -> bool:
        """Whether this node is in a cluster: it has no seeds, or an exchange with one (or a peer's with it) worked."""
        return self._joined

    @property
    def departed(self) -> frozenset[str]:
        """Members that left gracefully (and were not seen alive since), as far as the membership tells."""
        return frozenset(self._departed)

    def member_states(self) -> list[tuple[str, str, Address, dict[str, str]]]:
        """Every member seen, as (node id, state, gossip address, meta); reactor thread only.

        The state is the membership's own name for it (alive, suspect, dead, left) when
        its members carry one; a membership plugin whose members do not is read as
        alive for a live member, dead for any other.
        """
        live = {member.node_id: member for member in self.membership.live_members()}
        result = []
        for node_id, member in sorted({**self._seen.as_dict(), **live}.items()):
            state = getattr(member, "state", None)
            name = getattr(state, "name", None)
            if not isinstance(name, str):
                name = "alive" if node_id in live else "dead"
            result.append((node_id, name.lower(), member.address, dict(member.meta)))
        return result

    def set_meta(self, meta: dict[str, str]) -> None:
        """Publish this node's metadata anew (the shards it leads changed)."""
        self.membership.update_meta(meta, time.monotonic())
        self._changed = True

    def stats(self) -> dict[str, int]:
        """Counters as of the last tick. Any thread: INFO runs in the worker pool,
        and the membership itself may only be read on the reactor thread."""
        return dict(self._stats)

    def _take_stats(self) -> None:
        counts = self.membership.state_counts()
        result = {f"members_{state}": counts.get(state, 0) for state in ("alive", "suspect", "dead", "left")}
        result["joined"] = int(self._joined)
        result.update(self.membership.counters)
        result.update(self.counters)
        result.update({f"dropped_{reason}": count for reason, count in self.envelope.dropped.items()})
        self._stats = result  # one reference swap: readers see the old or the new dict

    # -- UDP ----------------------------------------------------------------------------

    def handle_read(self) -> None:
        try:
            self._read_datagrams()
        except Exception:  # noqa: BLE001 - a gossip bug must not stop the reactor
            # Nothing a peer sends may take the reactor (and every client) down.
            self.counters["membership_errors"] += 1
            self.repeats.log("ERROR", "read datagrams", "gossip failed while reading datagrams", exception=True)

    def _read_datagrams(self) -> None:
        membership = self.membership
        for _ in range(_DATAGRAMS_PER_EVENT):
            try:
                data, source = self._udp.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # ICMP errors from earlier sends surface here; nothing to do
            try:
                payload = self.envelope.open(data)
            except EnvelopeError:
                continue
            try:
                replies = membership.receive(source[:2], payload, time.monotonic())
            except Exception as error:  # noqa: BLE001 - a gossip bug must not stop the reactor
                # A membership plugin must drop what it cannot read; one that raises
                # must not take the reactor down. Counted, logged without a traceback
                # per datagram (a stranger could flood the log).
                self.counters["membership_errors"] += 1
                self.repeats.log(
                    "DEBUG", ("membership", source[0]), "membership failed on a datagram from {}: {!r}", source, error
                )
                continue
            self._send(replies)
        self._publish()

    def handle_write(self) -> None:  # never registered for writes
        pass

    def _send(self, outbound: list[tuple[Address, bytes]]) -> None:
        seal, sendto = self.envelope.seal, self._udp.sendto
        for address, payload in outbound:
            try:
                sendto(seal(payload), address)
            except (OSError, OverflowError, ValueError, TypeError):
                self.counters["send_errors"] += 1  # unreachable, buffer full, bad address: SWIM tolerates loss

    def _tick(self) -> None:
        try:
            self._send(self.membership.tick(time.monotonic()))
            self._publish()
        finally:
            self._take_stats()

    # -- TCP state exchange ---------------------------------------------------------------

    def frame(self, sealed: bytes) -> bytes:
        """A sealed state behind its frame header, as the TCP exchange sends it."""
        return self.envelope.seal_frame_header(len(sealed)) + sealed

    def answer_exchange(self, sealed: bytes, peer: object = None) -> bytes | None:
        """A peer's state arrived on our listener (from ``peer``): take it in, return our own (sealed)."""
        try:
            payload = self.envelope.open(sealed)
            # A newcomer joins through us: gossip what was new so the others hear of it.
            self.membership.merge_state(payload, time.monotonic(), disseminate=True)
        except ValueError as refused:  # EnvelopeError, or a state the membership cannot read
            self.counters["state_refused"] += 1
            host = peer[0] if isinstance(peer, tuple) else peer
            self.repeats.log("WARNING", ("answer refused", host), "state exchange from {} refused: {}", host, refused)
            return None
        self._publish()
        return self.envelope.seal(self.membership.full_state())

    def _start_exchange(self, address: Address, joining: bool, rejoin: bool = False) -> None:
        # A rejoin attempt may wait out a connect timeout on a seed that is gone: it runs beside,
        # never instead of, the exchange with a live member.
        if self._rejoin_running if rejoin else self._exchange_running:
            return
        if rejoin:
            self._rejoin_running = True
        else:
            self._exchange_running = True
        framed = self.frame(self.envelope.seal(self.membership.full_state()))
        envelope = self.envelope

        def done(reply: bytes | None, error: BaseException | None) -> None:
            if rejoin:
                self._rejoin_running = False
            else:
                self._exchange_running = False
            if error is not None or reply is None:
                self.counters["exchange_failures"] += 1
                if joining:
                    self.repeats.log(
                        "WARNING", ("join", address), "cannot join through {}:{}: {}", address[0], address[1], error
                    )
                    self._retry_join()
                else:
                    self.repeats.log(
                        "DEBUG", ("exchange", address), "state exchange with {}:{} failed: {}", *address, error
                    )
                return
            try:
                self.membership.merge_state(self.envelope.open(reply), time.monotonic())
            except ValueError as refused:  # EnvelopeError, or a state the membership cannot read
                self.counters["state_refused"] += 1
                self.repeats.log(
                    "WARNING", ("refused", address), "state from {}:{} refused: {}", address[0], address[1], refused
                )
                if joining:
                    self._retry_join()
                return
            self.counters["exchanges"] += 1
            if joining and not self._joined:
                self._joined = True
                logger.info("joined the cluster through {}:{}", address[0], address[1])
            self._publish()

        self.reactor.submit(lambda: exchange_state(address, framed, envelope), done)

    def _try_join(self) -> None:
        if self._joined:
            return
        now = time.monotonic()
        self._send(self.membership.join(self.seeds, now))
        seed = self.seeds[self._join_attempts % len(self.seeds)]
        self._join_attempts += 1
        self._start_exchange(seed, joining=True)

    def _retry_join(self) -> None:
        if self._joined:
            return
        delay = min(_JOIN_BACKOFF_MAX, _JOIN_BACKOFF_FIRST * 2 ** min(self._join_attempts, 10))
        self.reactor.call_later(delay * (0.5 + self._rng.random() / 2), self._try_join)

    def _periodic_exchange(self) -> None:
        live = self.membership.live_members()
        others = [m for m in live if m.node_id != self.node_id]
        if others:
            self._start_exchange(self._rng.choice(others).address, joining=False)
        # A seed no live member is at: gone, or on the far side of a partition that lasted
        # past the tombstones (see the module docstring). Exchanging states brings it back.
        live_addresses = {tuple(m.address) for m in live}
        missing = [seed for seed in self.seeds if seed not in live_addresses]
        if self._joined and missing:
            self._start_exchange(self._rng.choice(missing), joining=False, rejoin=True)

    # -- changes --------------------------------------------------------------------------

    def _member_changed(self, member: MemberView) -> None:
        self._changed = True
        self._seen.note(member)
        # A membership that cannot tell a graceful leave from a failure has no ``left``: then
        # nobody ever counts as departed, and the leases' quorum floor never goes down.
        if getattr(member, "left", False):
            self._departed.add(member.node_id)
        else:
            self._departed.discard(member.node_id)

    def _publish(self) -> None:
        if not self._changed:
            return
        members = self.shard_members()
        if not self._joined and len(members) > 1:
            # Someone found us (we may be the seed they joined through): we are in a cluster.
            self._joined = True
        try:
            self._on_change(members)
        except Exception:  # noqa: BLE001 - a failing placement plugin keeps the old map
            # A placement plugin that fails leaves the old map in place; the next
            # change (or tick) tries again.
            logger.exception("rebuilding the shard map for {} members failed", len(members))
            return
        self._changed = False


def _shard_member(member: MemberView) -> ShardMember:
    host = member.address[0]
    client = parse_endpoint(member.meta.get("client", f":{0}"), host)
    resp_text = member.meta.get("resp")
    resp = parse_endpoint(resp_text, host) if resp_text else None
    peer_text = member.meta.get("peer")
    peer = parse_endpoint(peer_text, host) if peer_text else None
    replica_text = member.meta.get("replica")
    replica = parse_endpoint(replica_text, host) if replica_text else None
    return ShardMember(
        member.node_id,
        client,
        resp,
        peer,
        _shards_of_bitmap(member.meta.get("lead", "")),
        _shards_of_bitmap(member.meta.get("ready", "")),
        member.meta.get("drain") == "1",
        _shards_of_bitmap(member.meta.get("recovering", "")),
        replica,
    )


def _shards_of_bitmap(text: str) -> frozenset[int]:
    """The shards a ``lead`` (or ``ready``) bitmap (hex, little-endian: shard 0 is the lowest bit) names."""
    bits = int.from_bytes(bytes.fromhex(text), "little") if text else 0
    return frozenset(shard for shard in range(bits.bit_length()) if bits >> shard & 1)
