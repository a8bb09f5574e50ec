"""A short, bounded pass of every coverage-guided fuzz target (fuzz/), as CI's fuzz run.

Each target starts from its committed seeds and mutates for a few seconds; any
crash or broken invariant makes libFuzzer exit non-zero and print the input,
which becomes a regression test. Long runs: ``tox -e fuzz -- <seconds>``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.effort import QUICK

pytest.importorskip("atheris", reason="atheris has wheels for Linux x86_64 only")
pytestmark = pytest.mark.skipif(QUICK, reason="run at full test effort only (tests/effort.py)")

ROOT = Path(__file__).resolve().parent.parent
SECONDS = 3


@pytest.mark.parametrize("target", ["native", "resp", "config"])
def test_fuzz_target_runs_clean(target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fuzz" / f"fuzz_{target}.py"),
            f"-max_total_time={SECONDS}",
            "-timeout=10",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
            str(ROOT / "fuzz" / "seeds" / target),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    tail = result.stderr[-3000:]
    assert result.returncode == 0, f"fuzz_{target} found a crash:\n{tail}"
    # libFuzzer's final line reports the executions done: the target really ran.
    assert "Done " in tail and " runs in " in tail, tail
