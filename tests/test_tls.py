"""TLS on every client port, against real ``aegis`` processes and real sockets.

Certificates are made at test time with trustme (nothing is committed): one CA
signs the server certificate (127.0.0.1 and localhost), a client certificate
and an expired client certificate; a second CA signs a client certificate the
server must not trust. Every refusal is checked from both sides: the bad peer
gets no application data, the server says why in its log (matched by the
peer's port, so it is that connection's failure), and a good client on the
same node keeps being served while it happens.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import trustme
from redis._parsers import _HiredisParser, _RESP2Parser
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

from aegiskv.client import Client, Config, ConnectionClosedError
from aegiskv.cluster.shard_map import Endpoint
from aegiskv.protocols.native import codec as native
from aegiskv.protocols.native.codec import Opcode
from aegiskv.server.dashboard.cluster import fetch_status
from aegiskv.testing.localnode import LocalNode
from tests.wire import resp_address_of, wait_until

MIB = 1024 * 1024
NATIVE_PING = native.encode_frame(Opcode.PING, 1)
RESP_PING = b"*1\r\n$4\r\nPING\r\n"


def _env(**settings: str) -> dict[str, str]:
    return {**os.environ, **{f"AEGIS_{name.upper()}": value for name, value in settings.items()}}


@dataclass(frozen=True)
class Pki:
    """File names of the test certificates (PEM)."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    expired_cert: str
    expired_key: str
    foreign_cert: str  # signed by a CA the server does not trust
    foreign_key: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    directory: Path = tmp_path_factory.mktemp("pki")
    ca, foreign_ca = trustme.CA(), trustme.CA()
    now = datetime.datetime.now(datetime.timezone.utc)

    def write(name: str, leaf: trustme.LeafCert) -> tuple[str, str]:
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        return str(cert), str(key)

    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server = write("server", ca.issue_cert("127.0.0.1", "localhost"))
    client = write("client", ca.issue_cert("client@aegis.test"))
    # Expired yesterday; valid in every other respect (same CA, good key).
    expired = write(
        "expired",
        ca.issue_cert(
            "expired@aegis.test",
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        ),
    )
    foreign = write("foreign", foreign_ca.issue_cert("foreign@aegis.test"))
    return Pki(str(directory / "ca.pem"), *server, *client, *expired, *foreign)


@pytest.fixture(scope="module")
def tls_node(pki: Pki, tmp_path_factory) -> Iterator[LocalNode]:
    """TLS with server authentication only, health over HTTPS too."""
    node = LocalNode(
        str(tmp_path_factory.mktemp("tls-node")),
        ["--tls-cert", pki.server_cert, "--tls-key", pki.server_key],
        env=_env(health_tls="true"),
    )
    yield node
    assert node.stop() == 0


@pytest.fixture(scope="module")
def mtls_node(pki: Pki, tmp_path_factory) -> Iterator[LocalNode]:
    """Mutual TLS; a short handshake timeout so the silent-client test takes about a second."""
    node = LocalNode(
        str(tmp_path_factory.mktemp("mtls-node")),
        ["--tls-cert", pki.server_cert, "--tls-key", pki.server_key, "--tls-ca", pki.ca],
        env=_env(tls_handshake_timeout="1s"),
    )
    yield node
    assert node.stop() == 0


def _mtls_config(node: LocalNode, pki: Pki, **extra) -> Config:
    return Config(seeds=[node.address_text], tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key, **extra)


def _client_context(pki: Pki, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca)
    if cert:
        context.load_cert_chain(cert, key)
    return context


@contextlib.contextmanager
def served_throughout(node: LocalNode, pki: Pki) -> Iterator[None]:
    """A good mutual-TLS client reading in a loop while the body misbehaves.

    It must see no error at all (no retries: ``max_retries=0``), and must
    complete further requests after the body is done, so a refusal that stalls
    or breaks the reactor fails the test.
    """
    client = Client(_mtls_config(node, pki, max_retries=0))
    client.set("good:key", "still served")
    completed: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                assert client.get("good:key") == b"still served"
            except BaseException as error:
                errors.append(error)
                return
            completed.append(time.monotonic())
            stop.wait(0.005)

    thread = threading.Thread(target=serve, name="good-client")
    thread.start()
    try:
        yield
        after = len(completed)
        wait_until(lambda: errors or len(completed) >= after + 3, timeout=5, what="the good client to be served")
    finally:
        stop.set()
        thread.join(5)
        client.close()
    assert not errors, errors
    assert not thread.is_alive()


