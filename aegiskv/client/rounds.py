"""The rounds of one client operation, sans-IO: where each request goes, what its reply means, when to try again.

Both clients drive these: the threaded :class:`aegiskv.client.Client` with
sockets and ``time.sleep``, :class:`aegiskv.client.aio.Client` with asyncio
streams and ``asyncio.sleep``. Neither decides anything about routing or
retries itself, so the two cannot drift apart. A driver's loop::

    rounds = RequestRounds(requests, budget, max_redirects)
    while True:
        table = <the route table, refreshed when due>
        for address, indices in rounds.plan(table).items():
            target = address or <any server>
            frames, broken = <send requests[indices] to target, read replies>
            rounds.settle(target, indices, frames, broken)
        step = rounds.finish()
        if step is None:
            return rounds.outcomes()
        <follow: fetch the map now; retry: sleep step.delay, then fetch it>

The retry policy itself (which failures, how long to wait) is
:mod:`aegiskv.client.retry`; the rules the rounds apply are listed in
:mod:`aegiskv.client.client`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from aegiskv.client.errors import (
    AegisError,
    AuthenticationError,
    ConditionNotMetError,
    ConnectionClosedError,
    CrossSlotError,
    MovedError,
    NotFoundError,
    OutOfMemoryError,
    ProtocolViolationError,
    RateLimitedError,
    ServerError,
    StorageFailedError,
    TryAgainError,
    VersionMismatchError,
)
from aegiskv.client.retry import Failure, RetryBudget
from aegiskv.client.route_table import Address, RouteTable, parse_moved
from aegiskv.cluster.redirect import NO_PRIMARY_YET
from aegiskv.protocols.native.codec import Frame, Status


class Request(NamedTuple):
    """One request as the rounds send it: ``key`` routes it (None: any server will do)."""

    opcode: int
    fields: dict[str, Any]
    key: bytes | None
    idempotent: bool


# What a request ended with: its reply frame (any status but MOVED), or the error that ended its retries.
Outcome = Frame | AegisError


class Step(NamedTuple):
    """What the driver does before the next round.

    ``delay`` None: follow redirects at once, fetching the map again (from
    ``hint`` first) unless another caller replaced the table this round used.
    ``delay`` a number: a failure; wait that long, then fetch the map again
    unless it was fetched after the round began.
    """

    delay: float | None
    hint: Address | None


# Server refusals that carry the server's code and message as they are.
_REFUSALS: dict[int, type[ServerError]] = {
    Status.NOAUTH: AuthenticationError,
    Status.AUTH_FAILED: AuthenticationError,
    Status.RATE_LIMITED: RateLimitedError,
    Status.OUT_OF_MEMORY: OutOfMemoryError,
    Status.STORAGE_FAILED: StorageFailedError,
    Status.TRY_AGAIN: TryAgainError,
    Status.CROSS_SLOT: CrossSlotError,
}


def raise_for_status(frame: Frame, key: bytes | None = None) -> None:
    """Nothing for OK; otherwise the exception the caller gets for the frame's status."""
    status = frame.status
    if status == Status.OK:
        return
    if status == Status.NOT_FOUND:
        raise NotFoundError(f"key {key!r} not found" if key is not None else "not found")
    if status == Status.NOT_STORED:
        raise ConditionNotMetError("condition not met; nothing stored")
    if status == Status.VERSION_MISMATCH:
        raise VersionMismatchError(f"version mismatch (current version {frame.version})", frame.version)
    code, message = "ERROR", f"status {status}"
    if frame.items:
        code = frame.items[0][0].decode("utf-8", "replace")
        message = (frame.items[0][1] or b"").decode("utf-8", "replace")
    refusal = _REFUSALS.get(status)
    if refusal is not None:
        raise refusal(message, code)
    if status == Status.MOVED:
        try:
            address, epoch, slot = parse_moved(message)
        except ValueError:
            raise ProtocolViolationError(f"unreadable MOVED reply: {message!r}") from None
        raise MovedError(f"MOVED {message} (no redirect left to follow)", address, epoch, slot)
    if status == Status.BUSY:
        raise ConnectionClosedError(f"server refused the connection: {message}")
    if status == Status.PROTOCOL_ERROR:
        raise ProtocolViolationError(f"server reported a protocol error: {code}: {message}")
    raise ServerError(message, code)


