"""Benchmark: the Python cost of one RESP request, without sockets, against a git ref.

Not a test. The socket benchmarks (resp_vs_redis.py) swing by 10-30% between
runs on these shared machines, and by up to 2x for the Python share of the
work, which hides changes of a few percent. This one runs the server's own
request path -- reactor read handler, RESP parser, pipeline, command handler,
node, backend, reply, send -- in one process, with a socket object whose
``recv`` returns a prepared buffer and whose ``send`` swallows the reply, so
what it times is the Python work per request and nothing else.

Shapes: GET and SET (100-byte values), 1 or 16 commands per read, one hot key
or random keys over 100,000 stored ones (the cache misses of a real keyspace).
Each figure is the best of several rounds (the least disturbed one).

With ``--against REF`` the same measurement runs on a worktree of REF in a
subprocess, interleaved with the working tree, and the table shows the ratio.
With ``--installed PYTHON`` it also measures the aegiskv installed for that
interpreter -- ``.tox/py311/bin/python`` holds the build compiled by mypyc
(setup.py) -- against the working tree's sources run interpreted; given
twice (two compiled builds, before and after a change) it measures both.

With ``--wal write`` (or ``fsync``) the node keeps a write-ahead log (the
snapshot backend, as ``aegis --wal write``): the log's records are written out
and held replies released at the end of each loop turn, as the server does
(an fsync runs in a worker and is not timed).

With ``--instructions`` it counts instructions per request instead of timing
(valgrind's cachegrind, the difference between a short and a longer run, so
start-up and the keyspace fill cancel out). Counts repeat to within a few
instructions from run to run, where the time of the same code moved by up to
2x between processes on these machines; they do not show cache misses, so the
random-key shapes cost more in time than their counts suggest. About half a
minute per shape and contender; ``--shapes get:1:random,set:1:random`` narrows.

    python bench/hot_path.py [--against HEAD~1] [--installed .tox/py311/bin/python] [--rounds 9]
                             [--instructions] [--shapes OP:PER_READ:KEYS,...] [--wal write]

Writes bench/results/hot_path.txt and .json (hot_path_instructions.* with --instructions;
a ``_wal`` suffix with --wal).
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from results_md import render_or_complain, write_text_section  # bench/results_md.py

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SHAPES = [(op, pipeline, keys) for op in ("get", "set") for pipeline in (1, 16) for keys in ("hot", "random")]
VALUE = b"v" * 100
KEYSPACE = 100_000


def request(op: str, key: bytes) -> bytes:
    if op == "get":
        return b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(key), key)
    return b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(key), key, len(VALUE), VALUE)


class ScriptedSocket:
    """Stands in for a client socket: recv() hands out prepared reads, send() takes everything."""

    family = 0

    def __init__(self, reads: list[bytes]) -> None:
        self._reads = itertools.cycle(reads)

    def recv(self, _size: int) -> bytes:
        return next(self._reads)

    def send(self, data: bytes) -> int:
        return len(data)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 1)

    def fileno(self) -> int:
        return -1


class NoPoller:
    """Registration is for epoll; nothing polls here."""

    handlers: dict[int, object] = {}

    def register(self, *_args: object) -> None:
        pass

    modify = register
    unregister = register


def measure(op: str, pipeline: int, keys: str, rounds: int, requests: int, source: bool, wal: str = "off") -> float:
    """Best microseconds per request over ``rounds`` rounds, in this process's aegiskv.

    ``source``: the aegiskv sources in the working directory, else the installed package.
    ``wal``: the node's --wal mode.
    """
    if source:
        sys.path.insert(0, os.getcwd())
    from aegiskv.net.reactor import Transport
    from aegiskv.server import settings as config
    from aegiskv.server.daemon import build_server

    data_dir = tempfile.mkdtemp(prefix="aegis-hot-path-")
    atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
    settings = config.build(
        environ={},
        flags={
            "data_dir": data_dir,
            "gossip": "off",
            "bind": "127.0.0.1:0",
            "resp_bind": "127.0.0.1:0",
            "health_addr": "127.0.0.1:0",
            "log_level": "warn",
            "wal": wal,
        },
    )
    server, _data_dir = build_server(settings)
    server.start()
    reactor = server.reactor
    reactor.poller = NoPoller()  # type: ignore[assignment]
    if hasattr(reactor, "selector"):  # older commits' name for it (--against)
        reactor.selector = reactor.poller
    rng = random.Random(7)
    all_keys = [b"key:%012d" % number for number in range(KEYSPACE)]
    for key in all_keys:
        server.node.put(key, VALUE)
    if keys == "hot":
        reads = [request(op, all_keys[0]) * pipeline]
    else:
        reads = [b"".join(request(op, rng.choice(all_keys)) for _ in range(pipeline)) for _ in range(20_000)]
    assert server.resp_listener is not None
    scripted = ScriptedSocket(reads)
    connection = Transport(reactor, scripted, ("127.0.0.1", 2), server.resp_listener, 1)  # type: ignore[arg-type]
    # A plain socket is read and written through its descriptor (os.read/os.write);
    # this one has none, so the connection is handed the scripted calls instead.
    connection._recv = scripted.recv
    connection._send_bytes = scripted.send
    protocol = server.resp_listener.options.protocol_factory()
    if hasattr(connection, "attach"):
        connection.attach(protocol)
    else:  # older commits (--against)
        connection.protocol = protocol
        protocol.connection_made(connection)
    handle_read = connection.handle_read
    flush = reactor._flush_dirty
    # What the loop runs at the end of each turn: with a log, its write-out and the
    # release of the replies held for it (aegiskv.server.durability).
    end_of_turn = list(reactor.end_of_turn)
    turns = max(1, requests // pipeline)
    for _ in range(turns // 10):  # warm up
        handle_read()
        for hook in end_of_turn:
            hook()
        flush()
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(turns):
            handle_read()
            for hook in end_of_turn:
                hook()
            flush()
        best = min(best, (time.perf_counter() - started) / (turns * pipeline))
    return best * 1e6


class Contender(NamedTuple):
    python: str
    directory: Path  # the working directory of the measuring process
    source: bool  # import aegiskv from ``directory`` (else the interpreter's installed one)
    wal: str = "off"  # the node's --wal mode


def measure_in(contender: Contender, shape: tuple[str, int, str], rounds: int, requests: int) -> float:
    """Run :func:`measure` for ``shape`` in a fresh interpreter (pinned to one CPU if possible)."""
    op, pipeline, keys = shape
    command = [contender.python, str(Path(__file__).resolve()), "--one", op, str(pipeline), keys]
    command += ["--rounds", str(rounds), "--requests", str(requests), "--wal", contender.wal]
    if not contender.source:
        command.append("--installed-package")
    if (os.cpu_count() or 1) >= 2:
        command = ["taskset", "-c", "1", *command]
    output = subprocess.run(command, cwd=contender.directory, capture_output=True, text=True, check=True).stdout
    return float(output.strip().splitlines()[-1])


def handled(requests: int, pipeline: int) -> int:
    """Requests :func:`measure` runs for one round of ``requests`` (its warm-up included)."""
    turns = max(1, requests // pipeline)
    return (turns // 10 + turns) * pipeline


def instructions_in(contender: Contender, shape: tuple[str, int, str]) -> float:
    """Instructions per request for ``shape``: two runs under cachegrind, the difference divided."""
    op, pipeline, keys = shape
    sizes = (4_000, 24_000)
    counts = []
    for requests in sizes:
        command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
        command += [contender.python, str(Path(__file__).resolve()), "--one", op, str(pipeline), keys]
        command += ["--rounds", "1", "--requests", str(requests), "--wal", contender.wal]
        if not contender.source:
            command.append("--installed-package")
        environment = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dictionary layouts in both runs
        result = subprocess.run(command, cwd=contender.directory, capture_output=True, text=True, env=environment)
        found = re.search(r"I\s+refs:\s+([\d,]+)", result.stderr)
        if result.returncode != 0 or found is None:
            raise RuntimeError(f"cachegrind run failed:\n{result.stderr[-2000:]}")
        counts.append(int(found.group(1).replace(",", "")))
    return (counts[1] - counts[0]) / (handled(sizes[1], pipeline) - handled(sizes[0], pipeline))


def installed_build(python: str, directory: Path) -> str:
    code = "import aegiskv; print(aegiskv.build())"
    result = subprocess.run([python, "-c", code], cwd=directory, capture_output=True, text=True)
    return result.stdout.strip()


SCRIPT = "hot_path.py"
SECTION_TITLE = "Hot path without sockets"
SECTION_STEMS = ["hot_path", "hot_path_instructions"]
SECTION_INTRO = (
    "The Python work of one RESP request without sockets (read handler, parser, pipeline, handler, "
    "node, backend, reply), in microseconds (`hot_path`) or in instructions counted by valgrind "
    "(`hot_path_instructions`, `--instructions`), for a reference commit, the working tree and the "
    "installed compiled build. Instruction counts are the steadier measure on these machines. Run: "
    "`python bench/hot_path.py --against <ref> --installed .tox/py311/bin/python`."
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", help="git ref to compare with (checked out in a temporary worktree)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=60_000, help="requests per round")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved repetitions per shape (best kept)")
    parser.add_argument(
        "--installed",
        metavar="PYTHON",
        action="append",
        default=[],
        help="also measure the aegiskv installed for PYTHON (may be given more than once)",
    )
    parser.add_argument("--instructions", action="store_true", help="count instructions (valgrind) instead of time")
    parser.add_argument("--shapes", help="only these shapes, e.g. get:1:random,set:16:hot")
    parser.add_argument("--wal", choices=("off", "write", "fsync"), default="off", help="the node's --wal mode")
    parser.add_argument("--one", nargs=3, metavar=("OP", "PIPELINE", "KEYS"), help=argparse.SUPPRESS)
    parser.add_argument("--installed-package", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from bench/results/"
    )
    args = parser.parse_args()
    if args.render:
        return render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    if args.one:
        op, pipeline, keys = args.one
        source = not args.installed_package
        print(f"{measure(op, int(pipeline), keys, args.rounds, args.requests, source, args.wal):.4f}")
        return 0

    # The first contender is the reference the ratios are taken against.
    contenders: dict[str, Contender] = {}
    worktree = None
    if args.against:
        worktree = Path(tempfile.mkdtemp(prefix="aegis-hot-path-ref-"))
        subprocess.run(["git", "worktree", "add", "--detach", "-f", str(worktree), args.against], cwd=ROOT, check=True)
        contenders[args.against] = Contender(sys.executable, worktree, True, args.wal)
    contenders["working tree"] = Contender(sys.executable, ROOT, True, args.wal)
    if args.installed:
        # An empty directory to run in: nothing there can shadow a module.
        empty = Path(tempfile.mkdtemp(prefix="aegis-hot-path-installed-"))
        atexit.register(shutil.rmtree, empty, ignore_errors=True)
    for number, installed in enumerate(args.installed, start=1):
        python = os.path.abspath(installed)  # not resolve(): a venv's python is a symlink to keep
        name = f"installed ({installed_build(python, empty)})"
        if len(args.installed) > 1:
            name = f"installed {number} ({installed_build(python, empty)})"
        contenders[name] = Contender(python, empty, False, args.wal)
    shapes = SHAPES
    if args.shapes:
        wanted = [tuple(item.split(":")) for item in args.shapes.split(",")]
        shapes = [shape for shape in SHAPES if (shape[0], str(shape[1]), shape[2]) in wanted]
        if len(shapes) != len(wanted):
            parser.error(f"--shapes: each of OP:PER_READ:KEYS must be one of {SHAPES}")
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind (apt-get install valgrind)")
    try:
        rows = []
        for shape in shapes:
            figures: dict[str, float] = {}
            for _ in range(1 if args.instructions else args.repeat):
                for name, contender in contenders.items():
                    if args.instructions:
                        value = instructions_in(contender, shape)
                    else:
                        value = measure_in(contender, shape, args.rounds, args.requests)
                    figures[name] = min(figures.get(name, float("inf")), value)
            unit = "instructions_per_request" if args.instructions else "us_per_request"
            rows.append({"op": shape[0], "pipeline": shape[1], "keys": shape[2], unit: figures})
            print(shape, figures, flush=True)
    finally:
        if worktree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)

    def short(ref: str) -> str:
        result = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True)
        return result.stdout.strip()

    changed = subprocess.run(["git", "status", "--porcelain", "aegiskv"], cwd=ROOT, capture_output=True, text=True)
    tree = short("HEAD") + (" plus uncommitted changes" if changed.stdout.strip() else "")
    names = list(contenders)
    reference, others = names[0], names[1:]
    width = max(14, *(len(name) for name in names))
    if args.instructions:
        what = "Instructions per RESP request (valgrind cachegrind, a 24,000 minus a 4,000 request run)"
        how = ""
    else:
        what = "Python microseconds per RESP request"
        how = f"; best of {args.rounds} rounds x {args.repeat} interleaved runs, pinned to CPU 1"
    if args.wal != "off":
        what += f", --wal {args.wal}"
    lines = [
        f"{what}, no sockets (bench/hot_path.py), working tree at {tree}"
        + (f" against {args.against} ({short(args.against)})" if args.against else "")
        + f"{how}; ratios to {reference}",
        f"{'op':4} {'per read':>8} {'keys':>7} "
        + " ".join(f"{name:>{width}}" for name in names)
        + "".join(f"   ratio {index + 2}" for index in range(len(others))),
    ]
    for row in rows:
        figures = row["instructions_per_request" if args.instructions else "us_per_request"]
        line = f"{row['op']:4} {row['pipeline']:>8} {row['keys']:>7} " + " ".join(
            f"{figures[name]:>{width}.0f}" if args.instructions else f"{figures[name]:>{width}.2f}" for name in names
        )
        line += "".join(f"   {figures[name] / figures[reference]:7.2f}" for name in others)
        lines.append(line)
    if len(args.installed) > 1:
        lines += [f"installed {number}: {python}" for number, python in enumerate(args.installed, start=1)]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stem = ("hot_path_instructions" if args.instructions else "hot_path") + ("_wal" if args.wal != "off" else "")
    (RESULTS / f"{stem}.txt").write_text(text)
    report = {"against": args.against, "installed": args.installed, "wal": args.wal, "rows": rows}
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
