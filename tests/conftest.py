"""Shared fixtures: real ``aegis`` processes on port 0, files under tmp_path."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from aegiskv.client import Client, Config
from aegiskv.localnode import LocalNode

StartNode = Callable[..., LocalNode]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs_root: mounts file systems (tmpfs, bind mounts); skips without root or mount rights"
    )


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
