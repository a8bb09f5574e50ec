"""Smoke tests with Redis's own command-line tools against the RESP port.

redis-cli and redis-benchmark are C clients with their own expectations (redis-cli --pipe ends
with an ECHO it must see back; redis-benchmark asks CONFIG GET before it starts); if they work,
the everyday operator tooling works. Skipped when the tools are not installed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from aegiskv.backends.memory import entry_cost
from aegiskv.protocols.resp.encoder import encode_command
from aegiskv.testing.localnode import LocalNode
from tests.wire import resp_address_of

REDIS_CLI = shutil.which("redis-cli")
REDIS_BENCHMARK = shutil.which("redis-benchmark")

pytestmark = pytest.mark.skipif(REDIS_CLI is None, reason="redis-cli is not installed")


@pytest.fixture(scope="module")
def aegis(tmp_path_factory) -> Iterator[LocalNode]:
    node = LocalNode(str(tmp_path_factory.mktemp("aegis-cli")))
    yield node
    node.stop()


def tool(program: str | None, node: LocalNode, *args: str, stdin: bytes | None = None, returncode: int = 0) -> bytes:
    """Run a tool against the node's RESP port; its standard output and standard error."""
    assert program is not None
    host, port = resp_address_of(node)
    result = subprocess.run(
        [program, "-h", host, "-p", str(port), *args], input=stdin, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == returncode, (args, result.stdout, result.stderr)
    return result.stdout + result.stderr


def cli(node: LocalNode, *args: str, stdin: bytes | None = None, returncode: int = 0) -> bytes:
    return tool(REDIS_CLI, node, *args, stdin=stdin, returncode=returncode)


def test_set_get(aegis: LocalNode) -> None:
    assert cli(aegis, "set", "cli:k", "hello world") == b"OK\n"
    assert cli(aegis, "get", "cli:k") == b"hello world\n"
    assert cli(aegis, "--no-raw", "get", "cli:missing") == b"(nil)\n"
    assert cli(aegis, "-x", "set", "cli:stdin", stdin=b"from\r\nstdin") == b"OK\n"
    assert cli(aegis, "strlen", "cli:stdin") == b"11\n"
    assert cli(aegis, "del", "cli:k", "cli:stdin", "cli:missing") == b"2\n"


def test_errors_are_shown(aegis: LocalNode) -> None:
    assert cli(aegis, "--no-raw", "foo", "a") == b"(error) ERR unknown command 'foo', with args beginning with: 'a' \n"
    assert cli(aegis, "--no-raw", "incr", "cli:k", "x") == (
        b"(error) ERR wrong number of arguments for 'incr' command\n"
    )


def test_repeat(aegis: LocalNode) -> None:
    cli(aegis, "del", "cli:counter")
    assert cli(aegis, "-r", "5", "incr", "cli:counter") == b"1\n2\n3\n4\n5\n"
    assert cli(aegis, "get", "cli:counter") == b"5\n"


def test_resp3(aegis: LocalNode) -> None:
    # -3 makes redis-cli send HELLO 3 and read RESP3 replies (a null is printed as an empty line).
    assert cli(aegis, "-3", "--no-raw", "get", "cli:missing") == b"(nil)\n"
    assert b"proto 3" in cli(aegis, "-3", "hello", "3")


def test_pipe_mass_insertion(aegis: LocalNode) -> None:
    # The documented way to load data: a file of RESP commands piped through redis-cli --pipe.
    commands = [encode_command(b"SET", b"mass:%d" % index, b"value\r\n%d" % index) for index in range(5000)]
    commands.append(encode_command(b"INCR", b"mass:0"))  # one error: shown, counted, exit status 1
    output = cli(aegis, "--pipe", stdin=b"".join(commands), returncode=1)
    assert b"errors: 1, replies: 5001" in output
    assert b"ERR value is not an integer or out of range" in output
    assert cli(aegis, "get", "mass:4999") == b"value\r\n4999\n"
    assert len(cli(aegis, "--scan", "--pattern", "mass:*").split()) == 5000


def test_info(aegis: LocalNode) -> None:
    cli(aegis, "set", "cli:info", "v")
    server = cli(aegis, "info", "server").decode()
    assert server.startswith("# Server\r\n")
    assert "redis_version:" in server
    assert "# Memory" not in server
    keyspace = cli(aegis, "info", "keyspace").decode()
    assert keyspace.startswith("# Keyspace\r\ndb0:keys=")


def test_scan_pattern(aegis: LocalNode) -> None:
    users = {f"user:{index}" for index in range(300)}
    commands = [encode_command(b"SET", key.encode(), b"v") for key in users]
    commands += [encode_command(b"SET", b"session:%d" % index, b"v") for index in range(100)]
    assert b"errors: 0" in cli(aegis, "--pipe", stdin=b"".join(commands))
    found = cli(aegis, "--scan", "--pattern", "user:*").decode().split()
    assert sorted(found) == sorted(users)  # every matching key, each once (no key changed meanwhile)
    assert set(cli(aegis, "--scan", "--pattern", "user:1?").decode().split()) == {f"user:1{d}" for d in range(10)}


def test_bigkeys_and_memkeys(aegis: LocalNode) -> None:
    # A value larger than any other test's: both reports must name it as the biggest string.
    assert cli(aegis, "-x", "SET", "cli:biggest", stdin=b"x" * 300_000) == b"OK\n"  # too long for argv
    assert b"Biggest string found '\"cli:biggest\"' has 300000 bytes" in cli(aegis, "--bigkeys")
    # --memkeys reports MEMORY USAGE's figure: the charge of the value's growable buffer, at least
    # what a bytes value would cost (tests/test_append_in_place.py checks the figure itself).
    charged = int(cli(aegis, "MEMORY", "USAGE", "cli:biggest"))
    assert charged >= entry_cost(len(b"cli:biggest"), 300_000)
    assert f"Biggest string found '\"cli:biggest\"' has {charged} bytes".encode() in cli(aegis, "--memkeys")


@pytest.mark.skipif(REDIS_BENCHMARK is None, reason="redis-benchmark is not installed")
def test_benchmark(aegis: LocalNode) -> None:
    output = tool(REDIS_BENCHMARK, aegis, "-t", "set,get", "-n", "2000", "-q").decode()
    # -q prints one "NAME: N requests per second" line per test once it is done (after \r progress).
    finished = [line.rsplit("\r", 1)[-1] for line in output.splitlines() if "requests per second" in line]
    assert [line.split(":")[0] for line in finished] == ["SET", "GET"]
    assert all(float(line.split()[1]) > 0 for line in finished)
    assert cli(aegis, "exists", "key:__rand_int__") == b"1\n"  # redis-benchmark's key
