"""Compilation of the request path with mypyc, decided by the build backend.

The package is pure Python; with a C compiler and the Python headers at hand,
``pip install .`` also compiles the modules every request passes through to C
extensions by mypyc, from the same typed source; everything else stays
interpreted. ``AEGISKV_COMPILE=0`` builds pure Python, ``AEGISKV_COMPILE=1``
insists on compiling (build_support/aegiskv_build.py decides, and tells this
file through that variable). Measured in bench/results/hot_path.txt: the Python
work per RESP request drops by about 40%. Metadata and everything else live in
setup.cfg.
"""

from __future__ import annotations

import os

from setuptools import setup

# The reactor with its buffer budgets and turn observer (slow_requests), both wire
# protocols, the pipeline and the adapter base class it calls through (interpreted,
# every call on it is a generic method call), the command handlers, the node,
# the memory backend and the key router with its key -> shard mapping: what one GET
# or SET runs through (with gossip on, each key is mapped to its shard to route it,
# and each write again for replication). Of the RESP handlers, those of the server
# group (INFO, CONFIG, COMMAND, SAVE ...) and CLUSTER stay interpreted: they run now
# and then, and INFO in the worker pool.
HOT_PATH = [
    "aegiskv/net/poller.py",
    "aegiskv/net/reactor.py",
    "aegiskv/net/budget.py",
    "aegiskv/protocols/resp/reader.py",
    "aegiskv/protocols/resp/inline.py",
    "aegiskv/protocols/resp/encoder.py",
    "aegiskv/protocols/native/codec.py",
    "aegiskv/server/pipeline.py",
    "aegiskv/protocols/adapter.py",
    "aegiskv/protocols/resp/adapter.py",
    "aegiskv/protocols/resp/arguments.py",
    "aegiskv/protocols/resp/connection.py",
    "aegiskv/protocols/resp/strings.py",
    "aegiskv/protocols/resp/keys.py",
    "aegiskv/protocols/native/handlers.py",
    "aegiskv/node/commands.py",
    "aegiskv/protocols/session.py",
    "aegiskv/server/stats.py",
    "aegiskv/server/slow_requests.py",
    "aegiskv/node/handoff_lock.py",
    "aegiskv/node/operations.py",
    "aegiskv/backends/memory.py",
    "aegiskv/backends/access.py",
    "aegiskv/backends/expiry.py",
    "aegiskv/backends/wal.py",
    "aegiskv/backends/wal_log.py",
    "aegiskv/backends/wal_format.py",
    "aegiskv/backends/snapshot_format.py",
    "aegiskv/server/durability.py",
    "aegiskv/cluster/redirect.py",
    "aegiskv/cluster/slots.py",
]


def compiled_modules() -> list[object]:
    if os.environ.get("AEGISKV_COMPILE", "0") != "1" or os.environ.get("AEGISKV_LISTING_BUILD_REQUIREMENTS"):
        return []  # pure Python, or the backend is only asking what the build needs
    from mypyc.build import mypycify  # the build backend asked for mypy (build_support/)

    # Only the modules above are checked here, so the per-module sections of
    # setup.cfg for the rest of the package would read as unused.
    return list(mypycify(["--no-warn-unused-configs", *HOT_PATH], opt_level="3"))


setup(ext_modules=compiled_modules())
