"""The client package is typed for its users: ``mypy --strict`` accepts a user's program.

tests/typing_samples/client_usage.py uses the threaded and the asyncio client as an application
would, with ``assert_type`` on what the public calls return. mypy checks it from a scratch
directory, so ``aegiskv`` resolves to the installed distribution, not the source tree: without
its ``py.typed`` marker every call would be ``Any`` and the sample would fail. tox's ``type`` env
runs this (it has mypy and a regular install); where mypy is absent, or the package is an
editable install (mypy cannot follow setuptools' import hooks), it skips.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parent / "typing_samples" / "client_usage.py"


def editable_install() -> bool:
    """Whether aegiskv is installed editable (PEP 660: direct_url.json says so)."""
    direct_url = metadata.distribution("aegiskv").read_text("direct_url.json")
    return bool(direct_url and json.loads(direct_url).get("dir_info", {}).get("editable"))


def test_mypy_strict_accepts_a_user_program(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is installed in tox's type env")
    if editable_install():
        pytest.skip("aegiskv is installed editable: mypy cannot resolve it outside the source tree")
    (tmp_path / "mypy.ini").write_text("[mypy]\n")  # no user or project configuration applies
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            # The sample stands alone, as a user's script would: without this mypy would take
            # tests/ for its package and find aegiskv in the source tree beside it.
            "--no-namespace-packages",
            "--config-file",
            str(tmp_path / "mypy.ini"),
            "--python-executable",
            sys.executable,
            str(SAMPLE),
        ],
        cwd=tmp_path,  # mypy also searches the working directory: keep the source tree out of it
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
