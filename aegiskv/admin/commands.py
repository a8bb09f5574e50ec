"""``aegis status``, ``shards``, ``info``, ``hotkeys`` and ``drain``: what each asks and what it prints.

Each command builds plain data first (what ``--json`` prints), then renders that data as a
table; so the JSON and the table never disagree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aegiskv.admin import hotkeys as hot
from aegiskv.admin import render
from aegiskv.admin.nodes import AdminError, ClusterView, Target, discover, each_node, explain, node_info
from aegiskv.client import AegisError

_STATUS_SECTIONS = ("server", "memory", "stats", "keyspace", "replication")


def _human_bytes(size: object) -> str | None:
    if not isinstance(size, int):
        return None
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f}{unit}"
    return f"{size}B"


def _shard_roles(view: ClusterView) -> dict[str, tuple[int, int]]:
    """node id -> (shards it leads, shards it follows), from the one map the view holds."""
    roles = {node: [0, 0] for node in view.addresses}
    for shard in view.topology.get("shards", []):
        primary = view.primary(shard)
        for member in shard.get("replicas", []) or ([primary] if primary else []):
            counts = roles.setdefault(member, [0, 0])
            counts[0 if member == primary else 1] += 1
    return {node: (lead, follow) for node, (lead, follow) in roles.items()}


def _commands_processed(info: dict[str, dict[str, Any]]) -> int:
    value = info.get("stats", {}).get("total_commands_processed", 0)
    return value if isinstance(value, int) else 0


def moves_of(node: str, replication: dict[str, Any]) -> list[dict[str, Any]]:
    """The shard copies ``node`` is sending, from its INFO replication's ``aegis_move_out_N`` lines
    (aegiskv.server.replicas: ``shard=..,to=..,state=..,keys=..,keys_total=..,bytes=..``)."""
    moves = []
    for name, value in replication.items():
        if not name.startswith("aegis_move_out_") or not isinstance(value, str):
            continue
        fields = dict(part.split("=", 1) for part in value.split(",") if "=" in part)
        try:
            moves.append(
                {
                    "shard": int(fields["shard"]),
                    "from": node,
                    "to": fields["to"],
                    "state": fields["state"],
                    "keys": int(fields["keys"]),
                    "keys_total": int(fields["keys_total"]),
                    "bytes": int(fields["bytes"]),
                }
            )
        except (KeyError, ValueError):
            continue  # a node of another version: its line is not this shape
    return moves


def status_data(target: Target, interval: float) -> dict[str, Any]:
    """Every node of the map with its figures; ops/s is measured over ``interval`` seconds.

    There is no per-second counter on the node, so two INFO readings ``interval`` apart give the
    rate; each reading is itself one command, which is taken off.
    """
    view = discover(target)
    first = each_node(view.addresses, lambda address: node_info(target, address, "stats"))
    started = time.monotonic()
    time.sleep(interval)
    second = each_node(view.addresses, lambda address: node_info(target, address, *_STATUS_SECTIONS))
    elapsed = time.monotonic() - started
    roles = _shard_roles(view)
    rows = []
    moves: list[dict[str, Any]] = []
    for node, address in sorted(view.addresses.items()):
        lead, follow = roles.get(node, (0, 0))
        row: dict[str, Any] = {
            "node": node,
            "state": "up",
            "address": address,
            "shards_primary": lead,
            "shards_follower": follow,
            "keys": None,
            "used_memory": None,
            "maxmemory": None,
            "ops_per_sec": None,
            "replication_lag_changes": None,
            "error": None,
        }
        info = second[node]
        if isinstance(info, Exception):
            row.update(state="unreachable", error=explain(info, address))
            rows.append(row)
            continue
        before = first[node]
        if not isinstance(before, Exception):
            done = _commands_processed(info) - _commands_processed(before) - 1
            row["ops_per_sec"] = round(max(0, done) / elapsed, 1)
        database = info.get("keyspace", {}).get("db0", {})
        memory = info.get("memory", {})
        lag = info.get("replication", {}).get("aegis_max_follower_lag_changes")
        moves += moves_of(node, info.get("replication", {}))
        row.update(
            keys=database.get("keys", 0) if isinstance(database, dict) else 0,
            used_memory=memory.get("used_memory"),
            maxmemory=memory.get("maxmemory") or None,  # 0: no limit
            replication_lag_changes=lag if isinstance(lag, int) else None,
        )
        rows.append(row)
    shards = view.topology.get("shards", [])
    return {
        "source": view.source,
        "epoch": view.topology.get("epoch"),
        "shards": len(shards),
        "shards_without_primary": sum(1 for shard in shards if not view.primary(shard)),
        "nodes": rows,
        # Shard copies under way or waiting, as the sending nodes report them: empty when no move is on.
        "moves": sorted(moves, key=lambda move: (move["shard"], move["to"])),
    }


def print_status(data: dict[str, Any]) -> None:
    columns = ("node", "state", "address", "shards p/f", "keys", "memory", "ops/s", "repl lag")
    rows = []
    for node in data["nodes"]:
        limit = _human_bytes(node["maxmemory"]) or "none"
        memory = None if node["used_memory"] is None else f"{_human_bytes(node['used_memory'])}/{limit}"
        rows.append(
            (
                node["node"],
                node["state"],
                node["address"],
                f"{node['shards_primary']}/{node['shards_follower']}",
                node["keys"],
                memory,
                node["ops_per_sec"],
                node["replication_lag_changes"],
            )
        )
    title = f"epoch {data['epoch']}, {data['shards']} shards, {len(data['nodes'])} nodes (map of {data['source']})"
    render.table(columns, rows, title=title)
    if data["shards_without_primary"]:
        render.note(f"{data['shards_without_primary']} shards have no primary (an election, or too few nodes)")
    for node in data["nodes"]:
        if node["error"]:
            render.note(f"{node['node']}: {node['error']}")
    if data["moves"]:
        print_moves(data["moves"])


def print_moves(moves: list[dict[str, Any]]) -> None:
    rows = []
    for move in moves:
        total = move["keys_total"]
        progress = f"{move['keys']}/{total} keys ({100 * move['keys'] // total}%)" if total else "-"
        rows.append((move["shard"], move["from"], move["to"], move["state"], progress, _human_bytes(move["bytes"])))
    render.table(("shard", "from", "to", "state", "progress", "sent"), rows, title=f"{len(moves)} moves in flight")


def shards_data(target: Target) -> dict[str, Any]:
    view = discover(target)
    shards = []
    for shard in view.topology.get("shards", []):
        primary = view.primary(shard)
        slots = shard.get("slots", [])
        shards.append(
            {
                "shard": shard.get("shard"),
                "slots": slots,
                "primary": primary,
                "followers": [member for member in shard.get("replicas", []) if member != primary],
                "preferred": shard.get("preferred"),
                # A move in flight: members still copying the shard, and those handing it over.
                "learners": shard.get("learners", []),
                "leaving": shard.get("leaving", []),
            }
        )
    return {"source": view.source, "epoch": view.topology.get("epoch"), "shards": shards}


def print_shards(data: dict[str, Any]) -> None:
    moving = any(shard["learners"] or shard["leaving"] for shard in data["shards"])
    rows = []
    for shard in data["shards"]:
        slots = shard["slots"]
        slot_text = f"{slots[0]}-{slots[1]}" if len(slots) == 2 else ",".join(map(str, slots))
        row: tuple[Any, ...] = (shard["shard"], slot_text, shard["primary"], ", ".join(shard["followers"]) or None)
        if moving:  # the columns of a move only while one is in flight
            row += (", ".join(shard["learners"]) or None, ", ".join(shard["leaving"]) or None)
        rows.append(row)
    columns = ("shard", "slots", "primary", "followers", *(("copying to", "leaving") if moving else ()))
    render.table(columns, rows, title=f"epoch {data['epoch']} (map of {data['source']})")


def info_data(target: Target, node: str, sections: list[str]) -> dict[str, Any]:
    view = discover(target)
    node_id, address = view.resolve(node)
    try:
        info = node_info(target, address, *sections)
    except (AegisError, OSError) as error:
        raise AdminError(explain(error, address)) from None
    return {"node": node_id, "address": address, "info": info}


def print_info(data: dict[str, Any]) -> None:
    """As Redis's INFO prints it: ``# Section`` then ``field:value`` lines."""
    blocks = []
    for section, fields in data["info"].items():
        lines = [f"# {section.capitalize()}"]
        for name, value in fields.items():
            if isinstance(value, dict):
                value = ",".join(f"{key}={inner}" for key, inner in value.items())
            lines.append(f"{name}:{value}")
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))


