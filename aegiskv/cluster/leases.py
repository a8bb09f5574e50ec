"""Per-shard leases: which member of a shard's replica set may accept writes, as a sans-IO core.

Each shard ``s`` has a replica set ``R(s)`` (the placement's members, ``R(s)[0]``
preferred as primary). One member at a time holds a *lease* for ``s``, granted
by a majority of ``R(s)`` for an *epoch* (a per-shard term that only grows);
only the holder accepts writes, and only while its lease is live. Every member
of ``R(s)`` is also a *voter*.

Like the membership core (aegiskv.cluster.membership), :class:`ShardLeases`
touches no socket and no clock: :meth:`ShardLeases.tick` and
:meth:`ShardLeases.receive` take the caller's monotonic time and return the
messages to send as ``(node id, bytes)`` pairs; randomness and the durable vote
store are parameters. ``now`` must be read *after* the message handed to
``receive`` arrived, and again for every :meth:`ShardLeases.holds_lease` check
at the moment a write is acknowledged (a process that was paused must see its
lease expired, not the time it had before the pause).

**The voter rule** (:meth:`ShardLeases._vote`), at local time ``now``, for a
request for epoch ``e`` from candidate ``c`` at position ``pos``:

* ``e < term``: refuse.
* ``e == term`` and ``holder == c``: a renewal (or a repeated election
  request): promise ``c`` no other grant until ``now + D`` and grant.
* ``e > term``, an election: grant only if no promise to *another* node is
  live, this voter did not restart within the last ``D`` (it cannot know what
  it promised before), it is trusted for the shard (or has been untrusted for
  ``untrusted_grant_after``), and ``pos`` is at least its own position. The
  grant is saved in the store (durable on return) before the promise is made
  and the reply sent. ``term`` changes only on a grant, so a refused,
  disruptive candidate deposes nobody.

A promise to the candidate itself does not block its election to a higher
epoch: that lets a holder whose lease lapsed (a pause, a lost round) win again
at once instead of waiting out its own promise, and no other node's lease is
at stake.

**Lease arithmetic.** A voter that grants at its time ``g`` promises nothing
else until ``g + D``. The candidate records its time ``sent`` before a round
of requests; once a majority of ``R(s)`` (its own vote included) granted *that
round*, it holds the lease until ``sent + D * (1 - max_clock_drift)``. With
clock rates within ``max_clock_drift / 2`` of real time, the holder's deadline
passes (in real time) before any granting voter's promise ends, because
``sent`` precedes every grant. Renewal rounds (every ``D * renew_fraction``,
same epoch) each extend the lease from their own ``sent``.

Rounds carry a number that replies echo. Without it a late reply to an earlier
round could be counted for a later one and extend the lease from a ``sent``
that came *after* the voter's grant, past the voter's promise (the simulation
in tests/lease_sim.py finds exactly that when replies travel slower than
requests and the holder is then cut off).

**The candidate votes for itself last.** Its own vote, under the same rule, is
cast when the others' grants already make a majority with it. A candidate cut
off from the majority therefore never raises its own term: when it comes back
it refuses nothing of the live holder's (``e < term`` would otherwise refuse
every renewal and append from the holder, and force a new election). And no
lease is ever held without the holder's own durable grant, so a restarted node
never wins an epoch it held before (its stored term is at least that epoch and
its next candidacy goes higher).

**Candidacy.** A member campaigns when it knows of no live lease for the shard:
its own promise to another node has lapsed (or it restarted, after the restart
wait). The preferred primary campaigns at once when trusted; the others after a
random delay, longer for each member they know to be further ahead (positions
arrive in requests and replies). The epoch is one above the highest seen.
While its own round is out, a candidate grants only a rival that outranks it
(further ahead, else earlier in ``R(s)``), so of two at once one wins. A
failed round backs off (random, bounded), or asks again when the promise that
refused it ends, if sooner. A holder that learns of a higher term in a refusal
steps down and releases the lease. A refusal that names a live lease of
another node (how a restarted member, which could not grant that holder's
renewals during its restart wait, learns of it) keeps the candidate from
asking again before that promise ends, and names the holder for routing;
it is forgotten at any sign of a later term (a request for one, a release,
a grant of this node's own).

**The quorum floor.** A round needs ``max(majority_of(R(s)), floor)`` grants
(:meth:`ShardLeases.set_quorum_floor`). ``R(s)`` comes from this node's own
view of the membership, which a partition shrinks: cut off alone, a node of a
three-node cluster sees every replica set as itself, a majority of one, and
would elect itself everywhere while the other side goes on. The node sets the
floor to ``majority_of_count(min(replication_factor, high_water))``, where
``high_water`` is the most members it has seen alive at once, lowered only by
graceful leaves, never by failure detection (:class:`MemberHighWater`): a
replica set that shrank because members were *declared dead* cannot reach it,
one that shrank because members *left* can. The shortcuts of a replica set of
one (no restart wait, the lapsed lease renewed in place) hold only while the
floor is at most 1: a real single-node cluster, or one that shrank to one by
graceful leaves.

What the floor does not cover: a cluster of more nodes than the replication
factor split into two sides that each hold a majority of it (five nodes, RF 3,
two and three): each side's placement builds full replica sets from its own
members, and both reach the floor (that is the unstaged replacement of members
described below). With a replication factor of 1 the floor is 1. The high water
is kept in the data dir (:class:`FileHighWater`), so a node without seeds that
restarts while cut off still knows its cluster's size; a node whose data dir
is new starts from nothing (floor 1 until it sees members), and leaves that
happened while it was down are not deducted (it may then wait for more members
than it needs: never less safe).

**What this module does not do.** Changing ``R(s)`` is safe only when every
majority of the old set meets every majority of the new one: one member
added, or one removed, at a time. Replacing a member (``{a, b, c}`` to
``{a, b, d}``) must go through the union (add ``d``, untrusted until it has
copied the shard, then drop ``c``); jumping straight there lets ``{a, c}``
and ``{b, d}`` elect two holders, and nothing here can tell. Untrusted
members (``set_trusted``) are the replication layer's call: a node that lost
its copy of a shard, or a new member still copying it, must be marked before
its votes count, or it could elect a candidate missing acknowledged writes.
"""

from __future__ import annotations

import math
import os
import random
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

from aegiskv.cluster.replication import writer_tag

Position = tuple[int, int]  # (epoch, seq) of the last replicated change applied for a shard
Outbound = list[tuple[str, bytes]]  # (peer node id, encoded message)

