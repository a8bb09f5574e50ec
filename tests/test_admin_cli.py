"""The operator's commands (aegiskv.admin): ``aegis cluster up/down``, ``status``, ``shards``, ``info``,
``hotkeys``, ``drain``, run as the operator runs them: ``python -m aegiskv ...`` processes against
real daemons, with output read from their pipes (not a terminal, so plain text).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme

from aegiskv.admin import commands, hotkeys, nodes, render, runner
from aegiskv.admin.main import admin_main, main
from aegiskv.admin.nodes import ClusterView, Target
from aegiskv.client import AuthenticationError, Client, Config
from aegiskv.testing.localnode import LocalNode
from tests.cluster_harness import FAST_GOSSIP

TOKEN = "operator-token-0123456789"


def aegis(*args: str, timeout: float = 120.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {name: value for name, value in os.environ.items() if name != "AEGIS_AUTH_TOKEN"}
    environment.update(FAST_GOSSIP)
    environment.update(env or {})
    # The installed aegiskv, not a source directory that happens to be the working directory.
    environment["PYTHONSAFEPATH"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "aegiskv", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        check=False,
    )


def ok(*args: str) -> str:
    result = aegis(*args)
    assert result.returncode == 0, f"aegis {' '.join(args)}: {result.returncode}\n{result.stdout}{result.stderr}"
    return result.stdout


def as_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json"))


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``aegis ARGS`` run in this process (no interpreter start-up): exit code, stdout, stderr."""
    try:
        code = admin_main(list(args))
    except SystemExit as exit:
        code = int(exit.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


# -- hot keys: the INFO section's format --------------------------------------------------------------


def test_hotkeys_parse_the_section_as_written_and_merge_by_frequency() -> None:
    text = (
        "# Hotkeys\r\n"
        "hotkeys_tracked:3\r\n"
        "hotkey_1:freq=7,key=user:1=a,b\r\n"  # ':' '=' ',' belong to the key: the key is the rest of the line
        "hotkey_0:freq=9,key=\\x5cx00\\x01\r\n"
    )
    tracked, keys = hotkeys.parse_fields(hotkeys.parse_text(text))
    assert tracked == 3
    assert [(hot.rank, hot.freq, hot.key) for hot in keys] == [(0, 9, "\\x5cx00\\x01"), (1, 7, "user:1=a,b")]
    other = [hotkeys.HotKey(0, 5, "user:1=a,b"), hotkeys.HotKey(1, 1, "solo")]
    merged = hotkeys.merge({"n0": keys, "n1": other}, top=2)
    assert [(entry.key, entry.freq, entry.nodes) for entry in merged] == [
        ("user:1=a,b", 12, ["n0", "n1"]),
        ("\\x5cx00\\x01", 9, ["n0"]),
    ]


@pytest.mark.parametrize(
    "fields",
    [{"hotkeys_tracked": "x"}, {"hotkey_0": "freq=x,key=a"}, {"hotkey_0": "key=a"}, {"hotkey_0": {"freq": 1}}],
)
def test_hotkeys_refuse_a_section_that_breaks_the_format(fields: dict[str, Any]) -> None:
    with pytest.raises(hotkeys.HotKeysFormatError):
        hotkeys.parse_fields(fields)


# -- output ------------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tables_are_plain_off_a_terminal_and_drawn_by_rich_on_one() -> None:
    rows = [("n0", "[bold]key", None), ("n10", "x", 2.25)]
    plain = io.StringIO()
    render.table(("node", "key", "ops/s"), rows, stream=plain)
    assert plain.getvalue().splitlines() == ["node  key        ops/s", "n0    [bold]key  -", "n10   x          2.2"]
    drawn = Terminal()
    render.table(("node", "key", "ops/s"), rows, title="t", stream=drawn)
    # rich's box drawing, and a key that looks like rich markup printed as it is.
    assert "━" in drawn.getvalue() or "─" in drawn.getvalue()
    assert "[bold]key" in drawn.getvalue()


def test_bad_command_lines_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["status", "--port", "0"], ["drain"], ["cluster", "up", "-n", "0"], ["shards", "--", "--x"]):
        code, _, err = in_process(capsys, *args)
        assert code == 2, (args, err)
        assert err.startswith("aegis: command line: ") and err.count("\n") == 1, err


def test_an_unknown_command_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up"]) == 2
    assert capsys.readouterr().err.startswith("aegis: command line: unknown command 'up' (commands: cluster, drain,")


def test_nothing_to_reach_or_stop_is_said_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = in_process(capsys, "cluster", "down", "--dir", str(tmp_path))
    assert code == 1
    assert err == f"aegis: no cluster recorded in {tmp_path} (cluster.json not found); nothing to stop\n"
    code, _, err = in_process(capsys, "status", "--seed", "127.0.0.1:1", "--timeout", "0.5")
    assert code == 1
    assert err.startswith("aegis: cannot reach the cluster: 127.0.0.1:1") and err.count("\n") == 1, err