def hotkeys_data(target: Target, top: int) -> dict[str, Any]:
    view = discover(target)
    answers = each_node(view.addresses, lambda address: node_info(target, address, "hotkeys"))
    per_node: dict[str, list[hot.HotKey]] = {}
    nodes = []
    for node, answer in sorted(answers.items()):
        entry: dict[str, Any] = {"node": node, "address": view.addresses[node], "tracked": None, "error": None}
        if isinstance(answer, Exception):
            entry["error"] = explain(answer, view.addresses[node])
        elif not answer.get("hotkeys"):
            entry["error"] = "does not report hot keys"  # a node from before the section existed
        else:
            try:
                entry["tracked"], per_node[node] = hot.parse_fields(answer["hotkeys"])
            except hot.HotKeysFormatError as error:
                entry["error"] = f"unreadable hotkeys section: {error}"
        nodes.append(entry)
    merged = hot.merge(per_node, top)
    keys = [
        {"rank": rank, "key": entry.key, "freq": entry.freq, "nodes": entry.nodes} for rank, entry in enumerate(merged)
    ]
    return {"source": view.source, "nodes": nodes, "keys": keys}


def print_hotkeys(data: dict[str, Any]) -> None:
    rows = [(key["rank"], key["key"], key["freq"], ", ".join(key["nodes"])) for key in data["keys"]]
    render.table(("rank", "key", "freq", "nodes"), rows, title="hot keys, cluster-wide")
    for node in data["nodes"]:
        if node["error"]:
            render.note(f"{node['node']}: {node['error']}")