MAX_NODE_ID_BYTES = 255  # node ids travel with a one-byte length


@dataclass(frozen=True)
class LeaseTiming:
    """Lease timing, in seconds of each node's own monotonic clock.

    The defaults come from bench/lease_failover.py (results in
    bench/results/lease_failover.txt): with a 2 s lease and a 0.1 s election
    delay, a shard whose primary was killed is writable again after 2.2 s at
    the 99th percentile, inside the 3 s target; a 3 s lease misses it (3.2 s),
    and a 1 s lease (1.2 s) doubles the renewal traffic and may lose the
    lease in any stall of the holder's loop longer than 0.62 x the lease
    (0.6 s, against 1.2 s). Renewal costs 6 lease messages per second per
    shard at RF 3.
    """

    lease_duration: float = 2.0  # D: how long a grant binds the voter
    # Bound on how far two clocks' *rates* differ (0.05 = 5%); offsets do not
    # matter, every deadline is measured on one node's clock.
    max_clock_drift: float = 0.05
    renew_fraction: float = 1 / 3  # the holder starts a renewal round every D x this
    # A non-preferred member's least wait after a lease lapsed: far above a
    # round trip, so the preferred primary and the most up-to-date members
    # ask first; lower saves little (0.05 s: 0.08 s off the 99th percentile).
    election_delay: float = 0.1
    round_timeout: float = 0.25  # an election round with no majority by then has failed
    max_backoff: float = 1.0  # longest wait after failed election rounds
    # Liveness escape hatch: an untrusted member (it lost its copy) votes in
    # elections after being untrusted this long. Until then a shard whose
    # trusted copies are down, or too few for a majority, stays without a
    # primary, because nobody can vouch that a candidate holds every
    # acknowledged write; after it, a candidate that may lack some is elected
    # rather than keep the shard unwritable. math.inf keeps waiting forever.
    untrusted_grant_after: float = 30.0

    def __post_init__(self) -> None:
        problems = []
        if not self.lease_duration > 0:
            problems.append(f"lease_duration must be > 0, not {self.lease_duration}")
        if not 0 <= self.max_clock_drift < 0.5:
            problems.append(f"max_clock_drift must be in [0, 0.5), not {self.max_clock_drift}")
        elif not 0 < self.renew_fraction < 1 - self.max_clock_drift:
            problems.append(
                f"renew_fraction must be in (0, {1 - self.max_clock_drift:g}) "
                f"so renewal starts before the lease ends, not {self.renew_fraction}"
            )
        if not self.election_delay >= 0:
            problems.append(f"election_delay must be >= 0, not {self.election_delay}")
        if not 0 < self.round_timeout < self.lease_duration * (1 - self.max_clock_drift):
            problems.append(f"round_timeout must be > 0 and shorter than the lease, not {self.round_timeout}")
        if not self.max_backoff >= self.election_delay:
            problems.append(f"max_backoff must be >= election_delay, not {self.max_backoff}")
        if not self.untrusted_grant_after >= 0:
            problems.append(f"untrusted_grant_after must be >= 0, not {self.untrusted_grant_after}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def held_for(self) -> float:
        """How long after a round's ``sent`` its holder may act: D x (1 - max_clock_drift)."""
        return self.lease_duration * (1 - self.max_clock_drift)


# -- messages --------------------------------------------------------------------------------
#
# Every message is one byte of version, one of kind, fixed big-endian fields,
# then UTF-8 node ids each prefixed by a one-byte length. Decoding checks the
# exact length before unpacking, so a short or padded message is refused, and
# nothing in it can make the decoder allocate more than 255 bytes per id.
# Binary rather than the membership's JSON: a node renews every shard it leads
# three times per lease, so this is the cluster's most frequent message.

WIRE_VERSION = 1
_REQUEST, _REPLY, _RELEASE = 1, 2, 3
_KINDS = {_REQUEST: "request", _REPLY: "reply", _RELEASE: "release"}

# version, kind, shard, epoch, round, position epoch, position seq, renew, candidate length
_REQUEST_HEAD = struct.Struct(">BBIQQQQBB")
# version, kind, shard, epoch, round, granted, term, position epoch, position seq, promise ms,
# voter length, holder length
_REPLY_HEAD = struct.Struct(">BBIQQBQQQIBB")
# version, kind, shard, epoch, holder length
_RELEASE_HEAD = struct.Struct(">BBIQB")

_U32 = 2**32 - 1
_U64 = 2**64 - 1


def _id_bytes(node_id: str, what: str, allow_empty: bool = False) -> bytes:
    raw = node_id.encode()
    if not raw and not allow_empty:
        raise ValueError(f"{what} must not be empty")
    if len(raw) > MAX_NODE_ID_BYTES:
        raise ValueError(f"{what} is {len(raw)} bytes in UTF-8; at most {MAX_NODE_ID_BYTES} fit a lease message")
    return raw


def _check_ranges(shard: int, *sixty_four_bit: int) -> None:
    if not 0 <= shard <= _U32:
        raise ValueError(f"shard {shard} is outside 0..{_U32}")
    for value in sixty_four_bit:
        if not 0 <= value <= _U64:
            raise ValueError(f"{value} is outside 0..{_U64}")


def _head(data: bytes, head: struct.Struct, kind: int) -> tuple[int, ...]:
    if len(data) >= 1 and data[0] != WIRE_VERSION:
        raise ValueError(f"lease message version {data[0]}, expected {WIRE_VERSION}")
    if len(data) >= 2 and data[1] != kind:
        raise ValueError(f"lease message kind {data[1]}, expected {kind} ({_KINDS[kind]})")
    if len(data) < head.size:
        raise ValueError(f"lease {_KINDS[kind]} is {len(data)} bytes, shorter than its {head.size}-byte header")
    fields: tuple[int, ...] = head.unpack_from(data)
    return fields


def _ids(data: bytes, offset: int, lengths: Iterable[int], kind: int) -> list[str]:
    lengths = list(lengths)
    if len(data) != offset + sum(lengths):
        raise ValueError(f"lease {_KINDS[kind]} is {len(data)} bytes, its header says {offset + sum(lengths)}")
    ids = []
    for length in lengths:
        ids.append(data[offset : offset + length].decode())  # UnicodeDecodeError is a ValueError
        offset += length
    return ids


def _flag(value: int, what: str) -> bool:
    if value not in (0, 1):
        raise ValueError(f"{what} flag is {value}, expected 0 or 1")
    return value == 1


@dataclass(frozen=True)
class LeaseRequest:
    """A candidate (election) or holder (renewal, ``renew=True``) asking a voter for epoch ``epoch``.

    ``round_id`` names the candidate's round of requests; replies echo it.
    ``renew`` does not change the voter's rule (a voter that missed the
    election treats a renewal as an election); it tells voters' counters
    renewals from elections.
    """

    shard: int
    epoch: int
    candidate: str
    position: Position
    renew: bool
    round_id: int

    def encode(self) -> bytes:
        candidate = _id_bytes(self.candidate, "candidate")
        _check_ranges(self.shard, self.epoch, self.round_id, *self.position)
        head = _REQUEST_HEAD.pack(
            WIRE_VERSION,
            _REQUEST,
            self.shard,
            self.epoch,
            self.round_id,
            self.position[0],
            self.position[1],
            int(self.renew),
            len(candidate),
        )
        return head + candidate

    @classmethod
    def decode(cls, data: bytes) -> LeaseRequest:
        _, _, shard, epoch, round_id, position_epoch, seq, renew, length = _head(data, _REQUEST_HEAD, _REQUEST)
        (candidate,) = _ids(data, _REQUEST_HEAD.size, (length,), _REQUEST)
        if not candidate:
            raise ValueError("lease request without a candidate")
        return cls(shard, epoch, candidate, (position_epoch, seq), _flag(renew, "renew"), round_id)


@dataclass(frozen=True)
class LeaseReply:
    """A voter's answer. Refusals carry its term, holder and position so the candidate learns and backs off.

    ``promise_ms``: how much longer (milliseconds of the voter's clock) its
    promise to another node runs, when that stands in the way; 0 otherwise.
    A candidate that runs into a live promise (one back from a partition,
    clocks further apart than the election delay) asks again right then
    instead of after a random backoff of up to ``max_backoff``. After a
    killed holder it rarely matters: the followers' promises end within
    milliseconds of each other, and the election delay covers that.
    """

    shard: int
    epoch: int  # the epoch asked for
    round_id: int  # the round answered
    voter: str
    granted: bool
    term: int  # the voter's term after answering
    holder: str  # whom it granted that term ("" before any grant)
    position: Position  # the voter's own position
    promise_ms: int = 0

    def encode(self) -> bytes:
        voter = _id_bytes(self.voter, "voter")
        holder = _id_bytes(self.holder, "holder", allow_empty=True)
        _check_ranges(self.shard, self.epoch, self.round_id, self.term, *self.position)
        if not 0 <= self.promise_ms <= _U32:
            raise ValueError(f"promise_ms {self.promise_ms} is outside 0..{_U32}")
        head = _REPLY_HEAD.pack(
            WIRE_VERSION,
            _REPLY,
            self.shard,
            self.epoch,
            self.round_id,
            int(self.granted),
            self.term,
            self.position[0],
            self.position[1],
            self.promise_ms,
            len(voter),
            len(holder),
        )
        return head + voter + holder

    @classmethod
    def decode(cls, data: bytes) -> LeaseReply:
        fields = _head(data, _REPLY_HEAD, _REPLY)
        _, _, shard, epoch, round_id, granted, term, position_epoch, seq, promise_ms, voter_length, holder_length = (
            fields
        )
        voter, holder = _ids(data, _REPLY_HEAD.size, (voter_length, holder_length), _REPLY)
        if not voter:
            raise ValueError("lease reply without a voter")
        granted_flag = _flag(granted, "granted")
        return cls(shard, epoch, round_id, voter, granted_flag, term, holder, (position_epoch, seq), promise_ms)


@dataclass(frozen=True)
class LeaseRelease:
    """The holder of ``epoch`` gives its lease up early (hand-off, drain): voters drop their promise to it."""

    shard: int
    epoch: int
    holder: str

    def encode(self) -> bytes:
        holder = _id_bytes(self.holder, "holder")
        _check_ranges(self.shard, self.epoch)
        return _RELEASE_HEAD.pack(WIRE_VERSION, _RELEASE, self.shard, self.epoch, len(holder)) + holder

    @classmethod
    def decode(cls, data: bytes) -> LeaseRelease:
        _, _, shard, epoch, length = _head(data, _RELEASE_HEAD, _RELEASE)
        (holder,) = _ids(data, _RELEASE_HEAD.size, (length,), _RELEASE)
        if not holder:
            raise ValueError("lease release without a holder")
        return cls(shard, epoch, holder)


LeaseMessage = LeaseRequest | LeaseReply | LeaseRelease


def decode_message(data: bytes) -> LeaseMessage:
    """Any lease message; ValueError for bytes that are not one."""
    if len(data) < 2:
        raise ValueError(f"lease message is {len(data)} bytes, shorter than version and kind")
    kind = data[1]
    if kind == _REQUEST:
        return LeaseRequest.decode(data)
    if kind == _REPLY:
        return LeaseReply.decode(data)
    if kind == _RELEASE:
        return LeaseRelease.decode(data)
    raise ValueError(f"unknown lease message kind {kind}")


# -- durable votes -----------------------------------------------------------------------------


class VoteStore(Protocol):
    """Where a voter keeps, per shard, the highest epoch it granted and to whom.

    ``save`` must be durable before the grant is acted on (promise, reply), so
    a voter that crashes and restarts never grants the same epoch twice or a
    lower one. A store may make it durable when ``save`` returns, or later in
    ``flush``: then the caller of :class:`ShardLeases` calls ``flush`` before it
    sends any message or acts on any event a call returned (one write and
    fsync for all the grants of an election round, not one per shard).
    """

    def load(self) -> dict[int, tuple[int, str]]:
        """shard -> (term, holder) for every shard that ever granted."""
        ...

    def save(self, shard: int, term: int, holder: str) -> None: ...

    def flush(self) -> None:
        """Make every saved vote durable (a no-op for a store whose saves are durable at once)."""
        ...


class MemoryVoteStore:
    """Votes in a dict: for tests and simulations, where the object outlives the crashed node."""

    def __init__(self) -> None:
        self.votes: dict[int, tuple[int, str]] = {}
        self.saves = 0

    def load(self) -> dict[int, tuple[int, str]]:
        return dict(self.votes)

    def save(self, shard: int, term: int, holder: str) -> None:
        self.votes[shard] = (term, holder)
        self.saves += 1

    def flush(self) -> None:
        pass


class VoteStoreError(ValueError):
    """The vote file cannot be read back; the message names it."""


class FileVoteStore:
    """Every shard's vote in one small file, replaced atomically on each save.

    Format (big-endian): ``b"AKLV"``, version (1 byte), count (4), then per
    shard: shard (4), term (8), holder length (1), holder; then a CRC-32 (4) of
    all before it. A save writes a temporary file beside it, fsyncs it, renames
    it over the old one and fsyncs the directory, so after a crash the file is
    the old or the new one, whole. Rewriting all shards costs a few kilobytes
    per grant; grants happen at elections only (renewals change nothing that is
    stored). Not thread-safe: one owner calls it.
    """

    FILE_NAME = "lease_votes"
    _MAGIC = b"AKLV"
    _VERSION = 1
    _HEADER = struct.Struct(">4sBI")
    _ENTRY = struct.Struct(">IQB")
    _CRC = struct.Struct(">I")

    def __init__(self, directory: str | os.PathLike[str], deferred: bool = False) -> None:
        """``deferred``: saves are written by :meth:`flush` (see VoteStore), else at once."""
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / self.FILE_NAME
        self.deferred = deferred
        self._dirty = False
        self._votes: dict[int, tuple[int, str]] | None = None

    def load(self) -> dict[int, tuple[int, str]]:
        if self._votes is None:
            self._votes = self._read()
        return dict(self._votes)

    def save(self, shard: int, term: int, holder: str) -> None:
        if self._votes is None:
            self._votes = self._read()
        _check_ranges(shard, term)
        _id_bytes(holder, "holder")
        self._votes[shard] = (term, holder)
        if self.deferred:
            self._dirty = True
        else:
            self._write(self._votes)

    def flush(self) -> None:
        if self._dirty and self._votes is not None:
            self._write(self._votes)
            self._dirty = False

    def _read(self) -> dict[int, tuple[int, str]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise VoteStoreError(f"{self.path}: cannot read the lease vote file: {error.strerror}") from None
        try:
            return self._parse(data)
        except ValueError as error:
            raise VoteStoreError(f"{self.path}: lease vote file is corrupt ({error})") from None

    def _parse(self, data: bytes) -> dict[int, tuple[int, str]]:
        if len(data) < self._HEADER.size + self._CRC.size:
            raise ValueError(f"{len(data)} bytes, shorter than header and checksum")
        (crc,) = self._CRC.unpack_from(data, len(data) - self._CRC.size)
        body = data[: -self._CRC.size]
        if zlib.crc32(body) != crc:
            raise ValueError("checksum mismatch")
        magic, version, count = self._HEADER.unpack_from(body)
        if magic != self._MAGIC or version != self._VERSION:
            raise ValueError(f"not a version-{self._VERSION} lease vote file")
        votes: dict[int, tuple[int, str]] = {}
        offset = self._HEADER.size
        for _ in range(count):
            if offset + self._ENTRY.size > len(body):
                raise ValueError("entry runs past the end")
            shard, term, length = self._ENTRY.unpack_from(body, offset)
            offset += self._ENTRY.size
            if offset + length > len(body):
                raise ValueError("holder runs past the end")
            votes[shard] = (term, body[offset : offset + length].decode())
            offset += length
        if offset != len(body):
            raise ValueError(f"{len(body) - offset} bytes after the last entry")
        return votes

    def _write(self, votes: Mapping[int, tuple[int, str]]) -> None:
        parts = [self._HEADER.pack(self._MAGIC, self._VERSION, len(votes))]
        for shard, (term, holder) in sorted(votes.items()):
            raw = holder.encode()
            parts.append(self._ENTRY.pack(shard, term, len(raw)) + raw)
        body = b"".join(parts)
        _replace_durably(self.path, body + self._CRC.pack(zlib.crc32(body)))


def _replace_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to a file beside ``path``, fsync it, rename it over ``path``, fsync the directory."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    # The rename is durable only once the directory entry is.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# -- the quorum floor: how many members the cluster had ---------------------------------------


class HighWaterStore(Protocol):
    """Where :class:`MemberHighWater` keeps its count across restarts (0: nothing stored)."""

    def load(self) -> int: ...

    def save(self, high_water: int) -> None: ...


class FileHighWater:
    """The high water in a small file beside the vote file, replaced atomically and durably on each change.

    Format (big-endian): ``b"AKHW"``, version (1 byte), high water (4), CRC-32
    (4) of what precedes it. It changes only when membership does.
    """

    FILE_NAME = "members_high_water"
    _MAGIC = b"AKHW"
    _VERSION = 1
    _BODY = struct.Struct(">4sBI")
    _CRC = struct.Struct(">I")

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / self.FILE_NAME

    def load(self) -> int:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as error:
            raise VoteStoreError(f"{self.path}: cannot read the member high-water file: {error.strerror}") from None
        if len(data) != self._BODY.size + self._CRC.size:
            raise VoteStoreError(f"{self.path}: member high-water file is corrupt ({len(data)} bytes)")
        body = data[: self._BODY.size]
        (crc,) = self._CRC.unpack_from(data, self._BODY.size)
        magic, version, high_water = self._BODY.unpack(body)
        if zlib.crc32(body) != crc or magic != self._MAGIC or version != self._VERSION:
            raise VoteStoreError(f"{self.path}: member high-water file is corrupt (not a version-1 file, or checksum)")
        return int(high_water)

    def save(self, high_water: int) -> None:
        body = self._BODY.pack(self._MAGIC, self._VERSION, high_water)
        _replace_durably(self.path, body + self._CRC.pack(zlib.crc32(body)))


class MemberHighWater:
    """The most cluster members seen alive at once, lowered only by graceful leaves; and the quorum floor from it.

    Sans-IO. :meth:`observe` takes the live members (this node included) and
    the members the membership says *left* (stopped cleanly and said so);
    members declared dead, or forgotten once their tombstones were reclaimed,
    change nothing. Each graceful leave lowers the high water by one, once
    (again only after the member was seen alive since), never below the live
    count. With a ``store`` the high water survives restarts: a node without
    seeds that restarts while cut off then still knows how big its cluster was.
    """

    def __init__(self, replication_factor: int, store: HighWaterStore | None = None) -> None:
        if replication_factor < 1:
            raise ValueError(f"replication_factor must be >= 1, not {replication_factor}")
        self.replication_factor = replication_factor
        self._store = store
        self.high_water = store.load() if store is not None else 0
        self._departed: set[str] = set()  # leaves already counted, until the member is seen alive again

    @property
    def floor(self) -> int:
        """``majority_of_count(min(replication_factor, high_water))``: see ShardLeases.set_quorum_floor."""
        return majority_of_count(min(self.replication_factor, self.high_water))

    def observe(self, live: Iterable[str], left: Iterable[str]) -> bool:
        """Take in a membership view; True when the high water changed (and was stored)."""
        live = set(live)
        departed = self._departed - live
        leaves = set(left) - live - departed
        high_water = max(self.high_water - len(leaves), len(live))
        if high_water != self.high_water and self._store is not None:
            self._store.save(high_water)  # durable before a lower floor is acted on (raises: nothing changed)
        self._departed = departed | leaves
        changed = high_water != self.high_water
        self.high_water = high_water
        return changed


# -- the core -------------------------------------------------------------------------------------


class LeaseEvent(NamedTuple):
    """For the replication layer: this node became (``acquired``) or stopped being (``lost``) primary."""

    shard: int
    kind: Literal["acquired", "lost"]
    epoch: int


@dataclass
class _Round:
    """One round of requests: its grants count only for the lease it started at ``sent``."""

    sent: float
    epoch: int
    renew: bool
    granted: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    retry_at: float = math.inf  # the earliest a refusing voter's promise to another node ends (our clock)


@dataclass
class _Shard:
    # voter state: term and holder are durable (the store), promise_until is not
    term: int = 0
    holder: str = ""
    promise_until: float = 0.0  # no election grant to another node before this (our clock)
    # data state, from the replication layer
    position: Position = (0, 0)
    position_writer: int = 0  # writer_tag of the primary that wrote the change at ``position`` (0: unknown)
    trusted: bool = True
    untrusted_since: float = 0.0
    # membership
    replicas: tuple[str, ...] = ()
    # candidate and holder state (volatile)
    held_epoch: int = 0  # 0: not the holder
    lease_until: float = 0.0
    next_renewal_at: float = 0.0
    rounds: dict[int, _Round] = field(default_factory=dict)
    election_round: int = 0  # the outstanding election round, 0 if none
    campaign_at: float | None = None  # when to campaign next, once no lease is live
    failures: int = 0  # failed election rounds since the last success
    highest_seen: int = 0  # highest epoch heard of in any message
    released: bool = False  # the holder of ``term`` released its lease (hand-off, shutdown)
    # A live lease of another node that a refusing voter told us of (its promise, our clock):
    # nothing to campaign for until then, and where clients go meanwhile. Never a grant, and
    # forgotten at any sign of a later term (a request above it, a release, a grant of ours).
    heard_holder: str = ""
    heard_term: int = 0
    heard_until: float = 0.0
    peer_positions: dict[str, Position] = field(default_factory=dict)


class ShardLeases:
    """One node's leases and votes for every shard. Not thread-safe: one owner calls it (the reactor).

    Times are seconds on this node's monotonic clock and must never go back.
    """

    def __init__(
        self,
        node_id: str,
        timing: LeaseTiming,
        store: VoteStore,
        now: float,
        rng: random.Random,
        restarted: bool = True,
    ) -> None:
        _id_bytes(node_id, "node id")
        self.node_id = node_id
        self.timing = timing
        self.store = store
        self.rng = rng
        # A restarted voter may have promised someone a lease it no longer
        # remembers (promises are not stored): it grants no election for one
        # lease duration. True is the safe default; False only for a node whose
        # store is new (it never granted anything).
        self._elections_from = now + timing.lease_duration if restarted else now
        self._floor = 1  # the fewest grants any lease needs (set_quorum_floor)
        self._shards: dict[int, _Shard] = {}
        for shard, (term, holder) in store.load().items():
            self._shards[shard] = _Shard(term=term, holder=holder, highest_seen=term)
        # Round numbers start at a random point: a reply to a round of this
        # node's previous incarnation (still in flight when it restarted) must
        # not pass for a reply to one of ours, which could have been sent
        # after that grant and so outlive its promise.
        self._next_round = rng.getrandbits(62) + 1
        self.events: list[LeaseEvent] = []
        # Bumped whenever what this node knows of a shard's holder may have changed (a grant to a
        # new holder, a release, an election started or ended): routing is worth recomputing.
        self.routing_changes = 0
        self.counters: dict[str, int] = {
            "elections_started": 0,
            "elections_won": 0,
            "renewals": 0,
            "grants": 0,
            "refusals": 0,
            "lost": 0,
            "renewals_granted": 0,  # as a voter (grants counts these too)
            "releases": 0,
            "malformed": 0,
        }

    # -- inputs from the rest of the node ----------------------------------------------------

    def set_replica_sets(self, replica_sets: Mapping[int, tuple[str, ...]], now: float) -> Outbound:
        """The replica set of every shard this node belongs to (shards left out: not a member).

        A holder that is no longer a member steps down and releases its lease
        (returned: the release messages to send).
        """
        out: Outbound = []
        for shard, state in self._shards.items():
            replicas = replica_sets.get(shard, ())
            if self.node_id not in replicas and state.replicas:
                if state.held_epoch:
                    out.extend(self._step_down(shard, state, now, release=True))
                state.replicas = ()
                state.rounds.clear()
                state.election_round = 0
                self.routing_changes += 1
                state.campaign_at = None
        for shard, replicas in replica_sets.items():
            if self.node_id not in replicas:
                continue
            state = self._state(shard)
            if state.replicas != replicas:
                state.replicas = tuple(replicas)
                state.peer_positions = {p: v for p, v in state.peer_positions.items() if p in replicas}
        return out

    def set_quorum_floor(self, floor: int) -> None:
        """The fewest grants (the candidate's own included) any round needs, whatever the replica set.

        See the module docstring ("The quorum floor"). A holder whose replica
        set is below it keeps its lease until the lease ends, then loses it:
        its renewals cannot be decided.
        """
        if floor < 1:
            raise ValueError(f"the quorum floor must be >= 1, not {floor}")
        self._floor = floor

    @property
    def quorum_floor(self) -> int:
        return self._floor

    def set_position(self, shard: int, position: Position, writer: int = 0) -> None:
        """The (epoch, seq) of the last replicated change this node applied for ``shard``, and who wrote it.

        ``writer`` is the writer_tag (aegiskv.cluster.replication) of the primary of that
        epoch, 0 when unknown: it lets this voter join the renewals of that primary late.
        """
        state = self._state(shard)
        state.position = position
        state.position_writer = writer

    def set_trusted(self, shard: int, trusted: bool, now: float) -> None:
        """Whether this node's copy of ``shard`` can vouch for what was acknowledged.

        Untrusted (lost its copy, or still copying it): it grants no election
        until trusted again or ``untrusted_grant_after`` has passed, and does
        not campaign either. Renewals of a holder it already granted are not
        affected.
        """
        state = self._state(shard)
        if trusted:
            state.trusted = True
        elif state.trusted:
            state.trusted = False
            state.untrusted_since = now

    # -- queries ---------------------------------------------------------------------------------

    def trusted(self, shard: int) -> bool:
        """Whether this node's copy of ``shard`` vouches for what was acknowledged (see set_trusted)."""
        state = self._shards.get(shard)
        return state is None or state.trusted

    def holds_lease(self, shard: int, now: float) -> bool:
        """True only while this node holds a live lease for ``shard``; ``now`` read when it matters.

        A replica set of one renews an expired lease on the spot (_renew_alone).
        """
        state = self._shards.get(shard)
        if state is None or not state.held_epoch:
            return False
        return now < state.lease_until or self._renew_alone(shard, state, now)

    def lease_until(self, shard: int) -> float:
        """The deadline (our clock) of the lease this node holds for ``shard``; 0.0 when not the holder."""
        state = self._shards.get(shard)
        return state.lease_until if state is not None and state.held_epoch else 0.0

    def epoch(self, shard: int) -> int:
        """The highest epoch this node granted for ``shard`` (to itself when it holds the lease), durable.

        Followers accept replication only from epochs at least this: after
        voting for a new holder, nothing from an older one may be applied.
        """
        state = self._shards.get(shard)
        return state.term if state is not None else 0

    def campaigning(self, shard: int) -> bool:
        """True while this node runs an election for ``shard`` (it knows of no live lease)."""
        state = self._shards.get(shard)
        return state is not None and state.election_round != 0

    def released_holder(self, shard: int) -> str | None:
        """The node that released the last lease this node granted for ``shard``, until it grants another.

        Gossip says who leads a shard a round or two late; a node that saw the
        holder let go must not send clients back to it (the holder, which knows
        it let go, would send them on: a redirect loop until the next election).
        """
        state = self._shards.get(shard)
        return state.holder if state is not None and state.released else None

    def known_holder(self, shard: int, now: float) -> str | None:
        """This node if it holds the lease, else the node it promised a live lease to, else None."""
        state = self._shards.get(shard)
        if state is None:
            return None
        if state.held_epoch and now < state.lease_until:
            return self.node_id
        if state.holder and now < state.promise_until and state.holder != self.node_id:
            return state.holder
        if state.heard_holder and now < state.heard_until:
            return state.heard_holder
        return None

    # -- driving ------------------------------------------------------------------------------------

    def tick(self, now: float) -> Outbound:
        """Advance timers: lease expiry, renewal rounds, election timeouts, candidacies."""
        out: Outbound = []
        for shard, state in self._shards.items():
            if not state.replicas:
                continue
            self._expire_rounds(state, now)
            if state.held_epoch:
                if now >= state.lease_until and not self._renew_alone(shard, state, now):
                    self._lose(shard, state)
                elif now >= state.next_renewal_at:
                    state.next_renewal_at = now + self.timing.lease_duration * self.timing.renew_fraction
                    out.extend(self._start_round(shard, state, state.held_epoch, True, now))
            if not state.held_epoch and not state.election_round:
                out.extend(self._consider_campaign(shard, state, now))
        return out

    def receive(self, source: str, payload: bytes, now: float) -> Outbound:
        """Handle one message from ``source``; returns replies. Malformed or forged input is counted and dropped."""
        try:
            message = decode_message(payload)
        except ValueError:
            self.counters["malformed"] += 1
            return []
        # The transport authenticated ``source``; a message speaking for another node is dropped.
        if isinstance(message, LeaseRequest):
            if message.candidate != source:
                self.counters["malformed"] += 1
                return []
            return self._on_request(message, now)
        if isinstance(message, LeaseReply):
            if message.voter != source:
                self.counters["malformed"] += 1
                return []
            return self._on_reply(message, now)
        if message.holder != source:
            self.counters["malformed"] += 1
            return []
        self._on_release(message, now)
        return []

    def release(self, shard: int, now: float) -> Outbound:
        """Stop holding ``shard``'s lease now and tell the voters, so a successor is elected at once.

        This node then stays out of the next election for one lease duration
        (the point of a hand-off is that someone else takes over).
        """
        state = self._shards.get(shard)
        if state is None or not state.held_epoch:
            return []
        out = self._step_down(shard, state, now, release=True)
        state.campaign_at = now + self.timing.lease_duration
        return out

    # -- voting -------------------------------------------------------------------------------------

    def _vote(self, shard: int, state: _Shard, epoch: int, candidate: str, position: Position, now: float) -> bool:
        """The voter rule (module docstring); saves the grant before promising. Self-votes come here too."""
        granted = self._may_grant(state, epoch, candidate, position, now)
        if granted:
            if epoch != state.term or candidate != state.holder:
                self.store.save(shard, epoch, candidate)  # durable before the grant is acted on
                state.term, state.holder = epoch, candidate
                state.released = False
                self.routing_changes += 1
            state.promise_until = max(state.promise_until, now + self.timing.lease_duration)
            state.heard_until = 0.0  # our own promise says who holds the lease now
            state.highest_seen = max(state.highest_seen, epoch)
            self.counters["grants"] += 1
        else:
            self.counters["refusals"] += 1
        return granted

    def _may_grant(self, state: _Shard, epoch: int, candidate: str, position: Position, now: float) -> bool:
        if self.node_id not in state.replicas or candidate not in state.replicas:
            return False
        if epoch < state.term:
            return False
        if epoch == state.term:
            return candidate == state.holder  # renewal (or a repeated request) by the holder of the term
        if now < state.promise_until and state.holder != candidate:
            return False  # a live promise to another node
        if candidate != self.node_id and state.election_round and not self._outranks(state, candidate, position):
            # Campaigning ourselves: refuse rivals up to our epoch that do not
            # outrank us. Granting every rival would make us refuse our own
            # vote at the end and, with two candidates at once, elect neither
            # and block both for a lease; refusing every rival would make two
            # simultaneous candidates refuse each other and both back off. So
            # one of any two wins: the further ahead, else the earlier in R(s).
            # (Volatile and a refusal only, so safe to forget on a restart.)
            campaign = state.rounds.get(state.election_round)
            if campaign is not None and epoch <= campaign.epoch:
                return False
        if now < self._elections_from and not self._alone(state):
            # Restarted: promises made before are unknown. A replica set of this node
            # alone (in a cluster that is one node) is the exception: no other node
            # could have been promised anything.
            return False
        if not state.trusted and now - state.untrusted_since < self.timing.untrusted_grant_after:
            return False
        if position < state.position:
            return False
        # An epoch this voter holds changes of (or a later one) is taken, whoever holds the term
        # now: a replica set that changed may grant it again (aegiskv.cluster.replication).
        # Except to the primary that wrote them: it won that epoch, so granting it again is
        # joining its majority late (a voter that missed the election, restarted or cut off,
        # renewing the lease it copies from). Without this such a voter refuses the holder's
        # renewals until the next election.
        return epoch > state.position[0] or (
            epoch == state.position[0] and state.position_writer != 0 and state.position_writer == writer_tag(candidate)
        )

    def _outranks(self, state: _Shard, candidate: str, position: Position) -> bool:
        """Whether ``candidate`` is the better primary than this node: further ahead, or as far and earlier in R(s)."""
        if position != state.position:
            return position > state.position
        return state.replicas.index(candidate) < state.replicas.index(self.node_id)

    def _on_request(self, request: LeaseRequest, now: float) -> Outbound:
        state = self._shards.get(request.shard)
        if state is None or not state.replicas:
            # Not a member: refuse without keeping anything, so requests for
            # arbitrary shard numbers cannot make this node grow.
            self.counters["refusals"] += 1
            term, holder, position = (state.term, state.holder, state.position) if state else (0, "", (0, 0))
            reply = LeaseReply(
                request.shard, request.epoch, request.round_id, self.node_id, False, term, holder, position
            )
            return [(request.candidate, reply.encode())]
        state.highest_seen = max(state.highest_seen, request.epoch)
        if request.epoch > state.heard_term:
            state.heard_until = 0.0  # someone asks for a later term: the lease we heard of may be over
        if request.candidate in state.replicas:
            state.peer_positions[request.candidate] = request.position
        granted = self._vote(request.shard, state, request.epoch, request.candidate, request.position, now)
        if granted and request.renew:
            self.counters["renewals_granted"] += 1
        promise_ms = 0
        if not granted and state.holder != request.candidate and now < state.promise_until:
            promise_ms = min(_U32, math.ceil((state.promise_until - now) * 1000))
        reply = LeaseReply(
            request.shard,
            request.epoch,
            request.round_id,
            self.node_id,
            granted,
            state.term,
            state.holder,
            state.position,
            promise_ms,
        )
        return [(request.candidate, reply.encode())]

    def _on_release(self, release: LeaseRelease, now: float) -> None:
        state = self._shards.get(release.shard)
        if state is not None and state.heard_until and release.epoch >= state.heard_term:
            state.heard_until = 0.0  # the lease a voter told us of ended early (a hand-off), or a later one did
            state.campaign_at = None
        if state is not None and state.term == release.epoch and state.holder == release.holder:
            # The lease lapses now (not at 0: candidacy delays count from the lapse).
            state.promise_until = min(state.promise_until, now)
            state.released = True
            self.routing_changes += 1
            state.campaign_at = None  # reconsider at once: the preferred primary campaigns now
            self.counters["releases"] += 1

    # -- campaigning and holding --------------------------------------------------------------------

    def _on_reply(self, reply: LeaseReply, now: float) -> Outbound:
        state = self._shards.get(reply.shard)
        if state is None or not state.replicas:
            return []
        state.highest_seen = max(state.highest_seen, reply.term)
        if reply.voter in state.replicas:
            state.peer_positions[reply.voter] = reply.position
        round_ = state.rounds.get(reply.round_id)
        if round_ is None or round_.epoch != reply.epoch or reply.voter not in state.replicas:
            return []  # a round already decided or given up, or a stranger
        if reply.granted:
            round_.granted.add(reply.voter)
            return self._count(reply.shard, state, reply.round_id, round_, now)
        round_.refused.add(reply.voter)
        if reply.promise_ms:
            # Their clock may run slower than ours by max_clock_drift: ask once it surely ended.
            ends = now + reply.promise_ms / 1000 * (1 + self.timing.max_clock_drift)
            round_.retry_at = min(round_.retry_at, ends)
            if reply.holder and reply.holder != self.node_id and reply.term >= max(state.term, state.heard_term):
                # A live lease we did not know of: typically ours from before a restart was
                # followed by another node's, whose renewals we could not grant during the
                # restart wait. Asking again before the promise ends would only be refused,
                # and each round makes this node answer TRYAGAIN for the shard meanwhile.
                state.heard_holder = reply.holder
                state.heard_term = reply.term
                state.heard_until = max(
                    state.heard_until, now + reply.promise_ms / 1000 * (1 - self.timing.max_clock_drift)
                )
        if state.held_epoch and reply.term > state.held_epoch:
            # A majority may have moved on, and this voter refuses our appends:
            # step down so that an election at a higher epoch brings it back.
            return self._step_down(reply.shard, state, now, release=True)
        if reply.round_id == state.election_round and len(state.replicas) - len(round_.refused) < self._needed(state):
            self._fail_election(state, now)
        return []

    def _start_round(self, shard: int, state: _Shard, epoch: int, renew: bool, now: float) -> Outbound:
        """Send a round of requests, ``now`` being its ``sent`` (read before anything is sent)."""
        round_id = self._next_round
        self._next_round += 1
        state.rounds[round_id] = _Round(now, epoch, renew)
        if not renew:
            state.election_round = round_id
            self.routing_changes += 1
        request = LeaseRequest(shard, epoch, self.node_id, state.position, renew, round_id).encode()
        out = [(peer, request) for peer in state.replicas if peer != self.node_id]
        # A replica set of one is a majority by itself (floor 1): decided at once.
        self._count(shard, state, round_id, state.rounds[round_id], now)
        return out

    def _count(self, shard: int, state: _Shard, round_id: int, round_: _Round, now: float) -> Outbound:
        """Decide a round once the others' grants make a majority with our own vote, cast now (and reach the floor)."""
        others = sum(1 for voter in round_.granted if voter in state.replicas)
        if others + 1 < self._needed(state):
            return []
        del state.rounds[round_id]
        lease_until = round_.sent + self.timing.held_for
        if now >= lease_until or not self._vote(shard, state, round_.epoch, self.node_id, state.position, now):
            if round_id == state.election_round:
                self._fail_election(state, now)
            return []
        if round_.renew:
            if state.held_epoch == round_.epoch:
                state.lease_until = max(state.lease_until, lease_until)
                self.counters["renewals"] += 1
            return []
        # An election won.
        state.election_round = 0
        self.routing_changes += 1
        state.campaign_at = None
        state.failures = 0
        state.held_epoch = round_.epoch
        state.lease_until = lease_until
        state.next_renewal_at = round_.sent + self.timing.lease_duration * self.timing.renew_fraction
        self.counters["elections_won"] += 1
        self.events.append(LeaseEvent(shard, "acquired", round_.epoch))
        return []

    def _renew_alone(self, shard: int, state: _Shard, now: float) -> bool:
        """Renew the lapsed lease of a replica set of one in place, in the same epoch; False if not alone.

        Alone (and the floor at most 1: _alone), this node is the only voter and may elect itself at once (no
        restart wait: _may_grant), so losing the lease and winning the next
        election changes nothing but the epoch, and costs the writes caught
        in between: those the reactor ran after a stall (a long turn, a busy
        machine) and before the tick that would have renewed, which would
        answer TRYAGAIN on a node nobody else can take over from.
        """
        if not self._alone(state) or state.election_round:
            return False
        if not self._vote(shard, state, state.held_epoch, self.node_id, state.position, now):
            return False
        state.lease_until = now + self.timing.held_for
        state.next_renewal_at = now + self.timing.lease_duration * self.timing.renew_fraction
        self.counters["renewals"] += 1
        return True

    def _consider_campaign(self, shard: int, state: _Shard, now: float) -> Outbound:
        if len(state.replicas) < self._floor:
            # Members were declared dead, not gone: no round could be decided, ask nobody.
            state.campaign_at = None
            return []
        if state.holder != self.node_id and now < state.promise_until:
            state.campaign_at = None  # a live lease (as far as we know): wait for it to lapse
            return []
        if now < state.heard_until:
            return []  # a voter told us of a live lease: ask again once it ends (campaign_at stands)
        if state.campaign_at is None:
            state.campaign_at = self._campaign_time(state)
        if now < state.campaign_at:
            return []
        # Above any epoch this node has seen, voted for, or holds changes of: a replica set that
        # changed may hold members that never saw the epoch a change here was written in.
        epoch = max(state.highest_seen, state.term, state.position[0]) + 1
        if not self._may_grant(state, epoch, self.node_id, state.position, now):
            # We would refuse ourselves (restart wait, untrusted): look again later.
            state.campaign_at = None
            return []
        self.counters["elections_started"] += 1
        return self._start_round(shard, state, epoch, False, now)

    def _campaign_time(self, state: _Shard) -> float:
        """When to campaign: as the lease we knew of lapses, the preferred primary first, the most up to date next."""
        alone = self._alone(state)  # see _may_grant: no restart wait
        lapsed = max(
            state.promise_until if state.holder != self.node_id else 0.0,
            state.heard_until,
            0.0 if alone else self._elections_from,
        )
        if state.replicas[0] == self.node_id and state.trusted:
            return lapsed
        # The lapsed holder is left out of the ranking: it is the one presumed gone.
        ahead = sum(
            1
            for peer, position in state.peer_positions.items()
            if peer not in (self.node_id, state.holder) and position > state.position
        )
        return lapsed + self.timing.election_delay * (1 + ahead + self.rng.random())

    def _needed(self, state: _Shard) -> int:
        """Grants (our own included) a round needs: a majority of the replica set, and the floor."""
        return max(majority_of(state.replicas), self._floor)

    def _alone(self, state: _Shard) -> bool:
        """A replica set of this node alone, in a cluster that is one node (the floor at most 1)."""
        return self._floor <= 1 and state.replicas == (self.node_id,)

    def _fail_election(self, state: _Shard, now: float) -> None:
        """Back off (random, bounded), or ask again when a refusing voter's promise ends if that is sooner."""
        round_ = state.rounds.pop(state.election_round, None)
        state.election_round = 0
        self.routing_changes += 1
        state.failures += 1
        timing = self.timing
        backoff = timing.election_delay * 2 ** min(state.failures - 1, 6) * (0.5 + self.rng.random())
        retry_at = now + min(timing.max_backoff, max(backoff, timing.election_delay / 2))
        if round_ is not None:
            retry_at = min(retry_at, max(round_.retry_at, now))
        state.campaign_at = retry_at

    def _expire_rounds(self, state: _Shard, now: float) -> None:
        if state.election_round:
            round_ = state.rounds.get(state.election_round)
            if round_ is None or now >= round_.sent + self.timing.round_timeout:
                self._fail_election(state, now)
        held_for = self.timing.held_for
        for round_id in [r for r, round_ in state.rounds.items() if now >= round_.sent + held_for]:
            del state.rounds[round_id]  # its lease would have ended already: nothing to count for

    def _lose(self, shard: int, state: _Shard) -> None:
        epoch = state.held_epoch
        state.held_epoch = 0
        state.lease_until = 0.0
        state.rounds.clear()
        state.campaign_at = None
        self.counters["lost"] += 1
        self.events.append(LeaseEvent(shard, "lost", epoch))

    def _step_down(self, shard: int, state: _Shard, now: float, release: bool) -> Outbound:
        epoch = state.held_epoch
        self._lose(shard, state)
        if not release:
            return []
        if state.term == epoch and state.holder == self.node_id:
            state.promise_until = min(state.promise_until, now)  # our promise to ourselves goes with the lease
        message = LeaseRelease(shard, epoch, self.node_id).encode()
        return [(peer, message) for peer in state.replicas if peer != self.node_id]

    def _state(self, shard: int) -> _Shard:
        state = self._shards.get(shard)
        if state is None:
            if not 0 <= shard <= _U32:
                raise ValueError(f"shard {shard} is outside 0..{_U32}")
            state = self._shards[shard] = _Shard()
        return state


def majority_of(replicas: tuple[str, ...]) -> int:
    """Grants (the candidate's own included) that make a majority of ``replicas``."""
    return majority_of_count(len(replicas))


def majority_of_count(count: int) -> int:
    """Grants that make a majority of ``count`` voters."""
    return count // 2 + 1


__all__ = [
    "MAX_NODE_ID_BYTES",
    "FileHighWater",
    "FileVoteStore",
    "HighWaterStore",
    "LeaseEvent",
    "LeaseMessage",
    "LeaseRelease",
    "LeaseReply",
    "LeaseRequest",
    "LeaseTiming",
    "MemberHighWater",
    "MemoryVoteStore",
    "Outbound",
    "Position",
    "ShardLeases",
    "VoteStore",
    "VoteStoreError",
    "decode_message",
    "majority_of",
    "majority_of_count",
]
