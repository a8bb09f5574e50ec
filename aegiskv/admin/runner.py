"""``aegis cluster up`` and ``aegis cluster down``: a cluster of local ``aegis`` daemons in one directory.

The directory holds everything the cluster is::

    cluster.toml    settings every node reads: the generated gossip secret (and the token, if
                    given), so neither appears in a command line; mode 0600
    cluster.json    the nodes started: PID, addresses, data dir and log; ``down`` reads it
    n0/ n1/ ...     each node's data dir and its log, aegis.log

``up`` starts node n0, learns its gossip address from its ``aegis ready:`` line, starts the
others with n0 as their seed, and returns once every node's shard map lists every node and
each shard is led by the node placement prefers (the cluster agrees). ``down`` signals exactly
the PIDs it recorded, and only while each is still the process it started (its command line
names this directory's cluster.toml), so a PID the system has since given to another program
is left alone.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aegiskv.admin.nodes import AdminError, Target
from aegiskv.client import AegisError, Client

STATE_FILE = "cluster.json"
SETTINGS_FILE = "cluster.toml"
LOG_FILE = "aegis.log"
# node i listens on base + 10 * i + offset, for each port.
PORT_OFFSETS = {"native": 0, "gossip": 1, "cluster": 2, "resp": 3, "health": 4}
PORT_STRIDE = 10
# The daemon's flag for each port.
_FLAGS = (
    ("bind", "native"),
    ("resp-bind", "resp"),
    ("gossip", "gossip"),
    ("cluster-bind", "cluster"),
    ("health-addr", "health"),
)
_READY = re.compile(r"^aegis ready: .*$", re.MULTILINE)
_ADDRESS = re.compile(r"(?P<name>\w+)=\[?(?P<host>[^\s\]]+?)\]?:(?P<port>\d+)(?=\s|$)")

Say = Callable[[str], None]


@dataclass
class NodeRecord:
    node: str
    pid: int
    data_dir: str
    log: str
    native: str = ""
    resp: str = ""
    health: str = ""
    gossip: str = ""
    cluster: str = ""


@dataclass(frozen=True)
class Launched:
    record: NodeRecord
    process: subprocess.Popen[bytes]
    log_offset: int


@dataclass(frozen=True)
class UpOptions:
    directory: Path
    nodes: int
    base_port: int | None = None
    spread_hosts: bool = False  # node i on 127.0.0.(i + 1) instead of all on 127.0.0.1
    replication_factor: int | None = None
    shards: int | None = None
    token: str | None = None
    timeout: float = 60.0
    node_args: Sequence[str] = ()


# -- the directory's records -------------------------------------------------------------------------


def read_state(directory: Path) -> list[NodeRecord] | None:
    path = directory / STATE_FILE
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise AdminError(f"{path}: unreadable ({error}); remove it once no node of that cluster runs") from None
    return [NodeRecord(**entry) for entry in document["nodes"]]


def _write_state(directory: Path, records: list[NodeRecord]) -> None:
    path = directory / STATE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"nodes": [asdict(record) for record in records]}, indent=2) + "\n")
    os.replace(temporary, path)


def _write_settings(directory: Path, options: UpOptions) -> Path:
    """cluster.toml, created 0600 before the secret is written (never world-readable, even briefly)."""
    path = directory / SETTINGS_FILE
    lines = [
        "# Written by `aegis cluster up`: settings every node of this local cluster reads.",
        f'gossip_secret = "{secrets.token_hex(32)}"',
    ]
    if options.token is not None:
        lines.append(f"auth_token = {json.dumps(options.token)}")
    if options.replication_factor is not None:
        lines.append(f"replication_factor = {options.replication_factor}")
    if options.shards is not None:
        lines.append(f"shards = {options.shards}")
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def recorded_token(directory: Path) -> str | None:
    """The auth token ``up --token`` wrote in cluster.toml, for the admin commands given ``--dir``."""
    try:
        text = (directory / SETTINGS_FILE).read_text()
    except OSError:
        return None
    matched = re.search(r"^auth_token = (.*)$", text, re.MULTILINE)
    if matched is None:
        return None
    token: str = json.loads(matched.group(1))
    return token


def running(record: NodeRecord, directory: Path) -> bool:
    """The recorded PID is alive and is still the daemon ``up`` started (not a reused PID).

    Read from /proc: where there is none (not Linux), only whether the PID exists can be known.
    """
    if not Path("/proc/self").exists():
        try:
            os.kill(record.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False  # another user's process: not one `up` started
        return True
    try:
        command_line = Path(f"/proc/{record.pid}/cmdline").read_bytes()
        status = Path(f"/proc/{record.pid}/stat").read_text()
    except OSError:
        return False
    state = status.rpartition(")")[2].split()[:1]
    if state == ["Z"]:  # exited, not yet reaped by its parent
        return False
    return str((directory / SETTINGS_FILE).resolve()).encode() in command_line.split(b"\0")


# -- up ------------------------------------------------------------------------------------------------


def _host(options: UpOptions, index: int) -> str:
    return f"127.0.0.{index + 1}" if options.spread_hosts else "127.0.0.1"


def _ports(options: UpOptions, index: int) -> dict[str, int]:
    if options.base_port is None:
        return dict.fromkeys(PORT_OFFSETS, 0)
    return {name: options.base_port + PORT_STRIDE * index + offset for name, offset in PORT_OFFSETS.items()}


def _check_free(host: str, ports: dict[str, int]) -> None:
    """Chosen ports are tried before any node starts, so a clash is named instead of a node failing."""
    for name, port in ports.items():
        if port == 0:
            continue
        # Gossip takes the port in UDP and TCP; TCP probes reuse addresses as the node's listeners
        # do, so a port left in TIME_WAIT by a cluster just stopped still counts as free.
        kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM) if name == "gossip" else (socket.SOCK_STREAM,)
        for kind in kinds:
            with socket.socket(socket.AF_INET, kind) as probe:
                if kind == socket.SOCK_STREAM:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, port))
                except OSError as error:
                    raise AdminError(f"port {host}:{port} ({name}) is not free: {error.strerror}") from None


def _launch(options: UpOptions, index: int, settings: Path, seed: str | None) -> Launched:
    node = f"n{index}"
    node_dir = (options.directory / node).resolve()  # absolute in cluster.json, wherever it is read from
    node_dir.mkdir(exist_ok=True)
    host, ports = _host(options, index), _ports(options, index)
    log = node_dir / LOG_FILE
    command = [
        sys.executable,
        "-m",
        "aegiskv",
        "--config",
        str(settings.resolve()),
        "--node-id",
        node,
        "--data-dir",
        str(node_dir / "data"),
        *(f"--{flag}={host}:{ports[name]}" for flag, name in _FLAGS),
    ]
    if seed is not None:
        command.append(f"--seeds={seed}")
    command += list(options.node_args)
    environment = dict(os.environ)
    # The daemon imports the aegiskv this command runs, not an aegiskv/ directory that happens to be
    # the working directory (python -m puts it first on sys.path). Python 3.11+; 3.10 ignores it.
    environment.setdefault("PYTHONSAFEPATH", "1")
    # The log keeps earlier runs: the ready line to read is the one written after this offset.
    offset = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=node_dir,
            # Its own session: Ctrl-C in the terminal that ran `up`, or that terminal closing, leaves it running.
            start_new_session=True,
        )
    return Launched(NodeRecord(node, process.pid, str(node_dir / "data"), str(log)), process, offset)


def _wait_ready(launched: Launched, timeout: float) -> None:
    """Until the node's ``aegis ready:`` line is in its log; fills in the addresses it bound."""
    record, process = launched.record, launched.process
    deadline = time.monotonic() + timeout
    log = Path(record.log)
    while True:
        with open(log, "rb") as handle:
            handle.seek(launched.log_offset)
            text = handle.read().decode(errors="replace")
        found = _READY.search(text)
        if found is not None:
            for matched in _ADDRESS.finditer(found.group(0)):
                if matched["name"] in PORT_OFFSETS:
                    setattr(record, matched["name"], f"{matched['host']}:{matched['port']}")
            return
        if process.poll() is not None:
            raise AdminError(f"{record.node} exited with code {process.returncode} before serving:\n{_tail(log)}")
        if time.monotonic() >= deadline:
            raise AdminError(f"{record.node} did not report serving within {timeout:g}s:\n{_tail(log)}")
        time.sleep(0.05)