def _tls_attempt(address: tuple[str, int], context: ssl.SSLContext, request: bytes) -> tuple[int, object]:
    """(our port, outcome) of one TLS client: the bytes of the server's reply, or the error that ended it.

    With TLS 1.3 the client finishes its side of the handshake before the
    server has checked the client certificate, so the refusal can show up at
    the first read instead of in ``wrap_socket``; both count.
    """
    sock = socket.create_connection(address, timeout=5)
    port = sock.getsockname()[1]
    try:
        with context.wrap_socket(sock, server_hostname=address[0]) as tls:
            tls.sendall(request)
            return port, tls.recv(65536)
    except (ssl.SSLError, OSError) as error:
        return port, error
    finally:
        sock.close()


def _handshake_failure_logged(node: LocalNode, port_name: str, peer_port: int, reason: str) -> str:
    return node.wait_for_log(rf"TLS handshake with \('127\.0\.0\.1', {peer_port}\) on {port_name} failed: .*{reason}")


# -- working TLS ----------------------------------------------------------------------------------


def test_native_client_with_tls_ca(tls_node: LocalNode, pki: Pki) -> None:
    with Client(Config(seeds=[tls_node.address_text], tls_ca=pki.ca)) as client:
        client.set("tls:small", "v")
        assert client.get("tls:small") == b"v"
        # Large replies take the reactor's multi-buffer TLS send path (above its 256 KiB join limit).
        values = {f"tls:big:{index}": os.urandom(300 * 1024 + index) for index in range(4)}
        client.mset(values)
        assert client.mget(list(values)) == list(values.values())
        big = os.urandom(2 * MIB)
        client.set("tls:2mib", big)
        assert client.get("tls:2mib") == big
    # The port really is TLS-only: a plaintext client of the same port gets nothing back.
    with (
        Client(Config(seeds=[tls_node.address_text], max_retries=0)) as plain,
        pytest.raises(ConnectionClosedError),
    ):
        plain.get("tls:small")


def test_native_client_with_its_own_ssl_context(tls_node: LocalNode, pki: Pki) -> None:
    context = _client_context(pki)
    with Client(Config(seeds=[tls_node.address_text], tls=context)) as client:
        client.set("tls:context", "ctx")
        assert client.get("tls:context") == b"ctx"
    # A context that does not trust our CA must refuse the server (the client checks too).
    with (
        Client(Config(seeds=[tls_node.address_text], tls=ssl.create_default_context(), max_retries=0)) as untrusting,
        pytest.raises(ConnectionClosedError, match="certificate verify failed"),
    ):
        untrusting.get("tls:context")