def error_of(frame: Frame) -> ServerError:
    """The error a refusal frame carries (TRYAGAIN, CLUSTERDOWN ...) as the exception the caller would get."""
    try:
        raise_for_status(frame)
    except ServerError as error:
        return error
    raise ValueError(f"status {frame.status} is not a server error")  # a bug: only refusals come here


def moved_owner(frame: Frame) -> Address | None:
    """The node a MOVED reply names (None when it names no host: "the node you asked")."""
    try:
        address, _epoch, _slot = parse_moved((frame.items[0][1] or b"").decode())
    except (ValueError, IndexError):
        raise ProtocolViolationError(f"unreadable MOVED reply: {frame.items!r}") from None
    return address if address[0] else None


def busy_failure(frame: Frame, address: Address) -> Failure | None:
    """A BUSY reply means the server refused the connection as it accepted it: nothing was read."""
    if frame.status != Status.BUSY:
        return None
    message = (frame.items[0][1] or b"").decode("utf-8", "replace") if frame.items else ""
    return Failure(ConnectionClosedError(f"{show(address)} refused the connection: {message}"), maybe_applied=False)


def show(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


class RequestRounds:
    """Requests (pipelined, one batch per owner) until each has an outcome. One per operation; not thread-safe.

    Each round sends every request still pending to its owner. A reply
    settles its request unless it is a redirect (sent again to the node it
    names, after a map refresh) or a refusal worth retrying; a broken
    connection leaves the requests without a reply pending if they may be
    retried, and settles the others with the error. A round with failures
    is followed by a map refresh and a wait (RetryBudget); one with
    redirects only by another round at once, at most ``max_redirects`` in
    a row: past that the redirect counts as a failure (not applied).
    Requests on one key are sent in queue order: they share an owner,
    hence a batch, and pending ones are sent again in queue order. Only
    when a later one on a key was answered and an earlier one refused in
    the same batch does the earlier one land after it.
    """

    __slots__ = (
        "requests",
        "budget",
        "_max_redirects",
        "_outcomes",
        "_pending",
        "_redirected_to",
        "_redirects",
        "_failure",
        "_moved_hint",
        "_last_moved",
    )

    def __init__(self, requests: Sequence[Request], budget: RetryBudget, max_redirects: int) -> None:
        self.requests = requests
        self.budget = budget
        self._max_redirects = max_redirects
        self._outcomes: list[Outcome | None] = [None] * len(requests)
        self._pending = list(range(len(requests)))
        self._redirected_to: dict[int, Address] = {}
        self._redirects = 0
        self._failure: Failure | None = None
        self._moved_hint: Address | None = None
        self._last_moved: Frame | None = None

    def plan(self, table: RouteTable | None) -> dict[Address | None, list[int]]:
        """Start a round: the pending requests' indices by the server to send them to (None: any server)."""
        groups: dict[Address | None, list[int]] = {}
        for index in self._pending:
            request = self.requests[index]
            address = self._redirected_to.pop(index, None)
            if address is None and table is not None and request.key is not None:
                address = table.owner(request.key)
            groups.setdefault(address, []).append(index)
        self._pending = []
        self._failure = None
        self._moved_hint = None
        self._last_moved = None
        return groups

    def settle(self, target: Address, indices: Sequence[int], frames: Sequence[Frame], broken: Failure | None) -> None:
        """The replies ``target`` gave to the requests ``indices`` (in order), and the failure that cut them short."""
        requests, outcomes, pending = self.requests, self._outcomes, self._pending
        for index, frame in zip(indices, frames):
            status = frame.status
            if status == Status.MOVED:
                self._last_moved = frame
                owner = moved_owner(frame)
                if owner is not None:
                    self._redirected_to[index] = owner
                    self._moved_hint = self._moved_hint or owner
                pending.append(index)
            elif status == Status.TRY_AGAIN or status == Status.CLUSTER_DOWN:
                error = error_of(frame)
                maybe_applied = status == Status.TRY_AGAIN and NO_PRIMARY_YET not in str(error)
                if maybe_applied and not requests[index].idempotent:
                    outcomes[index] = frame
                else:
                    pending.append(index)
                    self._failure = Failure(error, maybe_applied)
            else:
                outcomes[index] = frame
        unanswered = indices[len(frames) :]
        if broken is None:
            for index in unanswered:  # the server closed after a protocol error
                outcomes[index] = ProtocolViolationError(f"{show(target)} closed the connection before this")
            return
        self._failure = broken
        for index in unanswered:
            if broken.maybe_applied and not requests[index].idempotent:
                outcomes[index] = broken.error
            else:
                pending.append(index)

    def finish(self) -> Step | None:
        """End the round: None when every request has an outcome (or no retry is left), else the next step."""
        if not self._pending:
            return None
        self._pending.sort()
        failure = self._failure
        if failure is None:  # only redirects: follow them at once, up to max_redirects in a row
            self._redirects += 1
            if self._redirects <= self._max_redirects:
                return Step(None, self._moved_hint)
            # Still bouncing: the nodes disagree on the owner for now (a hand-off or a
            # failover going round). A redirected request was not run: wait, as for a
            # refusal, and ask the map again before following more.
            assert self._last_moved is not None
            failure = Failure(error_of(self._last_moved), maybe_applied=False)
            self._redirected_to.clear()
        self._redirects = 0
        delay = self.budget.next_delay()
        if delay is None:
            exhausted = self.budget.exhausted(failure.error)
            for index in self._pending:
                self._outcomes[index] = exhausted
            self._pending = []
            return None
        return Step(delay, self._moved_hint)

    def outcomes(self) -> list[Outcome]:
        """Every request's outcome, in request order (after :meth:`finish` returned None)."""
        settled = [outcome for outcome in self._outcomes if outcome is not None]
        assert len(settled) == len(self.requests)
        return settled


class BatchRounds:
    """MGET/MSET split by owner: (indices into ``items``, reply frame) per part. One per operation.

    Both are idempotent, so every part that fails is retried, as in
    :class:`RequestRounds`, regrouped by the map of each round; parts that
    succeeded are not sent again. A reply that is neither success nor a
    retryable refusal is raised at once.
    """

    __slots__ = ("items", "budget", "_max_redirects", "done", "_pending", "_redirects", "_failure", "_hint", "_moved")

    def __init__(self, items: Sequence[tuple[bytes, bytes]], budget: RetryBudget, max_redirects: int) -> None:
        self.items = items
        self.budget = budget
        self._max_redirects = max_redirects
        self.done: list[tuple[list[int], Frame]] = []
        self._pending = list(range(len(items)))
        self._redirects = 0
        self._failure: Failure | None = None
        self._hint: Address | None = None
        self._moved: Frame | None = None

    def plan(self, table: RouteTable | None) -> dict[Address | None, list[int]]:
        """Start a round: pending item indices by owner (None: any server)."""
        groups: dict[Address | None, list[int]] = {}
        for index in self._pending:
            owner = table.owner(self.items[index][0]) if table is not None else None
            groups.setdefault(owner, []).append(index)
        self._pending = []
        self._failure = None
        self._hint = None
        return groups

    def part(self, indices: Sequence[int]) -> tuple[tuple[bytes, bytes], ...]:
        """The items of one part, as the frame's ``items``."""
        return tuple(self.items[index] for index in indices)

    def settle(self, target: Address, indices: list[int], frames: Sequence[Frame], broken: Failure | None) -> bool:
        """One part's reply; True when ``target`` failed to answer (the driver marks it unreachable)."""
        if not frames:
            if broken is None:
                raise ProtocolViolationError(f"{show(target)} closed the connection without a reply")
            self._failure = broken
            self._pending.extend(indices)
            return True
        frame = frames[0]
        if frame.status == Status.MOVED:
            self._moved = frame
            self._hint = self._hint or moved_owner(frame)
            self._pending.extend(indices)
        elif frame.status == Status.TRY_AGAIN or frame.status == Status.CLUSTER_DOWN:
            self._failure = Failure(error_of(frame), True)
            self._pending.extend(indices)
        else:
            raise_for_status(frame)
            self.done.append((indices, frame))
        return False

    def finish(self) -> Step | None:
        """End the round: None when every part was answered, else the next step; raises when no retry is left."""
        if not self._pending:
            return None
        failure = self._failure
        if failure is None:  # only redirects: as in RequestRounds
            self._redirects += 1
            if self._redirects <= self._max_redirects:
                return Step(None, self._hint)
            assert self._moved is not None
            failure = Failure(error_of(self._moved), maybe_applied=False)
        self._redirects = 0
        delay = self.budget.next_delay()
        if delay is None:
            raise self.budget.exhausted(failure.error)
        return Step(delay, self._hint)
