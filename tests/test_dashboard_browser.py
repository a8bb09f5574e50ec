"""The dashboard in a real browser: headless Chromium (Debian's package) against a real 3-node cluster.

Chromium runs the page's script, prints the DOM it built (``--dump-dom``) and
takes a screenshot of the same page in the same run (starting Chromium is most
of a load's 2 to 3 s here); ``--virtual-time-budget`` lets it run the page's
timers (the polls of /cluster.json) without waiting for them in real time, and
holds virtual time while a fetch is under way. Each load goes through the token
gate the way an operator does: ``/ui?token=...`` once, a redirect, a cookie.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from aegiskv.client import Client, Config
from aegiskv.server import dashboard
from aegiskv.testing.localnode import LocalNode
from tests.cluster_harness import Cluster
from tests.wire import http_request, wait_until

CHROMIUM = shutil.which("chromium")
TOKEN = "browser-test-token-93a7"
SHARDS = 32

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
]


class DashboardDom(HTMLParser):
    """What the rendered page shows: node rows (by data-node) and shard squares (by data-shard)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.state = ""
        self.renders = 0
        self.nodes: dict[str, dict[str, str]] = {}  # node -> field -> text, plus "health" from data-health
        self.shards: dict[int, str] = {}  # shard -> primary
        self.hot_keys_hidden = False
        self.hot_keys: list[list[str]] = []  # node, rank, key, frequency
        self.moves_hidden = False
        self.moves: list[list[str]] = []  # shard, from, to, state, progress, sent
        self._row: dict[str, str] | None = None
        self._field: str | None = None
        self._hot_key = False
        self._move = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "body":
            self.state = attributes.get("data-state", "")
            self.renders = int(attributes.get("data-renders", "0"))
        elif tag == "tr" and "data-health" in attributes and "node" in attributes.get("class", "").split():
            self._row = self.nodes.setdefault(attributes["data-node"], {"row_health": attributes["data-health"]})
        elif tag == "td" and self._row is not None and "data-field" in attributes:
            self._field = attributes["data-field"]
            self._row[self._field] = ""
        elif tag == "div" and "data-shard" in attributes:
            self.shards[int(attributes["data-shard"])] = attributes.get("data-primary", "")
        elif tag == "section" and attributes.get("id") == "hotkeys-section":
            self.hot_keys_hidden = "hidden" in attributes
        elif tag == "tr" and "hotkey" in attributes.get("class", "").split():
            self.hot_keys.append([])
            self._hot_key = True
        elif tag == "td" and self._hot_key:
            self.hot_keys[-1].append("")
        elif tag == "section" and attributes.get("id") == "moves-section":
            self.moves_hidden = "hidden" in attributes
        elif tag == "tr" and "move" in attributes.get("class", "").split():
            self.moves.append([])
            self._move = True
        elif tag == "td" and self._move:
            self.moves[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._field = None
        elif tag == "tr":
            self._row = None
            self._hot_key = False
            self._move = False

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._field is not None:
            self._row[self._field] += data
        elif self._hot_key and self.hot_keys[-1]:
            self.hot_keys[-1][-1] += data
        elif self._move and self.moves[-1]:
            self.moves[-1][-1] += data


def load(url: str, profile: Path, screenshot: Path) -> DashboardDom:
    """The page at ``url`` once its script ran a few (virtual) seconds; its screenshot in ``screenshot``."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=3000",
        "--window-size=1400,1000",
        "--hide-scrollbars",
        f"--screenshot={screenshot}",
        "--dump-dom",
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {result.stderr[-2000:]}"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return DashboardDom(result.stdout)


def cluster_view(node: LocalNode) -> dict[str, Any]:
    assert node.health_address is not None
    status, _, body = http_request(node.health_address, "/cluster.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, body
    view: dict[str, Any] = json.loads(body)
    return view


def settled(node: LocalNode) -> bool:
    view = cluster_view(node)
    nodes_up = [entry["node_id"] for entry in view["nodes"] if entry["health"] == "up"]
    return len(nodes_up) == 3 and all(shard["primary"] for shard in view["shards"])


_NUMBER = re.compile(r"^\d[\d,]*(\.\d+)?$")


def shows_the_whole_cluster(dom: DashboardDom, keys_written: int) -> bool:
    """Three nodes up, every shard drawn with a primary among them, and every node's figures present."""
    if dom.state != "loaded" or sorted(dom.nodes) != ["n0", "n1", "n2"]:
        return False
    rows = dom.nodes.values()
    return (
        all(row["row_health"] == "up" and row["health"].startswith("up") for row in rows)
        and sorted(dom.shards) == list(range(SHARDS))
        and all(primary in dom.nodes for primary in dom.shards.values())
        and all(_NUMBER.match(row["ops"]) and _NUMBER.match(row["keys"]) for row in rows)
        and all(re.match(r"^[\d.]+ (B|KiB|MiB) / 1\.0 GiB$", row["memory"]) for row in rows)
        and sum(int(row["keys"].replace(",", "")) for row in rows) >= keys_written
    )


def test_dashboard_in_chromium_shows_the_cluster_and_a_killed_node_down(tmp_path: Path) -> None:
    started = time.monotonic()
    cluster = Cluster(tmp_path / "nodes", shards=SHARDS, env={"AEGIS_AUTH_TOKEN": TOKEN})
    try:
        nodes = cluster.start_many(3)
        serving = nodes[0]
        wait_until(lambda: settled(serving), timeout=30, interval=0.1, what="three nodes up, every shard led")
        print(f"cluster up and settled after {time.monotonic() - started:.1f}s")
        with Client(Config(seeds=[serving.address_text], auth_token=TOKEN)) as client:
            for index in range(300):
                client.set(f"dashboard:{index}", "v" * 100)

        assert serving.health_address is not None
        url = "http://{}:{}/ui?token={}".format(*serving.health_address, TOKEN)
        profile = tmp_path / "chromium-profile"
        # Each load overwrites it: the one kept shows the page the assertions passed on.
        screenshot = tmp_path / "dashboard.png"

        loads: list[int] = []  # the views each load drew

        def shows_the_cluster() -> DashboardDom | None:
            page = load(url, profile, screenshot)
            loads.append(page.renders)
            return page if shows_the_whole_cluster(page, 300) else None

        dom = wait_until(
            shows_the_cluster,
            timeout=60,
            interval=0.1,
            what="the page to show three nodes up, 32 shards and every node's figures",
        )
        assert dom.nodes["n0"]["address"] == "{}:{}".format(*serving.health_address)
        assert dom.renders >= 2  # it polls: 3 s of (virtual) time saw more than the first view
        # Hot keys only where a node's INFO has a hotkeys section; none at all: no section shown.
        assert dom.hot_keys_hidden == (dom.hot_keys == [])
        for node, rank, key, frequency in dom.hot_keys:
            assert node in dom.nodes and rank.isdigit() and key and _NUMBER.match(frequency)
        assert dom.moves_hidden and dom.moves == []  # a settled cluster: no move, no section

        print(f"dashboard screenshot: {screenshot} (after {time.monotonic() - started:.1f}s; views per load {loads})")

        victim = nodes[2]
        os.kill(victim.pid, signal.SIGKILL)
        victim.process.wait(timeout=10)

        after = tmp_path / "dashboard-node-down.png"

        def shows_n2_down() -> DashboardDom | None:
            page = load(url, profile, after)
            rows = page.nodes
            if rows.get("n2", {}).get("row_health") != "down":
                return None
            return page if rows["n0"]["row_health"] == rows["n1"]["row_health"] == "up" else None

        down = wait_until(shows_n2_down, timeout=60, interval=0.1, what="the page to show n2 down")
        assert down.nodes["n2"]["health"].startswith("down")
        print(f"dashboard screenshot, n2 killed: {after}")
        print(f"browser test took {time.monotonic() - started:.1f}s")
    finally:
        cluster.close()


# -- moves in flight, on a page fed a cluster view with moves ------------------------------------------


class _CannedDashboard(http.server.BaseHTTPRequestHandler):
    """The page's own files, and one /cluster.json: the view of a cluster while n3 joins."""

    view: bytes = b""

    def do_GET(self) -> None:
        static = Path(dashboard.__file__).parent / "static"
        files = {
            "/ui": ("index.html", "text/html"),
            "/ui/dashboard.js": ("dashboard.js", "text/javascript"),
            "/ui/dashboard.css": ("dashboard.css", "text/css"),
        }
        if self.path == "/cluster.json":
            body, kind = self.view, "application/json"
        elif self.path in files:
            name, kind = files[self.path]
            body = (static / name).read_bytes()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def canned_view(moves: list[dict[str, Any]]) -> dict[str, Any]:
    status = {"ops_per_sec": 1.0, "keys": 10, "memory": {"used": 1024, "limit": 0}, "hotkeys": [], "moves": moves}
    node: dict[str, Any] = {"node_id": "n0", "gossip": "alive", "health": "up", "reason": "", "address": "x:1"}
    node["status"] = status
    shards = [{"shard": 0, "slots": [0, 16383], "primary": "n0", "followers": []}]
    return {"served_by": "n0", "at": time.time(), "epoch": 9, "shards": shards, "nodes": [node]}


def test_the_page_lists_moves_in_flight_as_the_senders_report_them(tmp_path: Path) -> None:
    moves = [
        {"shard": 12, "to": "n3", "state": "copying", "keys": 300, "keys_total": 1200, "bytes": 33000},
        {"shard": 40, "to": "n3", "state": "queued", "keys": 0, "keys_total": 0, "bytes": 0},
    ]
    _CannedDashboard.view = json.dumps(canned_view(moves)).encode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CannedDashboard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ui"
        dom = load(url, tmp_path / "profile", tmp_path / "moves.png")
        assert dom.state == "loaded" and not dom.moves_hidden
        assert dom.moves == [
            ["12", "n0", "n3", "copying", "300 / 1,200 keys (25%)", "32.2 KiB"],
            ["40", "n0", "n3", "queued", "\u2014", "0 B"],
        ]
    finally:
        server.shutdown()
        server.server_close()
