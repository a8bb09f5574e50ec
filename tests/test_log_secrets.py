"""Logs without secrets, against real ``aegis`` processes.

Two nodes share an auth token and a gossip secret; the first also joins
through a seed that is down (a bound TCP port nobody listens on, so every
attempt is refused) and serves TLS. The test then does what a hostile or
broken network does (bad native and RESP frames, a failed TLS handshake, a
wrong AUTH token, gossip datagrams and a state exchange sealed with the wrong
secret, a peer that dies) and writes keys and values only this run knows. Every
distinctive string is random, so finding one in the log means it came from
this run. The log must not hold any of them, must not hold a traceback (none of
this is a bug, and a traceback with loguru's ``diagnose`` prints every local
variable), and the down seed must cost a bounded number of lines, not one per
retry.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import secrets
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import trustme
from loguru import logger

from aegiskv.client import Client, Config
from aegiskv.client.errors import TryAgainError
from aegiskv.cluster.peer_wire import Kind
from aegiskv.cluster.peer_wire import frame as peer_frame
from aegiskv.cluster.wire import Envelope
from aegiskv.protocols.native import codec as native
from aegiskv.protocols.native.codec import Opcode
from aegiskv.server import logs
from aegiskv.testing.localnode import LocalNode
from tests.wire import resp_address_of, wait_until

# Lines loguru's ``diagnose`` draws under a traceback's source lines to show the locals.
_LOCALS_MARK = re.compile(r"^\s*[│└]")


@dataclass(frozen=True)
class Strings:
    """What must never be logged, each a random string of its own."""

    token: str
    wrong_token: str
    gossip_secret: str
    wrong_secret: str
    key: str
    value: str
    bad_frame: str

    def all(self) -> dict[str, str]:
        return dict(vars(self))


def _strings() -> Strings:
    def make(kind: str) -> str:
        return f"{kind}{secrets.token_hex(10)}"

    return Strings(
        token=make("tok"),
        wrong_token=make("wrongtok"),
        gossip_secret=make("gossipsecret"),
        wrong_secret=make("wrongsecret"),
        key=make("key"),
        value=make("value"),
        bad_frame=make("frame"),
    )


@pytest.fixture
def pki(tmp_path: Path) -> tuple[str, str, str]:
    ca = trustme.CA()
    ca_file, cert, key = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return str(ca_file), str(cert), str(key)


@contextlib.contextmanager
def _refusing_port() -> Iterator[int]:
    """A loopback TCP port that is bound but not listening: every connect is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _tls_socket(address: tuple[str, int], context: ssl.SSLContext) -> ssl.SSLSocket:
    return context.wrap_socket(socket.create_connection(address, timeout=5), server_hostname="127.0.0.1")


def _send_and_drain(sock: socket.socket, data: bytes) -> None:
    """Send ``data`` and read until the server closes (or stays silent a moment)."""
    with contextlib.suppress(OSError):
        sock.sendall(data)
        sock.settimeout(2)
        while sock.recv(65536):
            pass
    sock.close()


def _gossip_info(node: LocalNode, token: str) -> dict[str, object]:
    config = Config(seeds=[node.address_text], auth_token=token, cluster_routing=False)
    with Client(config) as client:
        return client.info("cluster")["cluster"]


def _once_served(action: Callable[[], object]) -> bool:
    """Run ``action``; False while the node still elects its first primaries (TRYAGAIN)."""
    try:
        action()
    except (redis.exceptions.TryAgainError, TryAgainError):
        return False
    return True


def _assert_clean(log: str, strings: Strings) -> None:
    for name, text in strings.all().items():
        assert text not in log, f"the {name} reached the log:\n{log}"
    assert "Traceback" not in log, f"an expected error logged a traceback:\n{log}"
    marks = [line for line in log.splitlines() if _LOCALS_MARK.match(line)]
    assert not marks, "a traceback printed local variables:\n" + "\n".join(marks)


