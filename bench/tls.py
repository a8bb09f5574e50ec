"""Benchmark: throughput over TLS next to plaintext, AegisKV's RESP port and redis-server.

Not a test. Generates a throwaway CA and a server certificate for 127.0.0.1
(``openssl``), starts redis-server (TLS port, client certificates not
required) and an AegisKV node (``--tls-cert/--tls-key``), each twice -- once
plaintext, once TLS -- and runs ``redis-benchmark -t set,get -d 100 -r 100000``
(``--tls --cacert`` for TLS) against each, interleaved, ``--runs`` times, at
``-c 50 -P 1`` and ``-c 50 -P 16``. Prints the median requests/s, p50/p99/p99.9,
server CPU per request, the TLS/plaintext ratio per server and the
AegisKV/Redis ratio per transport.

Writes bench/results/tls.json and .txt.

    python bench/tls.py [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from results_md import render_or_complain, write_text_section  # bench/results_md.py
from servers import RESULTS, Server, free_port, fresh_dir, run_benchmark, start_aegis, start_redis

SHAPES = [("c50_P1", ["-c", "50", "-P", "1"], 200_000), ("c50_P16", ["-c", "50", "-P", "16"], 1_000_000)]
OPS = ("set", "get")


def make_certificates(directory: Path) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    paths = {name: str(directory / f"{name}.pem") for name in ("ca", "ca-key", "cert", "key")}
    extensions = directory / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=aegis-bench-ca",
            "-keyout", paths["ca-key"], "-out", paths["ca"])  # fmt: skip
    csr = str(directory / "server.csr")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", paths["key"], "-out", csr)
    openssl("x509", "-req", "-in", csr, "-CA", paths["ca"], "-CAkey", paths["ca-key"], "-CAcreateserial",
            "-days", "2", "-extfile", str(extensions), "-out", paths["cert"])  # fmt: skip
    return paths


def start_servers(workdir: str, certs: dict[str, str]) -> list[tuple[str, str, Server]]:
    """(server kind, transport, server) for every combination."""
    tls_redis = ["--tls-cert-file", certs["cert"], "--tls-key-file", certs["key"]]
    tls_redis += ["--tls-ca-cert-file", certs["ca"], "--tls-auth-clients", "no"]
    started = [("redis", "plain", start_redis(fresh_dir(workdir, "redis-plain"), name="redis-plain"))]
    started.append(("redis", "tls", start_redis_tls(fresh_dir(workdir, "redis-tls"), tls_redis)))
    started.append(("aegis", "plain", start_aegis(fresh_dir(workdir, "aegis-plain"), name="aegis-plain")))
    tls_aegis = ["--tls-cert", certs["cert"], "--tls-key", certs["key"]]
    started.append(("aegis", "tls", start_aegis(fresh_dir(workdir, "aegis-tls"), tls_aegis, name="aegis-tls")))
    return started


def start_redis_tls(workdir: str, tls_args: list[str]) -> Server:
    # Readiness is checked on the plaintext port (redis-cli without TLS), so the server
    # keeps one; the benchmark uses only the TLS port.
    tls_port = free_port()
    server = start_redis(workdir, "--tls-port", str(tls_port), *tls_args, name="redis-tls")
    server.port = tls_port
    return server


SCRIPT = "tls.py"
SECTION_TITLE = "TLS"
SECTION_STEMS = ["tls"]
SECTION_INTRO = (
    "The RESP port over TLS against plaintext, for AegisKV and redis-server, by redis-benchmark. `vs "
    "plain` compares a server with itself, `vs redis` AegisKV with redis-server over the same "
    "transport. Run: `python bench/tls.py`."
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 run, requests / 10")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite this section of bench/RESULTS.md from bench/results/"
    )
    options = parser.parse_args()
    if options.render:
        return render_or_complain(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    runs = 1 if options.quick else options.runs
    workdir = tempfile.mkdtemp(prefix="aegis-bench-tls-")
    certs = make_certificates(Path(workdir))
    servers = start_servers(workdir, certs)
    samples: dict[tuple[str, str, str, str], list[dict[str, float]]] = {}
    try:
        for _run in range(runs):
            for shape, shape_args, requests in SHAPES:
                for op in OPS:
                    for kind, transport, server in servers:
                        extra = ["--tls", "--cacert", certs["ca"]] if transport == "tls" else []
                        count = requests // 10 if options.quick else requests
                        result = run_benchmark(server, op, [*shape_args, *extra], count)
                        samples.setdefault((shape, op, kind, transport), []).append(result)
    finally:
        for _kind, _transport, server in servers:
            server.stop()

    def median(key: tuple[str, str, str, str], field: str) -> float:
        return statistics.median(sample[field] for sample in samples[key])

    rows = []
    lines = [
        "TLS vs plaintext, AegisKV RESP port and redis-server; redis-benchmark -d 100 -r 100000; "
        f"median of {runs} runs",
        f"{'shape':8} {'op':4} {'server':6} {'transport':9} {'req/s':>9} {'vs plain':>8} {'vs redis':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'cpu us/req':>10}",
    ]
    for shape, _args, _requests in SHAPES:
        for op in OPS:
            for kind in ("redis", "aegis"):
                for transport in ("plain", "tls"):
                    key = (shape, op, kind, transport)
                    rps = median(key, "rps")
                    row = {
                        "shape": shape,
                        "op": op,
                        "server": kind,
                        "transport": transport,
                        **{field: median(key, field) for field in samples[key][0]},
                        "ratio_to_plaintext": rps / median((shape, op, kind, "plain"), "rps"),
                        "ratio_to_redis": rps / median((shape, op, "redis", transport), "rps"),
                        "samples": samples[key],
                    }
                    rows.append(row)
                    lines.append(
                        f"{shape:8} {op:4} {kind:6} {transport:9} {rps:9.0f} {row['ratio_to_plaintext']:8.2f} "
                        f"{row['ratio_to_redis']:8.2f} {row['p50_ms']:7.3f} {row['p99_ms']:7.3f} "
                        f"{row['p999_ms']:8.3f} {row['cpu_us_per_request']:10.2f}"
                    )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    suffix = "_quick" if options.quick else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"tls{suffix}.txt").write_text(text)
    write_text_section(SCRIPT, SECTION_TITLE, SECTION_INTRO, SECTION_STEMS)
    (RESULTS / f"tls{suffix}.json").write_text(json.dumps({"runs": runs, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
