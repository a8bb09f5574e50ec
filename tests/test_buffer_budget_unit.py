"""The buffer budgets' accounting and eviction order, in-process (net/budget.py)."""

from __future__ import annotations

from typing import Any

from aegiskv.net.budget import BufferBudget
from aegiskv.obs.repeats import RepeatLimiter


class FakeConnection:
    """The attributes the budget reads and writes on a Transport."""

    def __init__(self, connection_id: int, created: float, trusted: bool = True, client: bool = True) -> None:
        self.connection_id = connection_id
        self.peer: Any = ("127.0.0.1", 40000 + connection_id)
        self.created = created
        self.trusted = trusted
        self.closed = False
        self.accounted_in = 0
        self.accounted_out = 0
        self.accounted_preauth = False
        self.evictable = True
        self.close_reason = ""
        self.counts_as_client = client
        self.port_name = "resp" if client else "gossip"
        self.budget: BufferBudget | None = None

    def close(self, flush: bool = True) -> None:
        self.closed = True
        assert self.budget is not None
        self.budget.account(self, 0, 0)


def _budget(connections: list[FakeConnection], client_limit: int, preauth_limit: int) -> BufferBudget:
    budget = BufferBudget(lambda: [c for c in connections if not c.closed], RepeatLimiter())
    budget.client_limit = client_limit
    budget.preauth_limit = preauth_limit
    for connection in connections:
        connection.budget = budget
    return budget


def test_totals_follow_each_connection_and_the_largest_client_goes_first() -> None:
    small, large, medium = (FakeConnection(n, created=n) for n in (1, 2, 3))
    budget = _budget([small, large, medium], client_limit=100, preauth_limit=10)
    budget.account(small, 10, 5)
    budget.account(large, 50, 0)
    budget.account(medium, 20, 10)
    assert (budget.client_input, budget.client_output) == (80, 15)
    budget.account(large, 60, 0)  # 60 + 15 + 30 = 105 > 100: the largest (large) is closed
    assert large.closed and not small.closed and not medium.closed
    assert budget.total_client == 45 and budget.client_evictions == 1
    assert large.close_reason == "client_memory"
    snapshot = budget.snapshot()
    assert snapshot["client_recent_max_input_buffer"] == 60
    assert snapshot["client_recent_max_output_buffer"] == 10


def test_unauthenticated_bytes_are_capped_oldest_first_and_move_when_trusted() -> None:
    old, new, member = FakeConnection(1, 1.0, False), FakeConnection(2, 2.0, False), FakeConnection(3, 0.5, False)
    budget = _budget([old, new, member], client_limit=1000, preauth_limit=100)
    budget.account(member, 0, 0)  # holds nothing: never chosen, however old
    budget.account(old, 60, 0)
    budget.account(new, 30, 0)
    assert budget.preauth == 90 and budget.total_client == 0
    # It authenticates: its bytes leave the unauthenticated total for the client one.
    new.trusted = True
    budget.account(new, 30, 0)
    assert budget.preauth == 60 and budget.client_input == 30
    budget.account(member, 50, 0)  # 110 > 100: the oldest holder goes
    assert member.closed and not old.closed
    assert budget.preauth == 60 and budget.preauth_evictions == 1


def test_peaks_are_kept_for_two_windows() -> None:
    connection = FakeConnection(1, 0.0)
    budget = _budget([connection], client_limit=1000, preauth_limit=1000)
    budget.account(connection, 70, 0)
    budget.account(connection, 0, 0)
    budget.rotate_peaks()
    assert budget.snapshot()["client_recent_max_input_buffer"] == 70
    budget.rotate_peaks()
    assert budget.snapshot()["client_recent_max_input_buffer"] == 0


def test_a_no_evict_client_is_passed_over_for_the_next_largest() -> None:
    protected, other = FakeConnection(1, created=1), FakeConnection(2, created=2)
    protected.evictable = False  # CLIENT NO-EVICT ON
    budget = _budget([protected, other], client_limit=100, preauth_limit=10)
    budget.account(other, 30, 0)
    budget.account(protected, 80, 0)  # 110 > 100: the largest is exempt, so the other one goes
    assert other.closed and not protected.closed
