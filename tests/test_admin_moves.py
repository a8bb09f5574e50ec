"""``aegis status`` and ``aegis shards`` show moves in flight, and nothing of them when there are none."""

from __future__ import annotations

from typing import Any

import pytest

from aegiskv.admin import commands

COPYING = "shard=12,to=n3,state=copying,keys=300,keys_total=1200,bytes=33000"
QUEUED = "shard=4,to=n3,state=queued,keys=0,keys_total=0,bytes=0"


def status(moves: list[dict[str, Any]]) -> dict[str, Any]:
    node = {
        "node": "n0",
        "state": "up",
        "address": "127.0.0.1:7700",
        "shards_primary": 8,
        "shards_follower": 8,
        "keys": 10,
        "used_memory": 1 << 20,
        "maxmemory": None,
        "ops_per_sec": 1.0,
        "replication_lag_changes": 0,
        "error": None,
    }
    return {"source": "n0", "epoch": 7, "shards": 16, "shards_without_primary": 0, "nodes": [node], "moves": moves}


def test_the_copies_a_node_reports_in_info_are_its_moves() -> None:
    replication = {"aegis_move_out_0": COPYING, "aegis_move_out_1": QUEUED, "aegis_links_up": 2}
    assert commands.moves_of("n0", replication) == [
        {"shard": 12, "from": "n0", "to": "n3", "state": "copying", "keys": 300, "keys_total": 1200, "bytes": 33000},
        {"shard": 4, "from": "n0", "to": "n3", "state": "queued", "keys": 0, "keys_total": 0, "bytes": 0},
    ]
    # A line of another shape (a node of another version) is left out, not a crash.
    assert commands.moves_of("n0", {"aegis_move_out_0": "shard=x,to=n3"}) == []


def test_status_lists_moves_in_flight_with_their_progress(capsys: pytest.CaptureFixture[str]) -> None:
    moves = commands.moves_of("n0", {"aegis_move_out_0": COPYING, "aegis_move_out_1": QUEUED})
    commands.print_status(status(moves))
    out = capsys.readouterr().out
    assert "2 moves in flight" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["12"], ["4"])}
    assert rows["12"][:5] == ["12", "n0", "n3", "copying", "300/1200"]
    assert "(25%)" in rows["12"]
    assert rows["4"][:5] == ["4", "n0", "n3", "queued", "-"]


def test_status_without_moves_says_nothing_of_them(capsys: pytest.CaptureFixture[str]) -> None:
    commands.print_status(status([]))
    out = capsys.readouterr().out
    assert "moves" not in out and "n0" in out


def shards(learners: list[str], leaving: list[str]) -> dict[str, Any]:
    rows = [
        {
            "shard": 0,
            "slots": [0, 8191],
            "primary": "n0",
            "followers": ["n1"],
            "learners": learners,
            "leaving": leaving,
        },
        {"shard": 1, "slots": [8192, 16383], "primary": "n1", "followers": ["n0"], "learners": [], "leaving": []},
    ]
    return {"source": "n0", "epoch": 3, "shards": rows}


def test_shards_shows_who_copies_and_who_hands_over_only_while_a_move_is_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    commands.print_shards(shards(["n2"], ["n1"]))
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["shard", "slots", "primary", "followers", "copying", "to", "leaving"]
    assert lines[2].split() == ["0", "0-8191", "n0", "n1", "n2", "n1"]
    commands.print_shards(shards([], []))
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["shard", "slots", "primary", "followers"]
