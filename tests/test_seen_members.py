"""The members gossip remembers for the dashboard stay bounded when node ids churn."""

from __future__ import annotations

from dataclasses import dataclass, field

from aegiskv.cluster.seen_members import SeenMembers


@dataclass
class Member:
    node_id: str
    address: tuple[str, int]
    meta: dict[str, str] = field(default_factory=dict)


def test_a_new_id_at_an_address_replaces_the_old_one() -> None:
    seen = SeenMembers()
    seen.note(Member("a", ("10.0.0.1", 7946)))
    seen.note(Member("b", ("10.0.0.2", 7946)))
    for restart in range(100):  # a node restarted without its data directory, a new id each time
        seen.note(Member(f"a-{restart}", ("10.0.0.1", 7946)))
    assert sorted(seen.as_dict()) == ["a-99", "b"]


def test_an_update_keeps_one_entry_with_the_latest_view() -> None:
    seen = SeenMembers()
    seen.note(Member("a", ("10.0.0.1", 7946)))
    seen.note(Member("a", ("10.0.0.1", 7946), {"lead": "x"}))
    assert len(seen) == 1
    assert seen.as_dict()["a"].meta == {"lead": "x"}


def test_past_the_limit_the_longest_unchanged_go_first() -> None:
    seen = SeenMembers(limit=3)
    for index in range(3):
        seen.note(Member(str(index), ("10.0.0.1", 7000 + index)))
    seen.note(Member("0", ("10.0.0.1", 7000)))  # changed again: now the newest
    seen.note(Member("3", ("10.0.0.1", 7003)))
    assert sorted(seen.as_dict()) == ["0", "2", "3"]
    seen.note(Member("1-again", ("10.0.0.1", 7001)))  # its old address is free to take
    assert sorted(seen.as_dict()) == ["0", "1-again", "3"]
