"""Links between nodes on the cluster port: one authenticated connection to each peer, kept up.

Each node dials every peer it shares a shard with and sends its own requests
(lease rounds as a candidate or holder, the replication stream as a primary)
on that *outbound link*; the peer answers on the same connection. What a peer
dials in arrives on an *inbound session*. Both run the mutual handshake of
aegiskv.cluster.peer_wire before anything else is read, and both hand every
later frame to one ``on_message(peer, kind, payload, reply)`` callback, where
``reply`` writes back on the connection the frame came on.

Reactor thread only, like every socket. Messages to a peer whose link is not
up are dropped, not queued: leases resend every round and a primary re-offers
its stream when a link comes (back) up (``on_link_up``), so a queue would only
deliver stale news late.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from aegiskv.cluster.peer_wire import (
    HANDSHAKE_MAX,
    PROTOCOL_VERSION,
    FrameReader,
    Hello,
    Kind,
    PeerProtocolError,
    Welcome,
    acceptor_proof,
    dialer_proof,
    frame,
    new_nonce,
    proof_matches,
)
from aegiskv.net.reactor import ConnectionHandler, Listener, ListenerOptions, Reactor, Transport
from aegiskv.obs.repeats import RepeatLimiter

Reply = Callable[[int, bytes], None]
OnMessage = Callable[[str, int, bytes, Reply], None]

_RECONNECT_FIRST = 0.1
_RECONNECT_MAX = 2.0
_HANDSHAKE_SECONDS = 5.0


@dataclass(frozen=True)
class PeerSecurity:
    """How links prove who they are: the cluster key (None: an open cluster) and TLS, when configured."""

    key: bytes | None
    server_tls: ssl.SSLContext | None = None  # the cluster port's, mutual when the node's TLS has a CA
    client_tls: ssl.SSLContext | None = None  # presents this node's certificate to peers


class _Link(ConnectionHandler):
    """The frame and handshake logic both ends share."""

    def __init__(self, network: PeerNetwork) -> None:
        self.network = network
        self.reader = FrameReader(HANDSHAKE_MAX)
        self.transport: Transport | None = None
        self.peer_id = ""
        self.ready = False
        self.my_nonce = new_nonce()
        self.their_nonce = b""

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        self.network.reactor.call_later(_HANDSHAKE_SECONDS, self._handshake_deadline)

    def _handshake_deadline(self) -> None:
        if not self.ready and self.transport is not None and not self.transport.closed:
            self.refuse("handshake not completed in time")

    def send(self, kind: int, payload: bytes = b"") -> None:
        if self.transport is not None and not self.transport.closed:
            self.transport.write(frame(kind, payload))

    def pending_bytes(self) -> int:
        """Bytes written to this link that the peer has not taken yet (flow control)."""
        return self.transport.out_size if self.transport is not None else 0

    def refuse(self, reason: str) -> None:
        who = self.peer_id or self._address()
        self.network.repeats.log("WARNING", ("closed", who, reason), "cluster link with {} closed: {}", who, reason)
        self.send(Kind.REFUSED, reason.encode()[:200])
        if self.transport is not None:
            self.transport.close()

    def _address(self) -> str:
        peer = self.transport.peer if self.transport is not None else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "a peer"

    def data_received(self, data: bytes) -> None:
        self.reader.receive_data(data)
        try:
            while self.transport is not None and not self.transport.closed:
                found = self.reader.next_frame()
                if found is None:
                    return
                kind, payload = found
                if kind == Kind.REFUSED:
                    who = self.peer_id or self._address()
                    reason = payload[:200].decode("utf-8", "replace")
                    self.network.repeats.log(
                        "WARNING", ("refused", who), "{} refused the cluster link: {}", who, reason
                    )
                    self.transport.close()
                    return
                if self.ready:
                    self.network.on_message(self.peer_id, kind, payload, self.send)
                else:
                    self.handshake(kind, payload)
        except PeerProtocolError as error:
            self.refuse(str(error))

    def handshake(self, kind: int, payload: bytes) -> None:
        raise NotImplementedError

    def became_ready(self) -> None:
        self.ready = True
        self.reader.max_frame = self.network.max_frame
        if self.transport is not None:
            # Until here the link held at most a read behind a HANDSHAKE_MAX frame, counted
            # against max_unauthenticated_memory; replication streams are not.
            self.transport.mark_trusted()

    def input_buffered(self) -> int:
        return self.reader.buffered


class _Outbound(_Link):
    """This node's link to one peer: it speaks first."""

    def __init__(self, network: PeerNetwork, peer_id: str) -> None:
        super().__init__(network)
        self.peer_id = peer_id
        self.up_at = 0.0  # monotonic time the handshake completed (PeerNetwork.up_since)

    def connection_made(self, transport: Transport) -> None:
        super().connection_made(transport)
        self.send(Kind.HELLO, Hello(PROTOCOL_VERSION, self.network.node_id, self.my_nonce).encode())

    def handshake(self, kind: int, payload: bytes) -> None:
        network = self.network
        if kind == Kind.WELCOME and not self.their_nonce:
            welcome = Welcome.decode(payload)
            if welcome.node_id != self.peer_id:
                raise PeerProtocolError(f"expected node {self.peer_id!r}, reached {welcome.node_id!r}")
            expected = acceptor_proof(network.key, self.my_nonce, welcome.nonce, network.node_id, self.peer_id)
            if not proof_matches(expected, welcome.proof):
                raise PeerProtocolError("the peer does not hold the cluster key")
            self.their_nonce = welcome.nonce
            proof = dialer_proof(network.key, self.my_nonce, welcome.nonce, network.node_id, self.peer_id)
            self.send(Kind.PROVE, proof)
        elif kind == Kind.READY and self.their_nonce:
            self.became_ready()
            network.link_up(self)
        else:
            raise PeerProtocolError(f"unexpected frame {kind} during the handshake")

    def connection_lost(self) -> None:
        self.network.link_down(self)

    def connection_failed(self, error: OSError) -> None:
        self.network.link_down(self, error)


