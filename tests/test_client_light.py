"""The client runs without the server's dependencies: a program that only talks to AegisKV
needs none of loguru, lz4, crcmod, sortedcontainers, prometheus-client, ... (docs/client.md:
``pip install --no-deps aegiskv`` is the client-only install, and what it weighs).

A child interpreter refuses to import every distribution the installed package requires, then
uses both clients against a real node, and ``aegis status`` (aegiskv.admin, plain text without
rich). The same child then runs ``aegis --version``, which must refuse with one line naming what
is missing: a refusal that did not hold would let the test pass whatever the client imported.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from aegiskv.testing.localnode import LocalNode

CHILD = """
import asyncio, importlib.abc, sys

BLOCKED = set(sys.argv[1].split(","))


class RefuseServerDependencies(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (refused: a server dependency)", name=name)
        return None


sys.meta_path.insert(0, RefuseServerDependencies())

from aegiskv.client import AsyncClient, Client, Config

config = Config(seeds=[sys.argv[2]])
with Client(config) as cache:
    cache.set("light:threaded", b"1")
    assert cache.get("light:threaded") == b"1"
    assert cache.mget(["light:threaded", "light:missing"]) == [b"1", None]


async def main():
    async with AsyncClient(config) as cache:
        await cache.set("light:async", b"2", ttl=60)
        assert await cache.get("light:async") == b"2"


asyncio.run(main())

# The admin commands too: `aegis status` on a terminal, where rich (a server dependency) would
# draw the table, prints plain text instead.
import contextlib, io


class Terminal(io.StringIO):
    def isatty(self):
        return True


from aegiskv.admin.main import main as aegis

shown = Terminal()
with contextlib.redirect_stdout(shown):
    assert aegis(["status", "--seed", sys.argv[2], "--interval", "0.1"]) == 0
assert shown.getvalue().splitlines()[1].split()[:2] == ["node", "state"], shown.getvalue()
loaded = sorted({name.partition(".")[0] for name in sys.modules} & BLOCKED)
assert not loaded, loaded
print("client ok")
from aegiskv.server.cli import main

sys.exit(main(["--version"]))
"""


def server_dependency_modules() -> set[str]:
    """Top-level import names of the distributions the installed aegiskv requires (no extras)."""
    required = {
        re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in metadata.requires("aegiskv") or []
        if "extra ==" not in requirement
    }
    modules = {
        module
        for module, distributions in metadata.packages_distributions().items()
        if any(distribution.lower().replace("_", "-") in required for distribution in distributions)
    }
    # Python 3.10's packages_distributions reads top_level.txt only, which wheels built by other
    # tools than setuptools (rich's, by poetry) lack: there, the names come from the files installed.
    for name in required:
        try:
            files = metadata.distribution(name).files or []
        except metadata.PackageNotFoundError:
            continue  # a requirement whose marker does not apply here (tomli on 3.11+)
        modules.update(
            file.parts[0] if len(file.parts) > 1 else file.stem
            for file in files
            if file.suffix == ".py" and not file.parts[0].endswith((".dist-info", ".data"))
        )
    return modules


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNode]:
    node = LocalNode(str(tmp_path_factory.mktemp("light-client-node")))
    yield node
    assert node.stop() == 0


def test_the_client_needs_none_of_the_servers_dependencies(node: LocalNode, tmp_path: Path) -> None:
    blocked = server_dependency_modules()
    assert {"loguru", "lz4", "crcmod", "sortedcontainers", "prometheus_client", "rich"} <= blocked
    result = subprocess.run(
        [sys.executable, "-c", CHILD, ",".join(sorted(blocked)), node.address_text],
        cwd=tmp_path,  # the installed package, not a source tree in the working directory
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout == "client ok\n", result.stdout + result.stderr
    # `aegis` in a client-only install: one line naming what is missing, exit code 2.
    assert result.returncode == 2, result.stderr
    assert re.fullmatch(r"aegis: the server needs \w+, which is not installed .*\n", result.stderr), result.stderr
