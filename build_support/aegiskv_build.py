"""PEP 517 build backend: setuptools, plus mypy when the hot path is to be compiled.

``AEGISKV_COMPILE=1`` makes setup.py compile the request path with mypyc (see
setup.py); only then does the build need mypy, so only then is it asked for.
Everything else is setuptools' own backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 (the rest of the backend interface, unchanged)

# mypy at the version tox's type environment checks with (the compiled code is
# what it accepted), and the runtime dependencies whose types it reads.
COMPILE_REQUIREMENTS = [
    "mypy==2.4.1",
    "loguru>=0.7",
    "prometheus-client>=0.17",
    'tomli>=2.0; python_version < "3.11"',
]


# Set while setuptools runs setup.py only to list requirements: mypy is not
# installed yet then, so setup.py must not compile.
LISTING_REQUIREMENTS = "AEGISKV_LISTING_BUILD_REQUIREMENTS"


def _compiling() -> bool:
    return os.environ.get("AEGISKV_COMPILE", "0") == "1"


def _with_compile_requirements(list_requirements: Callable[[], list[str]]) -> list[str]:
    os.environ[LISTING_REQUIREMENTS] = "1"
    try:
        requirements = list_requirements()
    finally:
        del os.environ[LISTING_REQUIREMENTS]
    return [*requirements, *(COMPILE_REQUIREMENTS if _compiling() else [])]


def get_requires_for_build_wheel(config_settings: dict[str, str] | None = None) -> list[str]:
    return _with_compile_requirements(lambda: _setuptools.get_requires_for_build_wheel(config_settings))


def get_requires_for_build_editable(config_settings: dict[str, str] | None = None) -> list[str]:
    return _with_compile_requirements(lambda: _setuptools.get_requires_for_build_editable(config_settings))
