"""The example plugin: AegisKV's placement checks, minimal movement, and a real node using it."""

from __future__ import annotations

import os

from aegiskv_rendezvous import RendezvousPlacement
from hypothesis import given, settings
from hypothesis import strategies as st

from aegiskv.client import Client, Config
from aegiskv.cluster.interfaces import PlacementOptions
from aegiskv.server import plugins
from aegiskv.testing.localnode import LocalNode
from aegiskv.testing.placement_checks import check_placement

members = st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=16, unique=True)


def test_passes_aegiskv_placement_checks() -> None:
    check_placement(RendezvousPlacement)


@settings(max_examples=50, deadline=None)
@given(members=members, joiner=st.text(min_size=11, max_size=15), replication_factor=st.integers(1, 4))
def test_a_join_moves_replicas_only_to_the_joiner(members, joiner, replication_factor) -> None:
    placement = RendezvousPlacement()
    before = placement.assign(members, 64, replication_factor)
    after = placement.assign([*members, joiner], 64, replication_factor)
    for old, new in zip(before, after):
        assert set(new) - set(old) <= {joiner}


def test_found_through_its_entry_point(monkeypatch) -> None:
    monkeypatch.setenv("AEGIS_DISABLE_PLUGIN_AUTOLOAD", "0")
    found, placement = plugins.load_placement("rendezvous", PlacementOptions())
    assert found.distribution == "aegiskv-rendezvous"
    assert isinstance(placement, RendezvousPlacement)


def test_a_node_configured_with_it_serves_its_map(tmp_path) -> None:
    env = {**os.environ, "AEGIS_DISABLE_PLUGIN_AUTOLOAD": "0", "AEGIS_PLACEMENT": "rendezvous"}
    node = LocalNode(str(tmp_path / "node"), ["--node-id", "rv", "--shards", "8"], env=env)
    try:
        with Client(Config(seeds=[node.address_text])) as client:
            topology = client.topology()
            assert [shard["replicas"] for shard in topology["shards"]] == [["rv"]] * 8
            client.set("k", b"v")
            assert client.get("k") == b"v"
    finally:
        assert node.stop() == 0
