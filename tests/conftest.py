"""Shared fixtures: real ``aegis`` processes on port 0, files under tmp_path."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import pytest

from aegiskv.client import Client, Config
from aegiskv.testing.localnode import LocalNode

# The conformance suites in aegiskv.testing assert as tests do: pytest's messages for them.
pytest.register_assert_rewrite("aegiskv.testing.backend_contract", "aegiskv.testing.placement_contract")

StartNode = Callable[..., LocalNode]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``needs_root`` tests skip themselves when the suite does not run as root."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (mounts, network namespaces, nftables)")
    for item in items:
        if item.get_closest_marker("needs_root") is not None:
            item.add_marker(skip)


@pytest.fixture
def start_node(tmp_path) -> Iterator[StartNode]:
    """Factory: ``start_node("--max-memory", "5")`` starts a node and stops it after the test."""
    nodes: list[LocalNode] = []
    counter = itertools.count()

    def start(*args: str, **kwargs) -> LocalNode:
        data_dir = kwargs.pop("data_dir", None) or str(tmp_path / f"node{next(counter)}")
        node = LocalNode(data_dir, args, **kwargs)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        if node.process.poll() is None:
            node.kill()


@pytest.fixture
def node(start_node: StartNode) -> LocalNode:
    return start_node()


@pytest.fixture
def client(node: LocalNode) -> Iterator[Client]:
    with Client(Config(seeds=[node.address_text])) as connected:
        yield connected
