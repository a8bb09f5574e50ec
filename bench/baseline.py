"""An earlier revision of this repository, built and started beside the checkout: the "before" of a benchmark.

``build_baseline(rev, build)`` exports ``rev`` with ``git archive`` (the
revision as committed, whatever the working tree holds), installs it into a
venv of its own on the interpreter running the benchmark, and returns that
venv. ``build`` is ``compiled`` (``AEGISKV_COMPILE=1``: the request path built
by mypyc, setup.py) or ``interpreted``. Both installs take their dependencies at
the versions of *this* checkout's requirements/test-constraints.txt, the ones
tox installs for the current build: only aegiskv's own code differs between
before and after, not loguru or prometheus-client.

The revision is installed as ``pip install`` would, without extras. Up to
e172448 the interpreted build parsed RESP with hiredis whenever hiredis was
installed (the ``fast`` extra; tox's test envs had it): that parser is not
what an interpreted baseline of such a revision measures here.

Built venvs are kept under ``/tmp/aegis-bench-baselines/<commit>-<build>-<python>``
and reused by the next run; a file written after the install and its check
marks a venv as complete, so one left half-built by an interrupted run is built
again. Two benchmarks building the same revision at once would collide: run
one at a time.

``start_baseline`` runs a node of such a venv with the flags the benchmark
gives the current nodes, leaving out ``--cluster-bind`` when the revision
predates the cluster port (139741a does): its command line refuses flags it
does not know.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from servers import ROOT, Server, start_aegis

BUILDS = ("compiled", "interpreted")
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "aegis-bench-baselines"
CONSTRAINTS = ROOT / "requirements" / "test-constraints.txt"
_MARKER = "aegis-baseline.json"


@dataclass(frozen=True)
class Baseline:
    """A built revision: ``python`` runs its aegiskv (``python -m aegiskv``)."""

    commit: str
    build: str
    python: Path
    cluster_port: bool  # its aegis knows --cluster-bind

    @property
    def short(self) -> str:
        return self.commit[:7]


def resolve(rev: str) -> str:
    """The full commit hash of ``rev`` (a hash, tag or branch of this repository)."""
    result = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"--baseline {rev}: not a commit of this repository ({ROOT})")
    return result.stdout.strip()


def _python_tag() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


# What a baseline's python runs with, over this process's environment: its venv's
# install and nothing else. An empty PYTHONPATH counts as unset, so a PYTHONPATH
# pointing at this checkout's sources cannot shadow it; PYTHONSAFEPATH keeps a
# source tree in the working directory off sys.path.
_ISOLATED = {"PYTHONPATH": "", "PYTHONSAFEPATH": "1"}


def _run(command: list[str], what: str, env: dict[str, str] | None = None, cwd: str | Path | None = None) -> str:
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **_ISOLATED, **(env or {})}, cwd=cwd
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-3000:]
        raise SystemExit(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{output}")
    return result.stdout


def build_baseline(rev: str, build: str, cache: Path = DEFAULT_CACHE) -> Baseline:
    """``rev`` installed in its own venv, ``build`` as asked; built once, then taken from ``cache``."""
    if build not in BUILDS:
        raise ValueError(f"build must be one of {BUILDS}, not {build!r}")
    commit = resolve(rev)
    venv = cache / f"{commit[:12]}-{build}-{_python_tag()}"
    python = venv / "bin" / "python"
    marker = venv / _MARKER
    expected = {"commit": commit, "build": build, "python": sys.version, "constraints": CONSTRAINTS.read_text()}
    if marker.exists():
        recorded = json.loads(marker.read_text())
        if {key: recorded.get(key) for key in expected} == expected:
            return Baseline(commit, build, python, bool(recorded["cluster_port"]))
    if venv.exists():
        shutil.rmtree(venv)  # half-built, or built against other constraints or another interpreter
    cache.mkdir(parents=True, exist_ok=True)
    print(f"baseline: building {commit[:7]} ({build}) into {venv}", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"aegis-baseline-{commit[:7]}-") as scratch:
        source = Path(scratch) / "src"
        source.mkdir()
        archive = Path(scratch) / "source.tar"
        _run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), commit], "git archive")
        _run(["tar", "-x", "-f", str(archive), "-C", str(source)], "unpacking the archive")
        # The interpreter running the benchmark, so before and after run on the same Python.
        _run([sys.executable, "-m", "venv", str(venv)], "creating the venv")
        _run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
            f"installing {commit[:7]} ({build})",
            env={"PIP_CONSTRAINT": str(CONSTRAINTS), "AEGISKV_COMPILE": "1" if build == "compiled" else "0"},
            cwd=scratch,
        )
    # The install must be the build asked for: a compile that silently fell back to
    # pure Python would make the compiled comparison a second interpreted one.
    reported = _run([str(python), "-c", "import aegiskv; print(aegiskv.build())"], "checking the build", cwd=venv)
    reported = reported.strip()
    if reported != build:
        raise SystemExit(f"baseline {commit[:7]}: asked for a {build} build, its aegiskv reports {reported!r}")
    help_text = _run([str(python), "-m", "aegiskv", "--help"], "aegis --help", cwd=venv)
    cluster_port = "--cluster-bind" in help_text
    marker.write_text(json.dumps({**expected, "cluster_port": cluster_port}, indent=2) + "\n")
    return Baseline(commit, build, python, cluster_port)


def start_baseline(baseline: Baseline, data_dir: str, name: str, gossip: str | None = "127.0.0.1:0") -> Server:
    """A node of ``baseline`` with servers.start_aegis's flags, minus any its revision does not know."""
    return start_aegis(
        data_dir,
        name=name,
        env=_ISOLATED,
        python=str(baseline.python),
        cluster_port=baseline.cluster_port,
        gossip=gossip,
    )