@pytest.mark.parametrize("hiredis", [False, True], ids=["redis-py pure-Python parser", "redis-py hiredis parser"])
def test_resp_port_with_redis_py(tls_node: LocalNode, pki: Pki, hiredis: bool) -> None:
    host, port = resp_address_of(tls_node)
    if hiredis:
        # The environment promises hiredis; without it this case would silently test nothing new.
        assert HIREDIS_AVAILABLE, "hiredis is expected to be installed"
        # The documented form; redis-py picks hiredis by itself when it is installed.
        connection = redis.Redis(host=host, port=port, ssl=True, ssl_ca_certs=pki.ca, socket_timeout=5)
    else:
        # What ssl=True builds, spelled out to force the pure-Python reply parser.
        pool = redis.ConnectionPool(
            connection_class=redis.SSLConnection,
            host=host,
            port=port,
            ssl_ca_certs=pki.ca,
            parser_class=_RESP2Parser,
            socket_timeout=5,
        )
        connection = redis.Redis(connection_pool=pool)
    with connection:
        borrowed = connection.connection_pool.get_connection()
        # redis-py may swap its RESP2 parser for the RESP3 sibling; what matters is hiredis or not.
        assert isinstance(borrowed._parser, _HiredisParser) == hiredis, borrowed._parser
        connection.connection_pool.release(borrowed)
        assert connection.ping() is True
        assert connection.set("resp:tls", "value") is True
        assert connection.get("resp:tls") == b"value"
        big = os.urandom(MIB)
        connection.set("resp:tls:big", big)
        assert connection.get("resp:tls:big") == big
        pipeline = connection.pipeline(transaction=False)
        for index in range(50):
            pipeline.set(f"resp:tls:{index}", index)
        pipeline.mget([f"resp:tls:{index}" for index in range(50)])
        results = pipeline.execute()
        assert results[-1] == [str(index).encode() for index in range(50)]
    # Without ssl=True the same port does not speak RESP.
    plain = redis.Redis(host=host, port=port, socket_timeout=5, retry=Retry(NoBackoff(), 0))
    with plain, pytest.raises(redis.ConnectionError):
        plain.ping()


def test_resp_port_with_mutual_tls(mtls_node: LocalNode, pki: Pki) -> None:
    host, port = resp_address_of(mtls_node)
    connection = redis.Redis(
        host=host,
        port=port,
        ssl=True,
        ssl_ca_certs=pki.ca,
        ssl_certfile=pki.client_cert,
        ssl_keyfile=pki.client_key,
        socket_timeout=5,
    )
    with connection:
        assert connection.set("resp:mtls", "m") is True
        assert connection.get("resp:mtls") == b"m"


def test_native_port_with_mutual_tls(mtls_node: LocalNode, pki: Pki) -> None:
    with Client(_mtls_config(mtls_node, pki)) as client:
        client.set("mtls:key", "m")
        assert client.get("mtls:key") == b"m"
    context = _client_context(pki, pki.client_cert, pki.client_key)
    with Client(Config(seeds=[mtls_node.address_text], tls=context)) as client:
        assert client.get("mtls:key") == b"m"


def test_health_over_https(tls_node: LocalNode, pki: Pki) -> None:
    assert tls_node.health_address is not None
    host, port = tls_node.health_address
    for path, body in (("/health", b"ok\n"), ("/ready", b"ready\n")):
        connection = http.client.HTTPSConnection(host, port, timeout=5, context=_client_context(pki))
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, body)
        finally:
            connection.close()
    connection = http.client.HTTPSConnection(host, port, timeout=5, context=_client_context(pki))
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        assert b"aegis_connections " in response.read()
    finally:
        connection.close()
    # Plain HTTP on the HTTPS port gets no HTTP answer.
    plain = http.client.HTTPConnection(host, port, timeout=5)
    try:
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            plain.request("GET", "/health")
            plain.getresponse()
    finally:
        plain.close()


def test_dashboard_status_fetched_over_https_as_peers_fetch_it(tls_node: LocalNode, pki: Pki) -> None:
    """With health_tls a node reads its peers' /status.json over HTTPS (aegiskv.server.dashboard.cluster)."""
    assert tls_node.health_address is not None
    endpoint = Endpoint(*tls_node.health_address)
    status = fetch_status(endpoint, {}, _client_context(pki), timeout=5)
    assert status["ready"] is True
    assert status["memory"]["limit"] > 0
    # Plain HTTP to the HTTPS port is an error the cluster view reports, not a hang or a crash.
    with pytest.raises((OSError, ValueError)):
        fetch_status(endpoint, {}, None, timeout=5)


# -- refusals ------------------------------------------------------------------------------------

PORTS = pytest.mark.parametrize("port_name", ["native", "resp"])


def _port(node: LocalNode, port_name: str) -> tuple[str, int]:
    address = node.address if port_name == "native" else node.resp_address
    assert address is not None
    return address


def _ping_for(port_name: str) -> bytes:
    return NATIVE_PING if port_name == "native" else RESP_PING


