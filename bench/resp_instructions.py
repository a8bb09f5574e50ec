"""Benchmark: instructions per RESP request over a real socket, revision against revision.

Not a test. Each revision given is built into a venv of its own (bench/baseline.py,
compiled and/or interpreted, cached under /tmp/aegis-bench-baselines) and a lone
node of it (``--gossip off``) is run under valgrind's cachegrind (``--cache-sim=no``:
an instruction count, nothing simulated) while redis-benchmark sends it a fixed
number of requests of one shape. The same shape is run twice, with ``--small`` and
``--large`` requests, and the difference of the two totals over the difference of
the request counts is the cost of one request: start-up, imports and shutdown cancel
out. Everything the node runs counts: the reactor, the parser, the pipeline, the
handler, the backend, the reply, the system-call wrappers.

Why instructions: on the shared 2-core machines here a timed run moves by 10-30%
from one run to the next, far more than the 3% a before/after comparison must
resolve (issue 21: the reorganisation must not slow the request path). Instruction
counts move by about 1%: the timers the node runs while idle (expiry sampling,
the sweep) add what they cost per second of the run, and a run under valgrind
is slower than a real one. They do not show cache misses or system-call time,
which a timed benchmark (bench/resp_vs_redis.py) does.

Writes bench/results/resp_instructions.txt and .json, and its RESULTS.md section.

    python bench/resp_instructions.py --revs 139741a,HEAD [--builds compiled,interpreted]
        [--shapes get:50:1,get:50:16,set:50:1,set:50:16] [--small 2000] [--large 42000]
    python bench/resp_instructions.py --render
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from baseline import Baseline, build_baseline  # bench/baseline.py
from results_md import RESULTS, render_or_complain, write_text_section  # bench/results_md.py

SCRIPT = "resp_instructions.py"
SECTION_TITLE = "Instructions per RESP request, revision against revision"
SECTION_STEMS = ["resp_instructions"]
SECTION_INTRO = (
    "Instructions one RESP request costs a lone node over a real socket (valgrind cachegrind around the "
    "node, redis-benchmark -d 100 -r 100000 as the client; the difference of two runs of different "
    "lengths), per revision and build, with the ratio to the first revision. Steadier than time on "
    "these machines; it does not see cache misses or system-call time. Run: "
    "`python bench/resp_instructions.py --revs 139741a,HEAD`."
)
DEFAULT_SHAPES = "get:50:1,get:50:16,set:50:1,set:50:16"
_SUMMARY = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)


def redis_benchmark(port: int, op: str, clients: int, pipeline: int, requests: int) -> None:
    command = ["redis-benchmark", "-p", str(port), "-t", op, "-d", "100", "-r", "100000"]
    command += ["-n", str(requests), "-c", str(clients), "-P", str(pipeline), "-q"]
    subprocess.run(command, check=True, capture_output=True, timeout=3600)


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True, text=True, check=False)
        if probe.stdout.strip() == "PONG":
            return
        time.sleep(0.5)
    raise SystemExit(f"the node on port {port} did not answer PING within {timeout:.0f}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def instructions(baseline: Baseline, op: str, clients: int, pipeline: int, requests: int, workdir: str) -> int:
    """Instructions a node of ``baseline`` ran in all, from start to exit, serving ``requests`` of the shape."""
    run = tempfile.mkdtemp(prefix="run-", dir=workdir)
    out = os.path.join(run, "cachegrind.out")
    native, resp = free_port(), free_port()
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}"]
    command += [str(baseline.python), "-m", "aegiskv", "--bind", f"127.0.0.1:{native}"]
    command += ["--resp-bind", f"127.0.0.1:{resp}", "--gossip", "off", "--data-dir", os.path.join(run, "data")]
    command += ["--log-level", "warn", "--max-memory", "4096"]
    env = {**os.environ, "PYTHONPATH": "", "PYTHONSAFEPATH": "1", "AEGIS_DISABLE_PLUGIN_AUTOLOAD": "1"}
    with open(os.path.join(run, "node.log"), "wb") as log:
        node = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=run)
    try:
        wait_for_port(resp, 600)
        # The same keys exist in every run, so GETs hit: the fill is part of both runs and cancels out.
        redis_benchmark(resp, "set", 10, 16, 2000)
        if requests:
            redis_benchmark(resp, op, clients, pipeline, requests)
    finally:
        node.terminate()  # SIGTERM: the node drains and exits; cachegrind writes its totals then
        node.wait(timeout=600)
    found = _SUMMARY.search(Path(out).read_text())
    if found is None:
        raise SystemExit(f"no cachegrind summary in {out}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--revs", default="139741a,HEAD", help="revisions, the first is the reference")
    parser.add_argument("--builds", default="compiled,interpreted")
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="OP:CLIENTS:PIPELINE,...")
    parser.add_argument("--small", type=int, default=2000, help="requests of the short run")
    parser.add_argument("--large", type=int, default=42000, help="requests of the long run")
    parser.add_argument("--render", action="store_true", help="only rewrite the RESULTS.md section")
    args = parser.parse_args()
    if args.render:
        return render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    revs = [rev.strip() for rev in args.revs.split(",") if rev.strip()]
    builds = [build.strip() for build in args.builds.split(",") if build.strip()]
    shapes = []
    for shape in args.shapes.split(","):
        op, clients, pipeline = shape.split(":")
        shapes.append((op, int(clients), int(pipeline)))
    rows = []
    with tempfile.TemporaryDirectory(prefix="aegis-instructions-") as workdir:
        for build in builds:
            venvs = [build_baseline(rev, build) for rev in revs]
            for op, clients, pipeline in shapes:
                per_request = []
                for rev, baseline in zip(revs, venvs):
                    small = instructions(baseline, op, clients, pipeline, args.small, workdir)
                    large = instructions(baseline, op, clients, pipeline, args.large, workdir)
                    cost = (large - small) / (args.large - args.small)
                    per_request.append(cost)
                    row = {
                        "build": build,
                        "shape": f"{op} -c {clients} -P {pipeline}",
                        "rev": rev,
                        "commit": baseline.commit,
                        "instructions": round(cost),
                        "ratio": round(cost / per_request[0], 3),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    write_results(rows, revs, args)
    return 0


def write_results(rows: list[dict[str, object]], revs: list[str], args: argparse.Namespace) -> None:
    header = (
        f"Instructions per RESP request (valgrind cachegrind, a {args.large:,} minus a {args.small:,} request run), "
        f"lone node, redis-benchmark -d 100 -r 100000; CPython {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; ratio to {revs[0]}"
    )
    commits = {str(row["rev"]): str(row["commit"])[:10] for row in rows}
    lines = [header, "revisions: " + ", ".join(f"{rev} = {commits.get(rev, '?')}" for rev in revs), ""]
    lines.append(f"{'build':<12} {'shape':<18} {'revision':<12} {'instr/req':>10} {'ratio':>7}")
    for row in rows:
        lines.append(
            f"{row['build']!s:<12} {row['shape']!s:<18} {row['rev']!s:<12} {row['instructions']:>10} "
            f"{row['ratio']:>7.3f}"
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / "resp_instructions.txt").write_text(text)
    (RESULTS / "resp_instructions.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(text)
    write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)


if __name__ == "__main__":
    sys.exit(main())
