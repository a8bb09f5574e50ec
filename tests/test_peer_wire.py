"""The cluster port's codec: frames, the handshake's proofs, replication messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegiskv.cluster.peer_wire import (
    HANDSHAKE_MAX,
    NONCE_BYTES,
    FrameReader,
    Hello,
    Kind,
    PeerProtocolError,
    ShardMessage,
    Welcome,
    acceptor_proof,
    dialer_proof,
    frame,
    new_nonce,
    proof_matches,
)
from aegiskv.cluster.replication import Change, Op
from tests.effort import examples


@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=8), st.data())
@settings(max_examples=examples(200))
def test_frames_come_out_as_they_went_in_however_the_bytes_are_split(
    frames: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(frame(kind, payload) for kind, payload in frames)
    reader = FrameReader(max_frame=1024)
    out = []
    position = 0
    while position < len(stream):
        step = data.draw(st.integers(1, max(1, len(stream) - position)))
        reader.receive_data(stream[position : position + step])
        position += step
        while (found := reader.next_frame()) is not None:
            out.append(found)
    assert out == frames
    assert reader.buffered == 0


def test_a_frame_over_the_limit_is_refused_from_its_header() -> None:
    reader = FrameReader()
    reader.receive_data((HANDSHAKE_MAX + 1).to_bytes(4, "big"))  # no payload needed to refuse it
    with pytest.raises(PeerProtocolError, match="limit"):
        reader.next_frame()
    empty = FrameReader()
    empty.receive_data(b"\0\0\0\0")
    with pytest.raises(PeerProtocolError):
        empty.next_frame()


def test_proofs_bind_the_key_both_nonces_and_both_ids() -> None:
    key = b"k" * 32
    a, b = new_nonce(), new_nonce()
    good = acceptor_proof(key, a, b, "dialer", "acceptor")
    assert proof_matches(good, acceptor_proof(key, a, b, "dialer", "acceptor"))
    assert not proof_matches(good, acceptor_proof(b"x" * 32, a, b, "dialer", "acceptor"))
    assert not proof_matches(good, acceptor_proof(key, b, a, "dialer", "acceptor"))
    assert not proof_matches(good, acceptor_proof(key, a, b, "acceptor", "dialer"))
    # The two directions use different labels: one side's proof is never the other's.
    assert not proof_matches(good, dialer_proof(key, a, b, "dialer", "acceptor"))
    assert acceptor_proof(None, a, b, "dialer", "acceptor") == b""  # no key: nothing to prove


def test_handshake_messages_round_trip_and_refuse_damage() -> None:
    hello = Hello(1, "node-a", new_nonce())
    assert Hello.decode(hello.encode()) == hello
    welcome = Welcome("node-b", new_nonce(), b"p" * 32)
    assert Welcome.decode(welcome.encode()) == welcome
    for bad in (b"", hello.encode()[:-1], hello.encode() + b"x", Hello(1, "", b"n" * NONCE_BYTES).encode()):
        with pytest.raises(PeerProtocolError):
            Hello.decode(bad)
    with pytest.raises(PeerProtocolError, match="UTF-8"):
        Hello.decode(Hello(1, "x", b"n" * NONCE_BYTES).encode().replace(b"x", b"\xff"))


@pytest.mark.parametrize("kind", [Kind.APPEND, Kind.SNAPSHOT_ITEMS, Kind.OFFER, Kind.ACK])
def test_shard_messages_round_trip(kind: Kind) -> None:
    changes = [Change(7 + index, Op.PUT, b"key%d" % index, b"v" * 100, 1000 + index, 0) for index in range(50)]
    message = ShardMessage(kind, 17, 4, 6, 3, [(1, 1, 99), (4, 6, 2**64 - 1)], changes, position_writer=2**63)
    assert ShardMessage.decode(kind, message.encode()) == message


def test_snapshot_items_are_compressed_and_bounded() -> None:
    changes = [Change(0, Op.PUT, b"key%d" % index, b"v" * 1000, 1, 0) for index in range(100)]
    plain = ShardMessage(Kind.APPEND, 1, 1, 0, 0, [], changes).encode()
    packed = ShardMessage(Kind.SNAPSHOT_ITEMS, 1, 1, 0, 0, [], changes).encode()
    assert len(packed) < len(plain) / 10
    with pytest.raises(PeerProtocolError, match="limit"):
        ShardMessage.decode(Kind.SNAPSHOT_ITEMS, packed, max_bytes=1000)
    with pytest.raises(PeerProtocolError):
        ShardMessage.decode(Kind.SNAPSHOT_ITEMS, packed[:-10])


def test_truncated_shard_messages_are_refused() -> None:
    encoded = ShardMessage(Kind.OFFER, 1, 2, 3, 0, [(2, 1, 7)], []).encode()
    for cut in range(len(encoded)):
        with pytest.raises(PeerProtocolError):
            ShardMessage.decode(Kind.OFFER, encoded[:cut])


def test_read_messages_round_trip() -> None:
    ask = ShardMessage(Kind.READ, 3, 7, 42, changes=[Change(0, Op.NOOP, b"key", b"", 0, 0)])
    assert ShardMessage.decode(Kind.READ, ask.encode()) == ask
    answer = ShardMessage(
        Kind.READ_REPLY, 3, 7, 42, 6, changes=[Change(19, Op.PUT, b"key", b"v", 99, 0)], position_writer=5
    )
    assert ShardMessage.decode(Kind.READ_REPLY, answer.encode()) == answer
