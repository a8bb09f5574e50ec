"""The ``aegis`` command: admin subcommands here, everything else runs a node (aegiskv.server.cli).

::

    aegis cluster up -n 3 [--dir D] [--base-port P] ... [-- node flags]
    aegis cluster down [--dir D]
    aegis status | shards | hotkeys            [--host H --port P | --seed H:P | --dir D] [--json]
    aegis info NODE [SECTION ...]              (same options)
    aegis drain NODE [--wait SECONDS]          (same options)

Exit codes: 0 done, 1 the command failed (one line on stderr says why), 2 a bad command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from aegiskv.admin import commands, render, runner
from aegiskv.admin.nodes import AdminError, Target

ADMIN_COMMANDS = frozenset({"cluster", "status", "shards", "info", "hotkeys", "drain"})
DEFAULT_DIR = "aegis-cluster"


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"aegis: command line: {message}", file=sys.stderr, flush=True)
        sys.exit(2)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return int(text)


def _connection_options() -> _OneLineParser:
    shared = _OneLineParser(add_help=False)
    group = shared.add_argument_group("reaching the cluster (the native port of any node)")
    group.add_argument("--host", default=None, help="a node's host (default 127.0.0.1)")
    group.add_argument("--port", type=_port, default=None, help="its native port (default 7700)")
    group.add_argument(
        "--seed",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a node to start from; repeatable",
    )
    group.add_argument("--dir", default=None, help="a directory `aegis cluster up` made: its nodes and token")
    group.add_argument("--token", default=None, help="the cluster's auth token (default: $AEGIS_AUTH_TOKEN)")
    group.add_argument("--tls-ca", default=None, metavar="FILE", help="PEM CA to trust: turns TLS on")
    group.add_argument("--tls-cert", default=None, metavar="FILE", help="client certificate, if the nodes ask for one")
    group.add_argument("--tls-key", default=None, metavar="FILE", help="key of --tls-cert")
    group.add_argument("--timeout", type=_positive, default=2.0, help="seconds to wait for each node (default 2)")
    shared.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return shared


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="aegis", description="Run and inspect an AegisKV cluster.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    connection = _connection_options()

    cluster = sub.add_parser("cluster", help="a local cluster of aegis daemons, for trying AegisKV and for tests")
    cluster_sub = cluster.add_subparsers(dest="action", required=True, parser_class=_OneLineParser)
    up = cluster_sub.add_parser(
        "up",
        help="start N nodes on 127.0.0.1 and wait until they agree",
        description="Start N aegis daemons in the background, with signed gossip, and wait until every node "
        "agrees on the shard map. Flags after -- go to every node (aegis --help lists them).",
    )
    up.add_argument("-n", "--nodes", type=_count, default=3, help="how many nodes (default 3)")
    up.add_argument("--dir", default=DEFAULT_DIR, help=f"the cluster's directory (default ./{DEFAULT_DIR})")
    up.add_argument(
        "--base-port",
        type=_port,
        default=None,
        help=f"node i listens on P+{runner.PORT_STRIDE}i: native +0, gossip +1, cluster +2, RESP +3, health +4 "
        "(default: free ports the system picks)",
    )
    up.add_argument("--spread-hosts", action="store_true", help="node i on 127.0.0.(i+1) instead of all on 127.0.0.1")
    up.add_argument("--replication-factor", type=_count, default=None, help="copies of each shard (node default: 3)")
    up.add_argument("--shards", type=_count, default=None, help="shards the slots are split into (node default: 256)")
    up.add_argument("--token", default=None, help="require this auth token on every node (kept in the dir, mode 0600)")
    up.add_argument("--timeout", type=_positive, default=60.0, help="seconds to wait for the nodes (default 60)")
    up.add_argument("--json", action="store_true", help="print JSON instead of a table")
    down = cluster_sub.add_parser("down", help="stop the nodes `cluster up` started in --dir, by their PIDs")
    down.add_argument("--dir", default=DEFAULT_DIR, help=f"the cluster's directory (default ./{DEFAULT_DIR})")
    down.add_argument(
        "--timeout", type=_positive, default=30.0, help="seconds after SIGTERM before SIGKILL (default 30)"
    )
    down.add_argument("--json", action="store_true", help="print JSON instead of lines")

    status = sub.add_parser(
        "status", parents=[connection], help="every node: state, shards, keys, memory, ops/s, replication lag"
    )
    status.add_argument(
        "--interval", type=_positive, default=1.0, help="seconds over which ops/s is measured (default 1)"
    )
    sub.add_parser("shards", parents=[connection], help="each shard's slots, primary and followers")
    info = sub.add_parser("info", parents=[connection], help="INFO of one node")
    info.add_argument("node", help="node id (as `aegis status` shows it) or host:port")
    info.add_argument("sections", nargs="*", help="sections, as Redis's INFO takes them (default: the default ones)")
    hotkeys = sub.add_parser("hotkeys", parents=[connection], help="the hottest keys over every node")
    hotkeys.add_argument("--top", type=_count, default=10, help="how many keys (default 10)")
    drain = sub.add_parser("drain", parents=[connection], help="drain a node: it leaves the cluster and stops")
    drain.add_argument("node", help="node id (as `aegis status` shows it) or host:port")
    drain.add_argument(
        "--wait",
        type=_positive,
        nargs="?",
        const=30.0,
        default=None,
        metavar="SECONDS",
        help="wait until the other nodes no longer list it (default 30 s when given without a number)",
    )
    return parser


def _target(args: argparse.Namespace) -> Target:
    seeds = [seed.strip() for given in args.seed for seed in given.split(",") if seed.strip()]
    # As the nodes rank them: a flag, then the environment, then the settings file (cluster.toml).
    token = args.token or os.environ.get("AEGIS_AUTH_TOKEN") or None
    if args.dir is not None:
        directory = Path(args.dir)
        records = runner.read_state(directory)
        if records is None:
            raise AdminError(f"no cluster recorded in {directory} ({runner.STATE_FILE} not found)")
        seeds += [record.native for record in records if record.native]
        if token is None:
            token = runner.recorded_token(directory)
    if args.host is not None or args.port is not None or not seeds:
        seeds.insert(0, f"{args.host or '127.0.0.1'}:{args.port or 7700}")
    for seed in seeds:
        host, sep, port = seed.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise AdminError(f"--seed {seed!r}: expected host:port")
    return Target(seeds, token, args.tls_ca, args.tls_cert, args.tls_key, args.timeout)


def _cluster_up(args: argparse.Namespace, node_args: list[str]) -> int:
    options = runner.UpOptions(
        directory=Path(args.dir),
        nodes=args.nodes,
        base_port=args.base_port,
        spread_hosts=args.spread_hosts,
        replication_factor=args.replication_factor,
        shards=args.shards,
        token=args.token,
        timeout=args.timeout,
        node_args=node_args,
    )
    with render.progress(f"starting {options.nodes} nodes in {options.directory}") as report:
        records = runner.up(options, render.note, report)
    if args.json:
        render.as_json({"directory": str(options.directory), "nodes": [vars(record) for record in records]})
        return 0
    render.table(
        ("node", "pid", "native", "RESP", "health", "log"),
        [(r.node, r.pid, r.native, r.resp, r.health, r.log) for r in records],
        title=f"{len(records)} nodes agree; cluster in {options.directory}",
    )
    first = records[0]
    resp_host, _, resp_port = first.resp.rpartition(":")
    print(f"status:     aegis status --dir {options.directory}")
    print(f"redis-cli:  redis-cli -c -h {resp_host} -p {resp_port}")
    print(f"dashboard:  http://{first.health}/ui")
    print(f"stop:       aegis cluster down --dir {options.directory}")
    return 0


def _cluster_down(args: argparse.Namespace) -> int:
    say = (lambda _line: None) if args.json else render.note
    stopped = runner.down(Path(args.dir), args.timeout, say)
    if args.json:
        render.as_json({"directory": args.dir, "stopped": stopped})
    return 0


def _show(args: argparse.Namespace, data: dict[str, Any], printer: Callable[[dict[str, Any]], None]) -> int:
    if args.json:
        render.as_json(data)
    else:
        printer(data)
    return 0


def _run(args: argparse.Namespace, node_args: list[str]) -> int:
    if args.command == "cluster":
        return _cluster_up(args, node_args) if args.action == "up" else _cluster_down(args)
    target = _target(args)
    if args.command == "status":
        return _show(args, commands.status_data(target, args.interval), commands.print_status)
    if args.command == "shards":
        return _show(args, commands.shards_data(target), commands.print_shards)
    if args.command == "info":
        return _show(args, commands.info_data(target, args.node, args.sections), commands.print_info)
    if args.command == "hotkeys":
        return _show(args, commands.hotkeys_data(target, args.top), commands.print_hotkeys)
    say = (lambda _line: None) if args.json else render.note
    result = commands.drain(target, args.node, args.wait, say)
    if args.json:
        render.as_json(result)
    return 0


def admin_main(argv: Sequence[str]) -> int:
    args_list = list(argv)
    node_args: list[str] = []
    if args_list[:2] == ["cluster", "up"] and "--" in args_list:
        split = args_list.index("--")
        args_list, node_args = args_list[:split], args_list[split + 1 :]
    args = build_parser().parse_args(args_list)
    if node_args and not (args.command == "cluster" and args.action == "up"):
        build_parser().error("flags after -- are for `aegis cluster up` only")
    try:
        return _run(args, node_args)
    except AdminError as error:
        print(f"aegis: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("aegis: interrupted", file=sys.stderr, flush=True)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] and args[0] in ADMIN_COMMANDS:
        return admin_main(args)
    if args[:1] and not args[0].startswith("-") and args[0] != "plugins":
        # A node takes flags only: a bare word is a mistyped command, not a node setting.
        known = ", ".join(sorted(ADMIN_COMMANDS | {"plugins"}))
        print(
            f"aegis: command line: unknown command {args[0]!r} (commands: {known}; flags run a node)", file=sys.stderr
        )
        return 2
    from aegiskv.server import cli

    return cli.main(args)