def _assert_refused(outcome: object) -> None:
    # An error, or a clean close with not one byte of application data.
    assert isinstance(outcome, (ssl.SSLError, OSError)) or outcome == b"", outcome


@PORTS
def test_plain_tcp_to_tls_port_gets_nothing_and_is_closed(mtls_node: LocalNode, pki: Pki, port_name: str) -> None:
    with served_throughout(mtls_node, pki):
        with socket.create_connection(_port(mtls_node, port_name), timeout=5) as sock:
            peer_port = sock.getsockname()[1]
            sock.sendall(_ping_for(port_name))
            try:
                received = sock.recv(65536)
            except ConnectionResetError:
                received = b""
        # No plaintext reply (not even an error in the protocol's own framing), just the close.
        assert received == b""
        _handshake_failure_logged(mtls_node, port_name, peer_port, "")


@PORTS
@pytest.mark.parametrize(
    "who, reason",
    [
        ("no certificate", "peer did not return a certificate"),
        ("foreign CA", "certificate verify failed"),
        ("expired", "certificate has expired"),
    ],
)
def test_bad_client_certificate_is_refused(
    mtls_node: LocalNode, pki: Pki, port_name: str, who: str, reason: str
) -> None:
    cert, key = {
        "no certificate": (None, None),
        "foreign CA": (pki.foreign_cert, pki.foreign_key),
        "expired": (pki.expired_cert, pki.expired_key),
    }[who]
    with served_throughout(mtls_node, pki):
        peer_port, outcome = _tls_attempt(
            _port(mtls_node, port_name), _client_context(pki, cert, key), _ping_for(port_name)
        )
        _assert_refused(outcome)
        # The reason is OpenSSL's, from the server's side of this very connection.
        _handshake_failure_logged(mtls_node, port_name, peer_port, reason)


