"""The dashboard's endpoints on a real node (token gate, JSON), and its parts on their own.

The page itself, in a real browser against a real cluster: tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from aegiskv.client import Client, Config
from aegiskv.cluster.shard_map import Endpoint, ShardMap
from aegiskv.cluster.slots import ShardMapper
from aegiskv.net.http import HttpRequest, RequestReader
from aegiskv.server.dashboard.access import COOKIE_NAME, DashboardAccess
from aegiskv.server.dashboard.cluster import MemberEntry, gather, member_entries
from aegiskv.server.dashboard.status import RecentRequests, bucket_quantile, hot_keys
from aegiskv.server.stats import StatsRegistry
from aegiskv.testing.localnode import LocalNode
from tests.wire import http_request

TOKEN = "dashboard-test-token-6f1c"


@pytest.fixture(scope="module")
def guarded_node(tmp_path_factory) -> Iterator[LocalNode]:
    """A lone node with an auth token (gossip on: the cluster view reads gossip's members)."""
    node = LocalNode(str(tmp_path_factory.mktemp("dashboard-node")), ["--auth-token", TOKEN, "--node-id", "n-dash"])
    yield node
    assert node.stop() == 0


def get(node: LocalNode, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    assert node.health_address is not None
    return http_request(node.health_address, path, headers=headers)


def test_without_the_token_everything_of_the_dashboard_is_401(guarded_node: LocalNode) -> None:
    for path in ("/", "/ui", "/ui/dashboard.js", "/status.json", "/cluster.json", "/ui?token=wrong"):
        status, _, body = get(guarded_node, path)
        assert status == 401, path
        assert b"/ui?token=<token>" in body
    assert get(guarded_node, "/cluster.json", Authorization="Bearer wrong")[0] == 401
    assert get(guarded_node, "/ui", Cookie=f"{COOKIE_NAME}=forged")[0] == 401
    status, _, body = get(guarded_node, "/nope")
    assert (status, body) == (404, b"try /health, /ready, /metrics, /ui\n")
    # Supervisors and Prometheus need no token.
    assert get(guarded_node, "/health")[0] == 200
    assert get(guarded_node, "/metrics")[0] == 200


def test_the_token_is_traded_for_a_cookie_and_never_logged(guarded_node: LocalNode) -> None:
    status, headers, _ = get(guarded_node, f"/ui?token={TOKEN}")
    assert status == 303
    assert headers["Location"] == "/ui"  # the token leaves the address bar
    cookie = headers["Set-Cookie"]
    name_value, *attributes = [part.strip() for part in cookie.split(";")]
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attributes)
    assert name_value.startswith(f"{COOKIE_NAME}=")
    assert TOKEN not in cookie  # a digest of the token, not the token

    status, headers, page = get(guarded_node, "/ui", Cookie=name_value)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert b'<script src="/ui/dashboard.js"' in page
    assert headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    status, headers, script = get(guarded_node, "/ui/dashboard.js", Cookie=name_value)
    assert (status, headers["Content-Type"]) == (200, "text/javascript; charset=utf-8")
    assert b"/cluster.json" in script
    status, headers, _ = get(guarded_node, "/", Cookie=name_value)
    assert (status, headers["Location"]) == (303, "/ui")

    assert TOKEN not in guarded_node.log_text()


def test_cluster_json_lists_the_node_its_figures_and_every_shard(guarded_node: LocalNode) -> None:
    with Client(Config(seeds=[guarded_node.address_text], auth_token=TOKEN)) as client:
        for index in range(20):
            client.set(f"dash:{index}", "v" * 50)
    status, headers, body = get(guarded_node, "/cluster.json", Authorization=f"Bearer {TOKEN}")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    view = json.loads(body)
    assert view["served_by"] == "n-dash"
    [node] = view["nodes"]
    assert (node["gossip"], node["health"], node["reason"]) == ("alive", "up", "")
    figures = node["status"]
    assert figures["node_id"] == node["node_id"] == view["served_by"]
    assert figures["keys"] == 20
    assert figures["memory"]["used"] >= 20 * 50
    assert figures["memory"]["limit"] > figures["memory"]["used"]
    assert figures["commands"] >= 20
    # INFO hotkeys: the keys this test wrote, hottest first, each with its rank and count.
    assert [entry["rank"] for entry in figures["hotkeys"]] == list(range(len(figures["hotkeys"])))
    assert all(entry["key"].startswith("dash:") and entry["freq"] > 0 for entry in figures["hotkeys"])
    assert guarded_node.health_address is not None
    assert node["address"] == "{}:{}".format(*guarded_node.health_address)
    shards = view["shards"]
    assert [shard["shard"] for shard in shards] == list(range(len(shards)))
    assert all(shard["primary"] == node["node_id"] and shard["followers"] == [] for shard in shards)
    assert shards[-1]["slots"][1] == 16383

    status, _, body = get(guarded_node, "/status.json", Authorization=f"Bearer {TOKEN}")
    assert status == 200
    assert json.loads(body)["node_id"] == node["node_id"]


# -- the parts --------------------------------------------------------------------------


def test_http_reader_gives_query_and_headers() -> None:
    reader = RequestReader()
    reader.receive_data(b"GET /ui?token=a%20b&x=1 HTTP/1.1\r\nHost: h\r\nCookie: a=1; b=2\r\n\r\n")
    request = reader.next_request()
    assert request == HttpRequest("GET", "/ui", {"token": "a b", "x": "1"}, {"host": "h", "cookie": "a=1; b=2"})


def test_open_metrics_name_no_hot_key_of_a_node_with_a_token(guarded_node: LocalNode) -> None:
    # /metrics needs no token (scrapers): with one set, hot keys show as ranks and counts only.
    with Client(Config(seeds=[guarded_node.address_text], auth_token=TOKEN)) as client:
        for _ in range(40):
            client.set("secret-key-name", "v")
            client.get("secret-key-name")
    status, _, body = get(guarded_node, "/metrics")
    assert status == 200
    text = body.decode()
    assert "aegis_hot_key_frequency{rank=" in text
    assert "secret-key-name" not in text


def test_access_accepts_bearer_or_cookie_only_when_right() -> None:
    access = DashboardAccess("secret", secure=True)
    cookie = access.set_cookie()
    assert cookie.endswith("; Secure")  # a TLS operations port: the cookie never travels in clear
    pair = cookie.split(";")[0]
    assert access.allows(HttpRequest("GET", "/ui", {}, {"cookie": f"other=1; {pair}"}))
    assert access.allows(HttpRequest("GET", "/ui", {}, {"authorization": "Bearer secret"}))
    assert not access.allows(HttpRequest("GET", "/ui", {}, {"authorization": "Bearer secreT"}))
    assert not access.allows(HttpRequest("GET", "/ui", {}, {"authorization": "Basic secret"}))
    assert not access.allows(HttpRequest("GET", "/ui", {"token": "secret"}, {}))  # only /ui trades it
    assert not DashboardAccess("other", secure=False).allows(HttpRequest("GET", "/", {}, {"cookie": pair}))
    assert DashboardAccess(None, secure=False).allows(HttpRequest("GET", "/ui"))
    # What a node sends a peer for /status.json: the cookie, which the peer accepts; never the token.
    headers = access.peer_headers()
    assert "secret" not in str(headers)
    assert access.allows(
        HttpRequest("GET", "/status.json", {}, {name.lower(): value for name, value in headers.items()})
    )
    assert DashboardAccess(None, secure=False).peer_headers() == {}


def test_cookie_is_a_slow_digest_the_same_on_every_node() -> None:
    # A leaked cookie must not make a weak token cheap to find: the digest is scrypt's, not a fast hash.
    value = DashboardAccess("secret", secure=False).set_cookie().split(";")[0].partition("=")[2]
    expected = hashlib.scrypt(b"secret", salt=b"aegiskv dashboard cookie", n=2**14, r=8, p=1, dklen=32).hex()
    assert value == expected
    # Peers accept each other's cookie because they share the token: same token, same cookie.
    assert (
        DashboardAccess("secret", secure=True).peer_headers() == DashboardAccess("secret", secure=False).peer_headers()
    )


def test_hot_keys_read_both_forms_and_keys_with_commas() -> None:
    section: dict[str, Any] = {
        "hotkey_2": "freq=7,key=a,b",
        "hotkey_1": {"freq": 9, "key": "top"},
        "hotkey_x": "freq=1,key=z",  # not a rank
        "hotkey_3": "freq=many,key=bad",  # not a count
    }
    assert hot_keys(section) == [{"rank": 1, "freq": 9, "key": "top"}, {"rank": 2, "freq": 7, "key": "a,b"}]
    assert hot_keys({}) == []


def test_latency_quantiles_are_bucket_bounds() -> None:
    counts = [0] * 24
    counts[3] = 98  # under 8 us
    counts[10] = 2  # under 1024 us
    assert bucket_quantile(counts, 0.5) == 8
    assert bucket_quantile(counts, 0.99) == 1024
    assert bucket_quantile([0] * 24, 0.5) is None


def test_recent_requests_rate_needs_two_readings_apart() -> None:
    now = [100.0]
    stats = StatsRegistry()
    recent = RecentRequests(stats, clock=lambda: now[0])
    assert recent.read()["ops_per_sec"] is None  # one reading: no rate yet
    mine = stats.for_this_thread()
    for _ in range(50):
        mine.record(0, 3000)  # 3 us
    now[0] += 2.0
    reading = recent.read()
    assert reading["window_s"] == 2.0
    assert reading["ops_per_sec"] == pytest.approx(25.0)
    assert reading["latency_us"]["p50"] == 4
    now[0] += 10.0  # the window moved past both: the rate starts over
    assert recent.read()["ops_per_sec"] is None


def test_gather_shows_an_unanswering_peer_down_and_does_not_ask_the_dead() -> None:
    mapper = ShardMapper(4)
    shard_map = ShardMap(3, mapper, [("a", "b"), ("b", "a"), ("a", "c"), ("c", "a")], {}, {0: "a", 1: "b", 2: "a"})
    members = member_entries(
        [
            ("a", "alive", ("10.0.0.1", 7701), {"health": ":8080"}),
            ("b", "suspect", ("10.0.0.2", 7701), {"health": "10.0.0.2:8080"}),
            ("c", "alive", ("10.0.0.3", 7701), {"health": "10.0.0.3:8080"}),
            ("d", "dead", ("10.0.0.4", 7701), {"health": "10.0.0.4:8080"}),
            ("e", "alive", ("10.0.0.5", 7701), {}),  # no --health-addr: nothing to ask
        ]
    )
    assert members[0] == MemberEntry("a", "alive", Endpoint("10.0.0.1", 8080))  # an empty host: gossip's
    asked: list[Endpoint] = []

    def fetch(endpoint: Endpoint, timeout: float) -> dict[str, Any]:
        asked.append(endpoint)
        assert 0 < timeout <= 0.8
        if endpoint.host == "10.0.0.3":
            raise ConnectionRefusedError(111, "Connection refused")
        return {"node_id": "b"}

    view = gather("a", members, shard_map, lambda: {"node_id": "a"}, fetch)
    assert asked == [Endpoint("10.0.0.2", 8080), Endpoint("10.0.0.3", 8080)]
    health = {node["node_id"]: (node["health"], node["reason"]) for node in view["nodes"]}
    assert health["a"] == ("up", "")
    assert health["b"] == ("suspect", "")
    assert health["c"][0] == "down" and "no answer from 10.0.0.3:8080" in health["c"][1]
    assert health["d"] == ("down", "gossip says dead")
    assert health["e"] == ("up", "no figures: it serves no --health-addr")  # gossip's word
    assert view["epoch"] == 3
    assert view["shards"][3] == {
        "shard": 3,
        "slots": list(mapper.slot_range(3)),
        "primary": None,
        "followers": ["c", "a"],
    }
    assert view["shards"][1]["followers"] == ["a"]