def _tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return f"(no log at {log})"
    return "\n".join(f"  {line}" for line in text.splitlines()[-lines:]) + f"\n(log: {log})"


def _agreement(records: list[NodeRecord], token: str | None) -> tuple[bool, str]:
    """Whether every node's map lists every node, the maps are equal, and each shard is led as preferred."""
    members = {record.node for record in records}
    maps = []
    for record in records:
        try:
            with Client(Target([record.native], token=token).config()) as client:
                maps.append(client.topology(server=record.native))
        except (AegisError, OSError) as error:
            return False, f"{record.node} does not answer yet ({error})"
    seen = [len(set(answer.get("nodes", {})) & members) for answer in maps]
    if any(count != len(members) for count in seen):
        return False, f"nodes see {min(seen)} to {max(seen)} of {len(members)} members"
    if len({json.dumps(answer["shards"], sort_keys=True) for answer in maps}) != 1:
        return False, "the nodes' shard maps still differ"
    shards = maps[0]["shards"]
    settled = sum(1 for shard in shards if shard.get("primary") and shard["primary"] == shard.get("preferred"))
    if settled != len(shards):
        return False, f"{settled} of {len(shards)} shards led by their preferred node"
    return True, "agreed"


def up(options: UpOptions, say: Say, progress: Say | None = None) -> list[NodeRecord]:
    """Start the cluster and wait until it agrees; on any failure stop what was started and raise.

    ``say`` gets the lines to keep; ``progress`` (default ``say``) each change of what is awaited.
    """
    report = say if progress is None else progress
    directory = options.directory
    if not 1 <= options.nodes <= 64:
        raise AdminError(f"-n {options.nodes}: expected 1 to 64 nodes")
    if options.base_port is not None and _ports(options, options.nodes - 1)["health"] > 65535:
        raise AdminError(
            f"--base-port {options.base_port}: {options.nodes} nodes need ports up to "
            f"{_ports(options, options.nodes - 1)['health']}, past 65535"
        )
    directory.mkdir(parents=True, exist_ok=True)
    previous = read_state(directory)
    if previous is not None:
        alive = [record for record in previous if running(record, directory)]
        if alive:
            listed = ", ".join(f"{record.node} (pid {record.pid})" for record in alive)
            raise AdminError(
                f"{directory} already runs a cluster: {listed}; "
                f"stop it first with: aegis cluster down --dir {directory}"
            )
        say(f"{directory}: the cluster recorded there is no longer running; starting a new one")
    for index in range(options.nodes):  # every chosen port, before any node starts
        _check_free(_host(options, index), _ports(options, index))
    settings = _write_settings(directory, options)
    records: list[NodeRecord] = []
    try:
        first = _launch(options, 0, settings, None)
        records.append(first.record)
        _write_state(directory, records)
        _wait_ready(first, options.timeout)
        others = []
        for index in range(1, options.nodes):
            others.append(_launch(options, index, settings, first.record.gossip))
            records.append(others[-1].record)
            _write_state(directory, records)  # each PID recorded as soon as it exists, for `down`
        for launched in others:
            _wait_ready(launched, options.timeout)
        _write_state(directory, records)
        report(f"{options.nodes} nodes serving; waiting for them to agree")
        _wait_agreement(records, options, report)
    except BaseException:
        if records:
            say("start failed; stopping the nodes started")
            stop(directory, records, 10.0, say)
            (directory / STATE_FILE).unlink(missing_ok=True)
        raise
    return records


