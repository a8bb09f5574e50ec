"""Gossip envelopes: HMAC-SHA256 signatures, freshness and replay refusal.

Every gossip message (UDP datagram or TCP state exchange) travels in an
envelope::

    version (1 byte) | payload                                  version 0: unsigned
    version (1 byte) | sent_ms (8) | nonce (8) | payload | mac (32)   version 1: signed

The MAC is HMAC-SHA256 under ``--gossip-secret`` over everything before it.
With a secret set, a node opens only signed envelopes whose MAC verifies, whose
timestamp is within ``max_skew`` of its own clock, and whose nonce it has not
seen within that window; everything else is dropped and counted by reason
(``unsigned``, ``forged``, ``stale``, ``replayed``, ``malformed``). Without a
secret it sends version 0 and refuses signed envelopes it cannot check (a
cluster must not be half-secured by accident).

A TCP state exchange is framed by a header of its own, checked before a byte
of the frame is buffered (:meth:`Envelope.seal_frame_header`)::

    version (1 byte) | length (4)                                       version 0
    version (1 byte) | sent_ms (8) | nonce (8) | length (4) | mac (32)  version 1

Its MAC covers a label (so a header is never mistaken for a datagram) and the
fields, under the same secret, with the same freshness and replay checks: a
stranger without the secret can make a node hold at most one header's bytes,
where a bare length prefix made it buffer up to the largest state first.

The nonce cache holds what arrived in the last ``2 x max_skew`` seconds; older
nonces need not be kept because their timestamps are refused anyway. It is
capped (``max_nonces``); when full the oldest entries go first, which can only
let through a replay already older than most of the window.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Callable

UNSIGNED = 0
SIGNED = 1
_SIGNED_HEADER = struct.Struct(">BQ8s")  # version, sent_ms, nonce
_MAC_BYTES = 32
_FRAME_LABEL = b"aegis gossip frame\0"
_SIGNED_FRAME_HEADER = struct.Struct(">BQ8sI")  # version, sent_ms, nonce, frame length
_UNSIGNED_FRAME_HEADER = struct.Struct(">BI")  # version, frame length
DROP_REASONS = ("unsigned", "forged", "stale", "replayed", "malformed")


class EnvelopeError(ValueError):
    """Why a message was dropped; ``reason`` is one of DROP_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Envelope:
    """Seals outgoing and opens incoming gossip messages for one node. Not thread-safe."""

    def __init__(
        self,
        secret: bytes | None,
        *,
        max_skew: float = 30.0,
        max_nonces: int = 200_000,
        clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if secret is not None and len(secret) < 16:
            raise ValueError("gossip secret must be at least 16 bytes")
        self._secret = secret
        self._max_skew = max_skew
        self._max_nonces = max_nonces
        self._clock = clock
        self._random_bytes = random_bytes
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # nonce -> when it arrived (our clock)
        self.dropped = dict.fromkeys(DROP_REASONS, 0)

    @property
    def signed(self) -> bool:
        return self._secret is not None

    def seal(self, payload: bytes) -> bytes:
        if self._secret is None:
            return bytes((UNSIGNED,)) + payload
        header = _SIGNED_HEADER.pack(SIGNED, int(self._clock() * 1000), self._random_bytes(8))
        mac = hmac.new(self._secret, header + payload, hashlib.sha256).digest()
        return header + payload + mac

    def open(self, message: bytes) -> bytes:
        """The payload, or EnvelopeError (counted in ``dropped``)."""
        try:
            return self._open(message)
        except EnvelopeError as error:
            self.dropped[error.reason] += 1
            raise

    def _open(self, message: bytes) -> bytes:
        if not message:
            raise EnvelopeError("malformed", "empty message")
        version = message[0]
        if self._secret is None:
            if version != UNSIGNED:
                raise EnvelopeError("malformed", "a signed message, but this node has no gossip secret")
            return message[1:]
        if version == UNSIGNED:
            raise EnvelopeError("unsigned", "an unsigned message, but a gossip secret is set")
        if version != SIGNED or len(message) < _SIGNED_HEADER.size + _MAC_BYTES:
            raise EnvelopeError("malformed", f"unknown envelope version {version} or too short")
        body, mac = message[:-_MAC_BYTES], message[-_MAC_BYTES:]
        expected = hmac.new(self._secret, body, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise EnvelopeError("forged", "the signature does not verify")
        _version, sent_ms, nonce = _SIGNED_HEADER.unpack_from(body)
        self._check_fresh(sent_ms, nonce, remember=True)
        return body[_SIGNED_HEADER.size :]

    def _check_fresh(self, sent_ms: int, nonce: bytes, remember: bool) -> None:
        now = self._clock()
        if abs(now - sent_ms / 1000) > self._max_skew:
            raise EnvelopeError("stale", f"sent {now - sent_ms / 1000:.1f} s from now")
        if not remember:
            return
        self._forget_old(now)
        if nonce in self._seen:
            raise EnvelopeError("replayed", "nonce already seen")
        self._seen[nonce] = now
        if len(self._seen) > self._max_nonces:
            self._seen.popitem(last=False)

    # -- TCP frame headers ------------------------------------------------------------

    @property
    def frame_header_size(self) -> int:
        """Bytes of the header in front of every TCP frame this node reads and writes."""
        if self._secret is None:
            return _UNSIGNED_FRAME_HEADER.size
        return _SIGNED_FRAME_HEADER.size + _MAC_BYTES

    @property
    def frame_version(self) -> int:
        """The first byte of every header this node accepts (a wrong one can be refused at once)."""
        return UNSIGNED if self._secret is None else SIGNED

    def seal_frame_header(self, length: int) -> bytes:
        """The header announcing a frame of ``length`` bytes (a sealed envelope)."""
        if self._secret is None:
            return _UNSIGNED_FRAME_HEADER.pack(UNSIGNED, length)
        fields = _SIGNED_FRAME_HEADER.pack(SIGNED, int(self._clock() * 1000), self._random_bytes(8), length)
        return fields + hmac.new(self._secret, _FRAME_LABEL + fields, hashlib.sha256).digest()

    def open_frame_header(self, header: bytes, remember: bool = True) -> int:
        """The frame length a header announces, or EnvelopeError.

        ``remember``: record its nonce so a replayed header is refused (reactor
        thread; counted in ``dropped``). False checks the signature and
        freshness only and touches no state, so a worker thread may call it:
        the connecting side of an exchange, which then hands the frame to the
        reactor where its envelope is opened with the full checks.
        """
        try:
            return self._open_frame_header(header, remember)
        except EnvelopeError as error:
            if remember:
                self.dropped[error.reason] += 1
            raise

    def _open_frame_header(self, header: bytes, remember: bool) -> int:
        if len(header) != self.frame_header_size:
            raise EnvelopeError("malformed", f"a frame header of {len(header)} bytes")
        version = header[0]
        if self._secret is None:
            if version != UNSIGNED:
                raise EnvelopeError("malformed", "a signed frame, but this node has no gossip secret")
            _version, length = _UNSIGNED_FRAME_HEADER.unpack(header)
            return int(length)
        if version == UNSIGNED:
            raise EnvelopeError("unsigned", "an unsigned frame, but a gossip secret is set")
        if version != SIGNED:
            raise EnvelopeError("malformed", f"unknown frame header version {version}")
        fields, mac = header[:-_MAC_BYTES], header[-_MAC_BYTES:]
        expected = hmac.new(self._secret, _FRAME_LABEL + fields, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise EnvelopeError("forged", "the frame header's signature does not verify")
        _version, sent_ms, nonce, length = _SIGNED_FRAME_HEADER.unpack(fields)
        self._check_fresh(sent_ms, nonce, remember)
        return int(length)

    def _forget_old(self, now: float) -> None:
        horizon = now - 2 * self._max_skew
        seen = self._seen
        while seen:
            oldest_nonce, arrived = next(iter(seen.items()))
            if arrived >= horizon:
                break
            del seen[oldest_nonce]
