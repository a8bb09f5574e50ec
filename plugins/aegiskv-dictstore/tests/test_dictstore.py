"""The example backend: AegisKV's conformance suite, its entry point, and a real node storing in it.

Like any third-party plugin, it imports only aegiskv.plugin_api and aegiskv.testing
(and the client, to talk to the node).
"""

from __future__ import annotations

import os
import subprocess
import sys

from aegiskv_dictstore import DictStoreBackend

from aegiskv.client import Client, Config
from aegiskv.plugin_api import BACKENDS_GROUP, Backend, BackendOptions, Clock
from aegiskv.testing.backend_contract import BackendContract
from aegiskv.testing.localnode import LocalNode

# The installed aegiskv in every child process, not a source directory that is
# the working directory; and third-party plugins found, this one included.
CHILD_ENV = {**os.environ, "AEGIS_DISABLE_PLUGIN_AUTOLOAD": "0", "PYTHONSAFEPATH": "1"}


class TestDictStoreContract(BackendContract):
    def make_backend(self, options: BackendOptions, clock: Clock) -> Backend:
        return DictStoreBackend(options, clock)


def test_least_recently_used_goes_first() -> None:
    backend = DictStoreBackend(BackendOptions(max_memory_bytes=3 * (1 + 100 + 96)))
    for key in (b"a", b"b", b"c"):
        backend.put(key, b"v" * 100)
    backend.get(b"a")  # b is now the oldest
    backend.put(b"d", b"v" * 100)
    assert sorted(backend.keys()) == [b"a", b"c", b"d"]
    assert backend.stats().evictions == 1


def test_found_through_its_entry_point() -> None:
    # `aegis plugins` loads every plugin and says whether it is usable.
    listing = subprocess.run(
        [sys.executable, "-m", "aegiskv", "plugins"], env=CHILD_ENV, capture_output=True, text=True, check=True
    ).stdout
    [line] = [line for line in listing.splitlines() if line.startswith(f"{BACKENDS_GROUP}\tdictstore\t")]
    assert "aegiskv-dictstore" in line and line.endswith("\tok"), line


def test_a_node_started_with_it_stores_in_it(tmp_path) -> None:
    # backend = "dictstore" in the TOML file does the same.
    env = {**CHILD_ENV, "AEGIS_BACKEND": "dictstore"}
    node = LocalNode(str(tmp_path / "node"), ["--node-id", "ds"], env=env)
    try:
        with Client(Config(seeds=[node.address_text])) as client:
            assert client.info("server")["server"]["aegis_backend"] == "dictstore"
            first = client.set("k", b"v1")
            assert client.set("k", b"v2") > first  # versions come from the backend
            assert client.get("k") == b"v2"
            assert client.expire("k", 3_600)
            ttl = client.get_with_ttl("k").ttl
            assert ttl is not None and ttl.total_seconds() > 0
            assert client.delete("k") is True
            assert client.delete("k") is False
            client.mset({"a": b"1", "b": b"2"})
            assert client.mget(["a", "b", "missing"]) == [b"1", b"2", None]
    finally:
        assert node.stop() == 0
