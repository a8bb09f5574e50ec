"""How hard the costly, Python-version-independent tests try.

Under tox every interpreter runs the whole suite, but property and model tests
(hypothesis examples, the Redis oracle, the fuzz pass) find the same bugs on
every Python: one interpreter (py311, tox.ini) runs them at full strength and
the others with ``AEGISKV_TEST_EFFORT=quick``, a quarter of the examples, which
keeps CI within its time budget. (Not an ``AEGIS_`` name: the daemon refuses
unknown ones.) Plain ``pytest`` runs at full strength.
"""

from __future__ import annotations

import os

QUICK = os.environ.get("AEGISKV_TEST_EFFORT", "full") == "quick"


def examples(full: int) -> int:
    """``full`` examples, or a quarter of them (at least 10) in quick mode."""
    return max(10, full // 4) if QUICK else full
