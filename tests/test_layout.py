"""The package keeps its layers: no import circles, every layer imports only downward."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_graph_keeps_its_rules() -> None:
    # tools/import_graph.py is the command a reader runs to see the graph; the test runs the same.
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "import_graph.py")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "server -> " in result.stdout