def test_tls_1_1_client_is_refused(mtls_node: LocalNode, pki: Pki) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki.ca)
    context.load_cert_chain(pki.client_cert, pki.client_key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1_1 is a deprecated name, on purpose
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    # OpenSSL 3 at its default security level has no cipher it will use with TLS 1.1
    # and would refuse locally before sending anything; level 0 makes it really offer
    # 1.1, so the server is what refuses. Some builds cannot offer it at all (no
    # TLS 1.1 compiled in, or a system policy that overrides this): then the
    # handshake still has to fail, only not because of the server.
    with contextlib.suppress(ssl.SSLError):
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with served_throughout(mtls_node, pki):
        peer_port, outcome = _tls_attempt(mtls_node.address, context, NATIVE_PING)
        _assert_refused(outcome)
        if isinstance(outcome, ssl.SSLError) and (outcome.reason or "").startswith("TLSV1_ALERT"):  # the server's alert
            assert outcome.reason == "TLSV1_ALERT_PROTOCOL_VERSION", outcome
            _handshake_failure_logged(mtls_node, "native", peer_port, "unsupported protocol")
        else:
            # Refused on our side before a ClientHello left: nothing reached the server's TLS layer.
            assert isinstance(outcome, ssl.SSLError), outcome
            assert re.search(r"NO_CIPHERS_AVAILABLE|NO_PROTOCOLS_AVAILABLE|UNSUPPORTED_PROTOCOL", str(outcome)), outcome


def test_client_that_never_sends_a_client_hello_is_closed(mtls_node: LocalNode, pki: Pki) -> None:
    # AEGIS_TLS_HANDSHAKE_TIMEOUT=1s; the reactor's sweep runs once a second, so
    # the close comes between 1 and about 2 seconds after connecting.
    with served_throughout(mtls_node, pki):
        silent = [socket.create_connection(_port(mtls_node, name), timeout=25) for name in ("native", "resp")]
        started = time.monotonic()
        try:
            for sock in silent:
                try:
                    assert sock.recv(1) == b""
                except ConnectionResetError:
                    pass
                elapsed = time.monotonic() - started
                # Never before the timeout; the upper bound, ten times the 2 s expected,
                # only catches a connection that is never closed.
                assert 0.95 <= elapsed < 20.0, elapsed
        finally:
            for sock in silent:
                sock.close()


def test_tls_port_past_max_connections_is_closed_without_plaintext(pki: Pki, start_node) -> None:
    # The refusal text of a plain port cannot be sent before a handshake (the peer would
    # read it as a broken TLS record), so on a TLS port the extra connection is just closed.
    node = start_node("--tls-cert", pki.server_cert, "--tls-key", pki.server_key, env=_env(max_connections="1"))
    with Client(Config(seeds=[node.address_text], tls_ca=pki.ca, max_conns=1)) as holder:
        holder.set("limit:tls", "v")
        with socket.create_connection(node.address, timeout=5) as extra:
            peer_port = extra.getsockname()[1]
            try:
                received = extra.recv(65536)
            except ConnectionResetError:
                received = b""
        assert received == b""
        node.wait_for_log(rf"refused native connection from \('127\.0\.0\.1', {peer_port}\): max number of clients")
        _, outcome = _tls_attempt(node.address, _client_context(pki), NATIVE_PING)
        _assert_refused(outcome)
        assert holder.get("limit:tls") == b"v"


# -- start-up errors -----------------------------------------------------------------------------

# Runs the daemon with an audit hook that prints every socket.bind on stdout,
# so "nothing was bound" is observed rather than inferred.
_AUDITED_AEGIS = (
    "import runpy, sys\n"
    "sys.addaudithook(lambda event, args: event == 'socket.bind' and print('BOUND', args[1], flush=True))\n"
    "sys.argv[0] = 'aegis'\n"
    "runpy.run_module('aegiskv', run_name='__main__', alter_sys=True)\n"
)


def _audited_command(data_dir: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        _AUDITED_AEGIS,
        "--bind",
        "127.0.0.1:0",
        "--resp-bind",
        "127.0.0.1:0",
        "--health-addr",
        "127.0.0.1:0",
        "--gossip",
        "127.0.0.1:0",
        "--cluster-bind",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
        *args,
    ]


def test_bind_audit_sees_a_normal_start(pki: Pki, tmp_path: Path) -> None:
    # The control for the start-up error tests: with good files the hook does report binds.
    process = subprocess.Popen(
        _audited_command(tmp_path / "data", "--tls-cert", pki.server_cert, "--tls-key", pki.server_key),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(log_format="text"),
    )
    try:
        assert process.stdout is not None
        seen = []
        for line in process.stdout:
            seen.append(line)
            if line.startswith("aegis ready"):
                break
        # native, RESP, health, and gossip's UDP and TCP sockets (gossip binds another pair when
        # the TCP twin of the UDP port the OS picked is taken).
        assert sum(line.startswith("BOUND") for line in seen) >= 5, seen
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0


@pytest.mark.parametrize(
    "case",
    ["missing cert file", "key does not match cert", "garbage CA file", "key without cert"],
)
def test_tls_startup_error_is_one_line_and_binds_nothing(pki: Pki, tmp_path: Path, case: str) -> None:
    garbage = tmp_path / "garbage-ca.pem"
    garbage.write_text("this is not a certificate\n")
    missing = str(tmp_path / "no-such-cert.pem")
    args, named = {
        # The message must name the file the operator has to fix.
        "missing cert file": (["--tls-cert", missing, "--tls-key", pki.server_key], missing),
        "key does not match cert": (["--tls-cert", pki.server_cert, "--tls-key", pki.foreign_key], pki.foreign_key),
        "garbage CA file": (
            ["--tls-cert", pki.server_cert, "--tls-key", pki.server_key, "--tls-ca", str(garbage)],
            str(garbage),
        ),
        "key without cert": (["--tls-key", pki.server_key], "--tls-cert"),
    }[case]
    data_dir = tmp_path / "data"
    result = subprocess.run(
        _audited_command(data_dir, *args), capture_output=True, text=True, timeout=30, env=_env(log_format="text")
    )
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aegis: "), lines
    assert named in lines[0], lines[0]
    assert "BOUND" not in result.stdout, result.stdout
    assert "aegis ready" not in result.stdout, result.stdout
    # Refused before the data directory was even created.
    assert not data_dir.exists()