def _wait_agreement(records: list[NodeRecord], options: UpOptions, report: Say) -> None:
    deadline = time.monotonic() + options.timeout
    # The nodes inherit this environment, and AEGIS_AUTH_TOKEN there overrides cluster.toml.
    token = os.environ.get("AEGIS_AUTH_TOKEN") or options.token
    reported = ""
    while True:
        agreed, progress = _agreement(records, token)
        if agreed:
            return
        if progress != reported:
            report(f"waiting for {len(records)} nodes to agree: {progress}")
            reported = progress
        if time.monotonic() >= deadline:
            raise AdminError(
                f"the nodes did not agree within {options.timeout:g}s ({progress}); logs: "
                + ", ".join(record.log for record in records)
            )
        time.sleep(0.1)


# -- down ----------------------------------------------------------------------------------------------


def _reap(pid: int) -> None:
    """Collect the exit status when the daemon is our child (``up`` and ``down`` in one process, as in tests)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _signal(pid: int, number: int) -> bool:
    """Send a signal; False when the process exited since it was last seen running."""
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        return False
    return True


def stop(directory: Path, records: list[NodeRecord], timeout: float, say: Say) -> list[dict[str, Any]]:
    """SIGTERM each recorded daemon still running, SIGKILL those left after ``timeout``; what happened to each."""
    outcome: dict[str, dict[str, Any]] = {}
    for record in records:
        entry: dict[str, Any] = {"node": record.node, "pid": record.pid, "stopped": "not running"}
        if running(record, directory) and _signal(record.pid, signal.SIGTERM):
            entry["stopped"] = "SIGTERM"
        outcome[record.node] = entry
    deadline = time.monotonic() + timeout
    signalled = [record for record in records if outcome[record.node]["stopped"] == "SIGTERM"]
    while True:
        for record in signalled:
            _reap(record.pid)
        left = [record for record in signalled if running(record, directory)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for record in left:
        if _signal(record.pid, signal.SIGKILL):
            outcome[record.node]["stopped"] = "SIGKILL"
    kill_deadline = time.monotonic() + 5.0
    while left and time.monotonic() < kill_deadline:
        for record in left:
            _reap(record.pid)
        left = [record for record in left if running(record, directory)]
        time.sleep(0.02)
    _report(records, outcome, timeout, say)
    return list(outcome.values())


def _report(records: list[NodeRecord], outcome: dict[str, dict[str, Any]], timeout: float, say: Say) -> None:
    for record in records:
        how = outcome[record.node]["stopped"]
        if how == "SIGTERM":
            say(f"stopped {record.node} (pid {record.pid}): drained after SIGTERM")
        elif how == "SIGKILL":
            say(f"stopped {record.node} (pid {record.pid}): killed, still running {timeout:g}s after SIGTERM")
        else:
            say(f"{record.node} (pid {record.pid}) was not running")


def down(directory: Path, timeout: float, say: Say) -> list[dict[str, Any]]:
    records = read_state(directory)
    if records is None:
        raise AdminError(f"no cluster recorded in {directory} ({STATE_FILE} not found); nothing to stop")
    stopped = stop(directory, records, timeout, say)
    (directory / STATE_FILE).unlink()
    say(f"data and logs kept in {directory}")
    return stopped