class _Inbound(_Link):
    """A peer's link to this node: it answers."""

    def handshake(self, kind: int, payload: bytes) -> None:
        network = self.network
        if kind == Kind.HELLO and not self.their_nonce:
            hello = Hello.decode(payload)
            if hello.version != PROTOCOL_VERSION:
                raise PeerProtocolError(f"protocol version {hello.version}, this node speaks {PROTOCOL_VERSION}")
            if hello.node_id == network.node_id:
                raise PeerProtocolError("a node cannot link to itself")
            self.peer_id = hello.node_id
            self.their_nonce = hello.nonce
            proof = acceptor_proof(network.key, hello.nonce, self.my_nonce, hello.node_id, network.node_id)
            self.send(Kind.WELCOME, Welcome(network.node_id, self.my_nonce, proof).encode())
        elif kind == Kind.PROVE and self.their_nonce:
            expected = dialer_proof(network.key, self.their_nonce, self.my_nonce, self.peer_id, network.node_id)
            if not proof_matches(expected, payload):
                raise PeerProtocolError("the peer does not hold the cluster key")
            self.became_ready()
            self.send(Kind.READY)
        else:
            raise PeerProtocolError(f"unexpected frame {kind} during the handshake")


class PeerNetwork:
    """Every link this node has to its peers. Reactor thread only."""

    def __init__(
        self,
        reactor: Reactor,
        node_id: str,
        security: PeerSecurity,
        on_message: OnMessage,
        max_frame: int,
        on_link_up: Callable[[str], None] = lambda peer: None,
    ) -> None:
        self.reactor = reactor
        self.node_id = node_id
        self.key = security.key
        self.security = security
        self.on_message = on_message
        self.on_link_up = on_link_up
        self.max_frame = max_frame
        self.listener: Listener | None = None
        self._addresses: dict[str, tuple[str, int]] = {}  # the peers this node wants links to
        self._links: dict[str, _Outbound] = {}  # connected or connecting
        self._backoff: dict[str, float] = {}
        self._retry_scheduled: set[str] = set()
        self.counters = {"links_up": 0, "links_down": 0, "handshakes_refused": 0}
        self.repeats = RepeatLimiter()

    def listen(self, address: tuple[str, int], max_connections: int = 256) -> Listener:
        """The cluster port: inbound sessions, pre-authentication limits of the handshake."""
        self.listener = self.reactor.listen(
            address,
            ListenerOptions(
                name="cluster",
                protocol_factory=lambda: _Inbound(self),
                max_connections=max_connections,
                idle_timeout=0,  # peers may stay quiet between lease rounds for a while
                output_high_water=32 << 20,
                counts_as_client=False,
                ssl_context=self.security.server_tls,
                handshake_timeout=_HANDSHAKE_SECONDS,
            ),
        )
        return self.listener

    def set_peers(self, addresses: dict[str, tuple[str, int]]) -> None:
        """The peers to keep links with (node id -> cluster address); links to others are closed."""
        for peer_id in list(self._links):
            if peer_id not in addresses or addresses[peer_id] != self._addresses.get(peer_id):
                link = self._links.pop(peer_id)
                if link.transport is not None:
                    link.transport.close()
        self._addresses = dict(addresses)
        for peer_id in addresses:
            if peer_id not in self._links:
                self._dial(peer_id)

    def send(self, peer_id: str, kind: int, payload: bytes) -> bool:
        """Send on this node's link to ``peer_id``; False (dropped) when the link is not up."""
        link = self._links.get(peer_id)
        if link is None or not link.ready:
            return False
        link.send(kind, payload)
        return True

    def is_up(self, peer_id: str) -> bool:
        link = self._links.get(peer_id)
        return link is not None and link.ready

    def up_since(self, peer_id: str) -> float | None:
        """When this node's link to ``peer_id`` came up (monotonic), None while it is down.

        A link to a process is always dialled after that process started, so this is
        also a bound on how recently the peer could have restarted.
        """
        link = self._links.get(peer_id)
        return link.up_at if link is not None and link.ready else None

    def pending_bytes(self, peer_id: str) -> int:
        link = self._links.get(peer_id)
        return link.pending_bytes() if link is not None else 0

    def close(self) -> None:
        self._addresses = {}
        for link in list(self._links.values()):
            if link.transport is not None:
                link.transport.close(flush=False)
        self._links.clear()

    # -- links ----------------------------------------------------------------------------

    def _dial(self, peer_id: str) -> None:
        address = self._addresses[peer_id]
        link = _Outbound(self, peer_id)
        self._links[peer_id] = link
        options = ListenerOptions(
            name="cluster-out",
            protocol_factory=lambda: link,
            max_connections=1,
            idle_timeout=0,
            output_high_water=32 << 20,
            counts_as_client=False,
        )
        self.reactor.connect(address, options, link, self.security.client_tls, address[0], timeout=_HANDSHAKE_SECONDS)

    def link_up(self, link: _Outbound) -> None:
        link.up_at = time.monotonic()
        self._backoff.pop(link.peer_id, None)
        self.counters["links_up"] += 1
        logger.info("cluster link to {} is up", link.peer_id)
        self.on_link_up(link.peer_id)

    def link_down(self, link: _Outbound, error: OSError | None = None) -> None:
        if self._links.get(link.peer_id) is not link:
            return  # replaced or no longer wanted
        del self._links[link.peer_id]
        if link.ready:
            self.counters["links_down"] += 1
            self.repeats.log("WARNING", ("down", link.peer_id), "cluster link to {} went down", link.peer_id)
        elif error is not None:
            # Retried every few seconds while the peer is down: one line, repeats counted.
            self.repeats.log(
                "DEBUG", ("unreachable", link.peer_id), "cannot reach {} for a cluster link: {}", link.peer_id, error
            )
        if link.peer_id in self._addresses and link.peer_id not in self._retry_scheduled:
            delay = self._backoff.get(link.peer_id, _RECONNECT_FIRST)
            self._backoff[link.peer_id] = min(delay * 2, _RECONNECT_MAX)
            self._retry_scheduled.add(link.peer_id)
            self.reactor.call_later(delay, lambda: self._retry(link.peer_id))

    def _retry(self, peer_id: str) -> None:
        self._retry_scheduled.discard(peer_id)
        if peer_id in self._addresses and peer_id not in self._links:
            self._dial(peer_id)