def test_hostile_traffic_and_down_peers_leave_no_secret_in_the_log(start_node, pki) -> None:
    ca, cert, key = pki
    strings = _strings()
    common = ["--auth-token", strings.token, "--gossip-secret", strings.gossip_secret, "--log-level", "debug"]
    tls = ["--tls-cert", cert, "--tls-key", key]
    context = ssl.create_default_context(cafile=ca)
    with _refusing_port() as down_port:
        # A node whose only seed is down: it retries the join for as long as it runs.
        seeker = start_node("--node-id", "seeker", "--seeds", f"127.0.0.1:{down_port}", *common)
        first = start_node("--node-id", "first", "--wal", "write", *common, *tls)
        assert first.addresses.get("gossip") and first.addresses.get("cluster")
        gossip = first.addresses["gossip"]
        # Distinctive writes, through RESP and the native client.
        with redis.Redis(
            *resp_address_of(first), password=strings.token, ssl=True, ssl_ca_certs=ca, socket_timeout=5
        ) as connection:
            wait_until(lambda: _once_served(lambda: connection.set(strings.key, strings.value)), timeout=30)
            assert connection.get(strings.key) == strings.value.encode()
            with pytest.raises(redis.ResponseError):
                connection.incr(strings.key)  # a command error about that key
        with Client(Config(seeds=[first.address_text], tls_ca=ca, auth_token=strings.token)) as client:
            wait_until(lambda: _once_served(lambda: client.set(strings.key.encode() + b"-n", strings.value.encode())))

        # A second node joins: the peer links and the gossip between the two carry the secret.
        second = start_node("--node-id", "second", "--seeds", f"127.0.0.1:{gossip[1]}", *common, *tls)
        first.wait_for_log(r"cluster link to second is up", timeout=30)

        # A wrong AUTH token on both protocols.
        with (
            redis.Redis(
                *resp_address_of(first), password=strings.wrong_token, ssl=True, ssl_ca_certs=ca, socket_timeout=5
            ) as connection,
            pytest.raises(redis.AuthenticationError),
        ):
            connection.ping()
        with _tls_socket(first.address, context) as raw:
            raw.sendall(native.encode_frame(Opcode.AUTH, 1, items=[(strings.wrong_token.encode(), b"")]))
            assert strings.wrong_token.encode() not in raw.recv(65536)  # the refusal, not an echo

        # Bad frames: RESP with the key in it, native garbage with it too.
        for bad_resp in (f"*1\r\n{strings.bad_frame}\r\n", f"*x{strings.bad_frame}\r\n"):
            _send_and_drain(_tls_socket(first.resp_address, context), bad_resp.encode())
        _send_and_drain(_tls_socket(first.address, context), b"\xff" * 8 + strings.bad_frame.encode() * 20)

        # A client that speaks plain text to a TLS port: a failed handshake.
        _send_and_drain(
            socket.create_connection(first.address, timeout=5), f"GET /{strings.bad_frame}\r\n\r\n".encode()
        )

        # Gossip sealed with the wrong secret: datagrams, and a state exchange over TCP.
        forged = Envelope(strings.wrong_secret.encode()).seal(
            json.dumps({"t": "ping", "from": strings.key, "secret": strings.gossip_secret}).encode()
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for _ in range(20):
                udp.sendto(forged, gossip)
        with socket.create_connection(gossip, timeout=5) as exchange:
            # The frame header is checked before the frame: a forged one closes the connection.
            header = Envelope(strings.wrong_secret.encode()).seal_frame_header(len(forged))
            _send_and_drain(exchange, header + forged)

        # A stranger on the cluster port: a malformed HELLO that carries the key.
        hello = peer_frame(Kind.HELLO, b"\x01" + strings.bad_frame.encode() * 4)
        _send_and_drain(_tls_socket(first.addresses["cluster"], context), hello)
        first.wait_for_log(r"cluster link with .* closed: ")

        # A peer that dies: the first node's link and probes to it fail from now on.
        second.kill()
        first.wait_for_log(r"cannot reach second for a cluster link", timeout=30)

        # The down seed: several refused attempts, counted by the node itself.
        wait_until(
            lambda: int(str(_gossip_info(seeker, strings.token).get("aegis_gossip_exchange_failures", 0))) >= 4,
            timeout=60,
            what="four refused joins through the down seed",
        )
        assert first.stop() == 0
        assert seeker.stop() == 0
    log = "\n".join(node.log_text() for node in (seeker, first, second))
    _assert_clean(log, strings)
    seed_lines = [line for line in seeker.lines if f":{down_port}" in line]
    assert 1 <= len(seed_lines) <= 2, "the down seed logged once per retry:\n" + "\n".join(seed_lines)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_an_unexpected_exception_logs_its_traceback_without_locals(monkeypatch, log_format: str) -> None:
    """Real bugs keep their traceback; no sink prints the frames' local variables."""
    secret = f"local{secrets.token_hex(10)}"
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)  # the daemon's sinks write to sys.stderr
    try:
        logs.setup_logging("info", log_format)

        def failing(argument: str) -> None:
            held = argument  # a local in the failing frame
            raise RuntimeError("boom " + str(len(held)))

        try:
            failing(secret)
        except RuntimeError:
            logger.exception("a bug")
        logger.complete()
    finally:
        logger.remove()
        assert sys.__stderr__ is not None
        logger.add(sys.__stderr__)  # no sink on the captured stream outlives the test
    output = stream.getvalue()
    if log_format == "json":
        output = "\n".join(json.loads(line)["text"] for line in output.splitlines())
    assert "RuntimeError: boom" in output
    assert "Traceback" in output
    assert secret not in output
    assert not [line for line in output.splitlines() if _LOCALS_MARK.match(line)]


@pytest.mark.needs_root
def test_a_full_disk_logs_one_line_and_no_data(start_node, tmp_path: Path) -> None:
    """A write-ahead log on a full file system: refused writes, the failure said once, no keys or values."""
    strings = _strings()
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], check=True)
    try:
        node = start_node(
            "--wal",
            "write",
            "--auth-token",
            strings.token,
            "--log-level",
            "debug",
            data_dir=str(mount_point / "d"),
            gossip=None,
        )
        refused = 0
        with redis.Redis(*resp_address_of(node), password=strings.token, socket_timeout=5) as connection:
            for index in range(400):  # 400 x 10 KB: five times what the file system holds
                try:
                    connection.set(f"{strings.key}{index}", strings.value * 500)
                except redis.ResponseError:
                    refused += 1
            node.wait_for_log(r"write-ahead log failed: No space left on device")
            node.wait_for_log(r"write-ahead log still cannot be written")  # a repair was tried, and failed
        assert refused > 0
        assert node.stop() == 0
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)
    log = node.log_text()
    _assert_clean(log, strings)
    # Said once when it began; the repairs retried every half second are at most a counted line.
    began = [line for line in node.lines if "write-ahead log failed" in line]
    retried = [line for line in node.lines if "write-ahead log still cannot be written" in line]
    assert len(began) == 1 and len(retried) <= 1, "\n".join(began + retried)
