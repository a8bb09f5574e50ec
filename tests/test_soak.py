"""The soak of issue 28 (tests/soak.py), short: 45 s of load and every nemesis at least once.

``tox -e soak -- MINUTES`` runs the long one (30 minutes by default).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.soak import soak

pytestmark = [pytest.mark.slow, pytest.mark.needs_root]


def test_short_soak_holds_every_target(tmp_path: Path) -> None:
    findings = soak(45.0, seed=7, workdir=tmp_path)
    summary = json.dumps(findings.summary(), indent=2)
    assert set(findings.nemeses) == {
        "disk_full",
        "read_only",
        "kill9",
        "huge_multibulk",
        "huge_appends",
        "pre_auth_flood",
    }, summary
    assert findings.ok(), summary
