"""PEP 517 build backend: setuptools, deciding first whether to compile the request path.

``AEGISKV_COMPILE`` chooses: ``1`` compiles the request path with mypyc (setup.py)
and fails the build if it cannot; ``0`` builds pure Python; unset (or ``auto``)
compiles when this machine has a C compiler and the Python headers, and builds
pure Python otherwise, so ``pip install .`` gives a user the fast build wherever
it can be made. An editable install (``pip install -e .``) is pure Python unless
``AEGISKV_COMPILE=1``: it runs the sources in place, and extension modules built
from them would keep running the old code after every edit.

The decision is written back to ``AEGISKV_COMPILE`` (``1`` or ``0``) before
setuptools runs setup.py in this process, so setup.py only reads it. Only a
compiling build asks for mypy.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shlex
import shutil
import sysconfig
from collections.abc import Callable
from pathlib import Path

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

COMPILE = "AEGISKV_COMPILE"
# Set while setuptools runs setup.py only to list requirements: mypy is not
# installed yet then, so setup.py must not compile.
LISTING_REQUIREMENTS = "AEGISKV_LISTING_BUILD_REQUIREMENTS"


def c_compiler() -> str | None:
    """The C compiler this Python's extensions are built with (its CC, else cc), if installed."""
    configured = shlex.split(sysconfig.get_config_var("CC") or "")
    for candidate in (configured[0] if configured else "", "cc", "gcc"):
        if candidate:
            found = shutil.which(candidate)
            if found:
                return found
    return None


def python_headers() -> bool:
    """Whether Python.h is installed (Debian's python3 needs python3-dev for it)."""
    include = sysconfig.get_paths().get("include")
    return bool(include) and (Path(include) / "Python.h").is_file()


def mypyc_installed() -> bool:
    """Whether the build environment has mypyc (pip installs it when asked; a build without
    isolation, ``--no-build-isolation``, has only what the environment already holds)."""
    return importlib.util.find_spec("mypyc") is not None


def should_compile(editable: bool, building: bool = False) -> bool:
    """What ``AEGISKV_COMPILE`` and this machine decide (see the module docstring).

    ``building``: asked by the build itself rather than when listing what the build needs, so
    mypyc must be there too; on auto, a build without it is pure Python rather than a failure.
    """
    mode = os.environ.get(COMPILE, "auto").strip().lower() or "auto"
    if mode == "1":
        return True
    if mode == "0":
        return False
    if mode != "auto":
        raise ValueError(f"{COMPILE} must be 1 (compile), 0 (pure Python) or auto (the default), not {mode!r}")
    return (
        not editable
        and platform.python_implementation() == "CPython"  # mypyc builds CPython extensions only
        and c_compiler() is not None
        and python_headers()
        and (not building or mypyc_installed())
    )


def _decide(editable: bool, building: bool = False) -> bool:
    compiling = should_compile(editable, building)
    os.environ[COMPILE] = "1" if compiling else "0"
    return compiling


def _with_compile_requirements(list_requirements: Callable[[], list[str]], editable: bool) -> list[str]:
    compiling = _decide(editable)
    os.environ[LISTING_REQUIREMENTS] = "1"
    try:
        requirements = list_requirements()
    finally:
        del os.environ[LISTING_REQUIREMENTS]
    return [*requirements, *(COMPILE_REQUIREMENTS if compiling else [])]


def get_requires_for_build_wheel(config_settings: dict[str, str] | None = None) -> list[str]:
    return _with_compile_requirements(lambda: _setuptools.get_requires_for_build_wheel(config_settings), False)


def get_requires_for_build_editable(config_settings: dict[str, str] | None = None) -> list[str]:
    return _with_compile_requirements(lambda: _setuptools.get_requires_for_build_editable(config_settings), True)


def build_wheel(
    wheel_directory: str, config_settings: dict[str, str] | None = None, metadata_directory: str | None = None
) -> str:
    _decide(editable=False, building=True)
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(
    wheel_directory: str, config_settings: dict[str, str] | None = None, metadata_directory: str | None = None
) -> str:
    _decide(editable=True, building=True)
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
