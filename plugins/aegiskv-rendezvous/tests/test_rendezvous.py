"""The example plugin: AegisKV's placement conformance suite, minimal movement, and a real node using it.

Like any third-party plugin, it imports only aegiskv.plugin_api and aegiskv.testing
(and the client, to talk to the node).
"""

from __future__ import annotations

import os
import subprocess
import sys

from aegiskv_rendezvous import RendezvousPlacement
from hypothesis import given, settings
from hypothesis import strategies as st

from aegiskv.client import Client, Config
from aegiskv.plugin_api import PLACEMENT_GROUP, PlacementOptions
from aegiskv.testing.localnode import LocalNode
from aegiskv.testing.placement_contract import PlacementContract

members = st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=16, unique=True)


class TestRendezvousContract(PlacementContract):
    def make_placement(self, options: PlacementOptions) -> RendezvousPlacement:
        return RendezvousPlacement(options)


@settings(max_examples=50, deadline=None)
@given(members=members, joiner=st.text(min_size=11, max_size=15), replication_factor=st.integers(1, 4))
def test_a_join_moves_replicas_only_to_the_joiner(members, joiner, replication_factor) -> None:
    placement = RendezvousPlacement()
    before = placement.assign(members, 64, replication_factor)
    after = placement.assign([*members, joiner], 64, replication_factor)
    for old, new in zip(before, after):
        assert set(new) - set(old) <= {joiner}


def test_found_through_its_entry_point() -> None:
    # `aegis plugins` loads every plugin and says whether it is usable.
    # PYTHONSAFEPATH: the installed aegiskv, not a source directory that is the working directory.
    env = {**os.environ, "AEGIS_DISABLE_PLUGIN_AUTOLOAD": "0", "PYTHONSAFEPATH": "1"}
    listing = subprocess.run(
        [sys.executable, "-m", "aegiskv", "plugins"], env=env, capture_output=True, text=True, check=True
    ).stdout
    [line] = [line for line in listing.splitlines() if line.startswith(f"{PLACEMENT_GROUP}\trendezvous\t")]
    assert "aegiskv-rendezvous" in line and line.endswith("\tok"), line


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