def drain(target: Target, node: str, wait: float | None, say: Callable[[str], None]) -> dict[str, Any]:
    """Ask ``node`` to drain; with ``wait``, until the other nodes' maps no longer list it."""
    view = discover(target)
    node_id, address = view.resolve(node)
    try:
        with target.client(address) as client:
            client.drain(address)
    except (AegisError, OSError) as error:
        raise AdminError(f"drain refused: {explain(error, address)}") from None
    say(f"{node_id} ({address}) is draining")
    result: dict[str, Any] = {"node": node_id, "address": address, "draining": True, "left": None}
    if wait is None:
        return result
    others = {other: where for other, where in view.addresses.items() if other != node_id}
    deadline = time.monotonic() + wait
    if not others:  # the last node: nobody else to see it leave; wait for it to stop answering
        while _answers(target, address):
            if time.monotonic() >= deadline:
                raise AdminError(f"{node_id} still answers after {wait:g}s")
            time.sleep(0.1)
        result["left"] = True
        say(f"{node_id} stopped; it was the last node")
        return result
    while True:
        maps = each_node(others, lambda where: _members(target, where))
        listing = [name for name, members in maps.items() if not isinstance(members, Exception) and node_id in members]
        answered = [members for members in maps.values() if not isinstance(members, Exception)]
        if answered and not listing:
            result["left"] = True
            say(f"{node_id} left the cluster; {len(others)} nodes remain")
            return result
        if time.monotonic() >= deadline:
            raise AdminError(
                f"{node_id} is still in the map of {', '.join(sorted(listing)) or 'no node that answers'} "
                f"after {wait:g}s"
            )
        time.sleep(0.1)


def _members(target: Target, address: str) -> set[str]:
    with target.client(address) as client:
        return set(client.topology(server=address).get("nodes", {}))


def _answers(target: Target, address: str) -> bool:
    try:
        with target.client(address) as client:
            client.ping(address)
    except (AegisError, OSError):
        return False
    return True
