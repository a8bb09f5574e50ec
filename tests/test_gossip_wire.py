"""Gossip envelopes: signatures, freshness, replays."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aegiskv.cluster.wire import Envelope, EnvelopeError
from tests.effort import examples

SECRET = b"0123456789abcdef-secret"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _pair(clock: Clock | None = None, **options) -> tuple[Envelope, Envelope]:
    clock = clock or Clock()
    counter = itertools.count()
    sender = Envelope(SECRET, clock=clock, random_bytes=lambda n: next(counter).to_bytes(n, "big"), **options)
    return sender, Envelope(SECRET, clock=clock, **options)


def _refused(envelope: Envelope, message: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        envelope.open(message)
    assert caught.value.reason == reason
    assert envelope.dropped[reason] >= 1


def test_signed_round_trip_and_replay_refused() -> None:
    sender, receiver = _pair()
    sealed = sender.seal(b'{"t":"ping"}')
    assert receiver.open(sealed) == b'{"t":"ping"}'
    _refused(receiver, sealed, "replayed")
    # A fresh seal of the same payload has a new nonce and passes.
    assert receiver.open(sender.seal(b'{"t":"ping"}')) == b'{"t":"ping"}'


def test_unsigned_forged_and_foreign_messages_are_refused() -> None:
    sender, receiver = _pair()
    _refused(receiver, Envelope(None).seal(b"hello"), "unsigned")
    sealed = bytearray(sender.seal(b"hello"))
    sealed[20] ^= 1
    _refused(receiver, bytes(sealed), "forged")
    other = Envelope(b"another-secret-of-16+", clock=Clock())
    _refused(receiver, other.seal(b"hello"), "forged")
    _refused(receiver, b"", "malformed")
    _refused(receiver, b"\x07abc", "malformed")
    # A node without a secret refuses signed messages rather than ignoring the signature.
    _refused(Envelope(None), sender.seal(b"hello"), "malformed")
    assert Envelope(None).open(Envelope(None).seal(b"plain")) == b"plain"


def test_stale_and_future_messages_are_refused() -> None:
    clock = Clock()
    sender, receiver = _pair(clock, max_skew=30)
    sealed = sender.seal(b"old")
    clock.now += 31
    _refused(receiver, sealed, "stale")
    future_clock = Clock(clock.now + 31)
    future = Envelope(SECRET, clock=future_clock).seal(b"future")
    _refused(receiver, future, "stale")


def test_the_nonce_cache_forgets_only_what_the_timestamp_check_refuses_anyway() -> None:
    clock = Clock()
    sender, receiver = _pair(clock, max_skew=10)
    old = sender.seal(b"a")
    assert receiver.open(old) == b"a"
    clock.now += 25  # past 2 x max_skew: the nonce may be forgotten ...
    receiver.open(sender.seal(b"b"))
    assert len(receiver._seen) == 1
    _refused(receiver, old, "stale")  # ... because the old message is stale by now


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Envelope(b"short")


@settings(max_examples=examples(200), deadline=None)
@given(payload=st.binary(max_size=200), position=st.integers(min_value=0), flip=st.integers(1, 255))
def test_any_single_byte_change_is_refused(payload: bytes, position: int, flip: int) -> None:
    sender, receiver = _pair()
    sealed = bytearray(sender.seal(payload))
    sealed[position % len(sealed)] ^= flip
    with pytest.raises(EnvelopeError):
        receiver.open(bytes(sealed))


# -- TCP frame headers ----------------------------------------------------------------


def _header_refused(envelope: Envelope, header: bytes, reason: str, remember: bool = True) -> None:
    with pytest.raises(EnvelopeError) as caught:
        envelope.open_frame_header(header, remember=remember)
    assert caught.value.reason == reason


def test_frame_header_round_trip_replay_forgery_and_staleness() -> None:
    clock = Clock()
    sender, receiver = _pair(clock)
    header = sender.seal_frame_header(4096)
    assert len(header) == receiver.frame_header_size == 53
    assert header[0] == receiver.frame_version
    assert receiver.open_frame_header(header) == 4096
    _header_refused(receiver, header, "replayed")
    # The length is under the signature: a stranger cannot raise it.
    raised = header[:17] + (1 << 30).to_bytes(4, "big") + header[21:]
    _header_refused(receiver, raised, "forged")
    _header_refused(receiver, Envelope(b"another-secret-0123456789").seal_frame_header(10), "forged")
    _header_refused(receiver, Envelope(None).seal_frame_header(10) + bytes(48), "unsigned")
    _header_refused(receiver, header[:-1], "malformed")
    old = sender.seal_frame_header(10)
    clock.now += 31
    _header_refused(receiver, old, "stale")
    assert receiver.dropped["forged"] == 2 and receiver.dropped["replayed"] == 1


def test_frame_header_checked_without_state_for_the_connecting_side() -> None:
    sender, receiver = _pair()
    header = sender.seal_frame_header(7)
    # remember=False: safe off the reactor; a replay is not detected and nothing is counted.
    assert receiver.open_frame_header(header, remember=False) == 7
    assert receiver.open_frame_header(header, remember=False) == 7
    _header_refused(receiver, header[:-1] + bytes((header[-1] ^ 1,)), "forged", remember=False)
    assert receiver.dropped["forged"] == 0


def test_unsigned_frame_header_carries_only_the_length() -> None:
    plain = Envelope(None)
    header = plain.seal_frame_header(1234)
    assert header == b"\x00\x00\x00\x04\xd2" and plain.frame_header_size == 5
    assert plain.open_frame_header(header) == 1234
    _header_refused(plain, _pair()[0].seal_frame_header(5)[:5], "malformed")