# -- cluster down: which processes it signals, and how ------------------------------------------------

STUBBORN = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(120)
"""


def test_down_kills_what_ignores_sigterm_and_leaves_a_reused_pid_alone(tmp_path: Path) -> None:
    (tmp_path / "cluster.toml").write_text("")
    # The daemon's mark: its command line names the directory's cluster.toml. A process without it
    # stands for a PID the system gave to another program after the node exited.
    ours = subprocess.Popen(
        [sys.executable, "-c", STUBBORN, "--config", str(tmp_path / "cluster.toml")], stdout=subprocess.PIPE, text=True
    )
    stranger = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
    try:
        for process in (ours, stranger):
            assert process.stdout is not None and process.stdout.readline() == "ready\n"  # SIGTERM now ignored
        records = [
            runner.NodeRecord("n0", ours.pid, str(tmp_path / "n0"), str(tmp_path / "n0.log")),
            runner.NodeRecord("n1", stranger.pid, str(tmp_path / "n1"), str(tmp_path / "n1.log")),
        ]
        said: list[str] = []
        stopped = runner.stop(tmp_path, records, 0.5, said.append)
        assert stopped == [
            {"node": "n0", "pid": ours.pid, "stopped": "SIGKILL"},
            {"node": "n1", "pid": stranger.pid, "stopped": "not running"},
        ]
        assert said == [
            f"stopped n0 (pid {ours.pid}): killed, still running 0.5s after SIGTERM",
            f"n1 (pid {stranger.pid}) was not running",
        ]
        assert not alive(ours.pid)  # stop() reaped it already (it is our child), so Popen sees no status
        assert stranger.poll() is None
    finally:
        for process in (ours, stranger):
            if process.poll() is None:
                process.kill()
            process.wait()


# -- a lone node with TLS and a token: what reaching it takes, and DRAIN ------------------------------------


def test_tls_and_token_reach_a_node_and_drain_is_refused_without_the_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AEGIS_AUTH_TOKEN", raising=False)
    ca = trustme.CA()
    ca_file, cert, key = tmp_path / "ca.pem", tmp_path / "node.pem", tmp_path / "node.key"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    tls = ["--tls-cert", str(cert), "--tls-key", str(key)]
    node = LocalNode(str(tmp_path / "node"), ["--auth-token", TOKEN, "--node-id", "lone", *tls], gossip=None)
    seed = ["--seed", node.address_text, "--tls-ca", str(ca_file)]
    try:
        code, out, err = in_process(capsys, "status", *seed, "--token", TOKEN, "--interval", "0.1", "--json")
        assert code == 0, err
        lone = json.loads(out)
        assert [(row["node"], row["state"]) for row in lone["nodes"]] == [("lone", "up")]
        # Gossip off: the map lists no members, and the node leads every shard.
        assert lone["nodes"][0]["shards_primary"] == lone["shards"] and lone["shards_without_primary"] == 0
        code, _, err = in_process(capsys, "status", "--seed", node.address_text, "--token", TOKEN, "--timeout", "0.5")
        assert code == 1 and err.startswith("aegis: cannot reach the cluster: "), err  # plain text to a TLS port

        # A node in the map that does not answer is a row of its own, with the reason, not a failure.
        real_discover = nodes.discover

        def with_a_dead_node(target: Target) -> ClusterView:
            view = real_discover(target)
            return ClusterView(view.source, view.topology, {**view.addresses, "gone": "127.0.0.1:1"})

        monkeypatch.setattr(commands, "discover", with_a_dead_node)
        code, out, err = in_process(capsys, "status", *seed, "--token", TOKEN, "--interval", "0.1")
        monkeypatch.setattr(commands, "discover", real_discover)
        assert code == 0, err
        assert [line.split()[:2] for line in out.splitlines()[2:]] == [["gone", "unreachable"], ["lone", "up"]]
        assert "\ngone: 127.0.0.1:1: cannot connect" in f"\n{err}", err

        tls_config = Config(seeds=[node.address_text], tls_ca=str(ca_file), max_retries=0)
        with Client(tls_config) as anonymous, pytest.raises(AuthenticationError):
            anonymous.drain(node.address_text)
        code, _, err = in_process(capsys, "drain", "lone", *seed)
        assert code == 1 and f"{node.address_text} requires a token" in err, err
        assert node.process.poll() is None
        # The token from the environment, as the node itself reads it.
        monkeypatch.setenv("AEGIS_AUTH_TOKEN", TOKEN)
        code, _, err = in_process(capsys, "drain", "lone", *seed, "--wait", "30")
        assert code == 0 and "lone (" in err and "is draining" in err, err
        assert "lone stopped; it was the last node" in err
        assert node.process.wait(30) == 0
        node.wait_for_log("drained; stopping")
    finally:
        if node.process.poll() is None:
            node.kill()


def test_up_names_a_chosen_port_that_is_taken_and_starts_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = in_process(capsys, "cluster", "up", "-n", "1", "--dir", str(tmp_path), "--base-port", str(port))
    assert code == 1
    assert err == f"aegis: port 127.0.0.1:{port} (native) is not free: Address already in use\n"
    assert not (tmp_path / "cluster.json").exists()
    assert not (tmp_path / "n0" / "aegis.log").exists()


# -- the operator's path, on a real cluster -------------------------------------------------------------


@pytest.mark.slow
def test_cluster_up_status_shards_info_drain_down(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    flags = ["--dir", str(directory)]
    up = aegis(
        "cluster", "up", "-n", "3", *flags, "--shards", "16", "--replication-factor", "2", "--token", TOKEN,
        "--", "--max-memory", "64",
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        lines = up.stdout.splitlines()
        assert lines[0] == f"3 nodes agree; cluster in {directory}"
        assert lines[1].split() == ["node", "pid", "native", "RESP", "health", "log"]
        recorded = json.loads((directory / "cluster.json").read_text())["nodes"]
        assert [node["node"] for node in recorded] == ["n0", "n1", "n2"]
        assert all(alive(node["pid"]) for node in recorded)
        assert (directory / "cluster.toml").stat().st_mode & 0o777 == 0o600
        assert TOKEN not in " ".join(Path(f"/proc/{node['pid']}/cmdline").read_text() for node in recorded)
        for node, line in zip(recorded, lines[2:5]):
            assert line.split()[:5] == [node["node"], str(node["pid"]), node["native"], node["resp"], node["health"]]

        again = aegis("cluster", "up", "-n", "3", *flags)
        assert again.returncode == 1 and "already runs a cluster" in again.stderr, again.stderr

        seed = recorded[0]["native"]
        refused = aegis("status", "--seed", seed)
        assert refused.returncode == 1 and "requires a token" in refused.stderr, refused.stderr

        status = as_json("status", *flags, "--interval", "0.2")
        assert [(node["node"], node["state"]) for node in status["nodes"]] == [("n0", "up"), ("n1", "up"), ("n2", "up")]
        assert sum(node["shards_primary"] for node in status["nodes"]) == 16
        assert sum(node["shards_follower"] for node in status["nodes"]) == 16
        assert all(node["maxmemory"] == 64 << 20 for node in status["nodes"])
        text = ok("status", "--seed", seed, "--token", TOKEN, "--interval", "0.2").splitlines()
        assert text[1].split()[:3] == ["node", "state", "address"]
        assert [line.split()[:2] for line in text[2:]] == [["n0", "up"], ["n1", "up"], ["n2", "up"]]

        shards = as_json("shards", *flags)
        assert len(shards["shards"]) == 16
        assert all(shard["primary"] and len(shard["followers"]) == 1 for shard in shards["shards"])
        assert ok("shards", *flags).splitlines()[1].split() == ["shard", "slots", "primary", "followers"]

        info = as_json("info", "n1", "server", *flags)
        assert info["node"] == "n1" and info["info"]["server"]["aegis_node_id"] == "n1"
        assert info["info"]["server"]["process_id"] == recorded[1]["pid"]
        assert "aegis_node_id:n1" in ok("info", "n1", "server", *flags).splitlines()
        unknown = aegis("info", "n9", *flags)
        assert unknown.returncode == 1 and "no node 'n9'" in unknown.stderr

        hot = aegis("hotkeys", *flags, "--json")
        assert hot.returncode == 0, hot.stderr
        for node in json.loads(hot.stdout)["nodes"]:  # until the section exists, each node says so
            assert node["error"] in (None, "does not report hot keys")

        drained = as_json("drain", "n2", *flags, "--wait", "30")
        assert drained == {"node": "n2", "address": recorded[2]["native"], "draining": True, "left": True}
        after = as_json("status", *flags, "--interval", "0.2")
        assert [node["node"] for node in after["nodes"]] == ["n0", "n1"]

        down = aegis("cluster", "down", *flags)
        assert down.returncode == 0, down.stderr
        assert "stopped n0 (pid" in down.stderr and f"n2 (pid {recorded[2]['pid']}) was not running" in down.stderr
        assert not any(alive(node["pid"]) for node in recorded)
        assert not (directory / "cluster.json").exists()
    finally:
        if (directory / "cluster.json").exists():
            aegis("cluster", "down", *flags, "--timeout", "5")
