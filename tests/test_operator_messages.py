"""What an operator reads when starting a node: errors that name the port, help that states
each default once, input that does nothing refused or warned about, and a start-up line that
lists the configuration without its secrets. Real ``aegis`` processes, 127.0.0.1:0 ports."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator

import pytest

from aegiskv.client import Client
from aegiskv.client import Config as ClientConfig
from aegiskv.client.errors import NotFoundError
from aegiskv.server import cli
from aegiskv.server.settings import flag_settings
from tests.test_cli import READY_PREFIX, assert_refused, clean_env, log_lines, run_aegis

LOOPBACK_PORTS = ["--resp-bind", "127.0.0.1:0", "--gossip", "off"]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A 127.0.0.1 port held by this test with TCP (listening) and UDP, as gossip binds both."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(1)
        port = tcp.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                pass  # the TCP socket alone already makes the gossip bind fail
            yield port


# (the flags that put the taken port on one of the node's ports, what the error must say)
PORTS = {
    "native": (["--bind", "{taken}"], "the native port 127.0.0.1:{port} (--bind)"),
    "resp": (["--resp-bind", "{taken}"], "the RESP port 127.0.0.1:{port} (--resp-bind)"),
    "health": (["--health-addr", "{taken}"], "the health port 127.0.0.1:{port} (--health-addr)"),
    "gossip": (
        ["--gossip", "{taken}", "--cluster-bind", "127.0.0.1:0"],
        "the gossip port 127.0.0.1:{port} (--gossip)",
    ),
    "cluster": (
        ["--gossip", "127.0.0.1:0", "--cluster-bind", "{taken}"],
        "the cluster port 127.0.0.1:{port} (--cluster-bind)",
    ),
}


@pytest.mark.parametrize("port_name", list(PORTS))
def test_a_port_in_use_is_named_with_its_address_and_flag(tmp_path, taken_port, port_name) -> None:
    flags, expected = PORTS[port_name]
    taken = f"127.0.0.1:{taken_port}"
    args = ["--bind", "127.0.0.1:0", *LOOPBACK_PORTS, "--data-dir", str(tmp_path / "data")]
    args += [flag.format(taken=taken) for flag in flags]  # argparse keeps the last value of a flag
    result = run_aegis(*args)
    assert result.returncode == 1, result
    assert result.stderr.splitlines()[-1] == (
        f"aegis: cannot listen: {expected.format(port=taken_port)}: Address already in use"
    ), result.stderr
    assert READY_PREFIX not in result.stdout


def test_help_states_each_default_once_as_the_docs_write_it() -> None:
    options = cli.build_parser().format_help().split("\noptions:\n", 1)[1]
    # One entry per option, its wrapped lines joined ("  --flag METAVAR  help ...").
    entries = {entry.split()[0]: " ".join(entry.split()) for entry in re.split(r"\n  (?=-)", options) if entry.strip()}
    for setting in flag_settings():
        entry = entries[setting.flag_name]
        assert entry.count("(default") == 1, entry
        assert not re.search(r"\(default: \d+\.0\)", entry), entry
    assert entries["--drain-timeout"].endswith("(default: 30s)")
    assert entries["--rate-limit"].endswith("(default: 0)")


def test_seeds_with_gossip_off_are_refused(tmp_path) -> None:
    result = run_aegis("--gossip", "off", "--seeds", "127.0.0.1:7701", "--data-dir", str(tmp_path / "data"))
    assert_refused(result, "seeds = 127.0.0.1:7701", "gossip is off", "drop the seeds")
    # The same conflict from the environment names that source.
    result = run_aegis(env=clean_env(AEGIS_GOSSIP="off", AEGIS_SEEDS="127.0.0.1:7701"))
    assert_refused(result, "environment: seeds = 127.0.0.1:7701", "gossip is off (environment)")


def test_plugins_with_an_argument_is_refused() -> None:
    result = run_aegis("plugins", "extra")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "aegis: command line: plugins takes no arguments, got 'extra'\n"


def test_wal_off_on_a_data_dir_with_a_log_warns_once_and_leaves_the_files(start_node, tmp_path) -> None:
    data_dir = tmp_path / "durable"
    durable = start_node("--wal", "write", data_dir=str(data_dir), gossip=None, env=clean_env())
    with Client(ClientConfig(seeds=[durable.address_text])) as client:
        client.set(b"kept", b"value")
    assert durable.stop() == 0

    def durable_files() -> dict[str, bytes]:
        return {
            str(path.relative_to(data_dir)): path.read_bytes()
            for name in ("wal", "snapshots")
            for path in (data_dir / name).glob("*")
        }

    before = durable_files()
    assert any(name.startswith("wal/") for name in before) and any(name.startswith("snapshots/") for name in before)

    memory_only = start_node(data_dir=str(data_dir), gossip=None, env=clean_env())
    with Client(ClientConfig(seeds=[memory_only.address_text])) as client, pytest.raises(NotFoundError):
        client.get(b"kept")  # --wal off reads nothing: the warning says why
    assert memory_only.stop() == 0
    warnings = [line for line in log_lines(memory_only) if " WARNING " in line]
    assert len(warnings) == 1, warnings
    assert f"data dir {data_dir} holds wal/ and snapshots/ from an earlier run, but --wal is off" in warnings[0]
    assert durable_files() == before  # left alone: a restart with --wal write recovers them


def test_start_up_line_lists_non_default_settings_with_sources_and_hides_secrets(start_node, tmp_path) -> None:
    token = "file-token-" + os.urandom(8).hex()
    gossip_secret = "env-secret-" + os.urandom(8).hex()
    config_file = tmp_path / "node.toml"
    config_file.write_text(f'auth_token = "{token}"\nmax_memory = 64\n')
    env = clean_env(AEGIS_GOSSIP_SECRET=gossip_secret, AEGIS_DRAIN_TIMEOUT="5s")
    node = start_node("--config", str(config_file), "--shards", "16", env=env, health_addr=None)
    line = node.wait_for_log(r"INFO .*settings: ")
    listed = dict(re.findall(r"(\w+)=(\S+ \([^)]*\))", line.split("settings: ", 1)[1]))
    assert listed["auth_token"] == "<hidden> (file " + str(config_file) + ")"
    assert listed["gossip_secret"] == "<hidden> (environment)"
    assert listed["max_memory"] == f"64 (file {config_file})"
    assert listed["drain_timeout"] == "5s (environment)"
    assert listed["shards"] == "16 (flag)"
    assert listed["resp_bind"] == "127.0.0.1:0 (flag)"
    # Defaults are left out, so the line shows what this node does differently.
    for default_setting in ("log_level", "wal", "replication_factor", "health_addr"):
        assert default_setting not in listed, line
    assert node.stop() == 0
    text = node.log_text()
    assert token not in text and gossip_secret not in text
