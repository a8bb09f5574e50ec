"""The tests run the build tox asked for: compiled with mypyc (setup.py) or interpreted.

tox's py311 installs the package with AEGISKV_COMPILE=1 and the other
interpreters without; each sets AEGISKV_EXPECT_BUILD. A compiled install that
silently fell back to interpreted code (a failed compile, or a node process
importing the source tree it was started in) would otherwise go unnoticed.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

import aegiskv
from aegiskv.testing.localnode import LocalNode

ROOT = Path(__file__).resolve().parent.parent


def hot_path_modules() -> list[str]:
    """The module names setup.py compiles (read from its HOT_PATH list)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "HOT_PATH" for target in statement.targets
        ):
            paths = ast.literal_eval(statement.value)
            return [path.removesuffix(".py").replace("/", ".") for path in paths]
    raise AssertionError("setup.py has no HOT_PATH list")


def is_compiled(name: str) -> bool:
    """Whether module ``name`` was imported from an extension module rather than its .py source."""
    path = importlib.import_module(name).__file__
    assert path is not None, name
    return not path.endswith(".py")


def test_every_hot_path_module_is_built_the_same_way() -> None:
    kinds = {name: is_compiled(name) for name in hot_path_modules()}
    assert len(set(kinds.values())) == 1, f"partly compiled: {kinds}"
    assert aegiskv.compiled() == next(iter(kinds.values()))


def test_the_build_is_the_one_the_environment_asked_for() -> None:
    expected = os.environ.get("AEGISKV_EXPECT_BUILD")
    if expected is None:
        pytest.skip("AEGISKV_EXPECT_BUILD is set by tox; run outside tox, either build is fine")
    assert aegiskv.build() == expected, f"installed aegiskv at {aegiskv.__file__} is {aegiskv.build()}"


def test_a_node_started_from_the_source_tree_runs_the_installed_build(tmp_path: Path) -> None:
    # The working directory holds the aegiskv/ sources, which `python -m` would
    # import ahead of the installed (possibly compiled) package.
    previous = os.getcwd()
    os.chdir(ROOT)
    try:
        node = LocalNode(str(tmp_path / "data"), gossip=None)
    finally:
        os.chdir(previous)
    try:
        assert node.resp_address is not None
        with redis.Redis(*node.resp_address) as client:
            assert client.info("server")["aegis_build"] == aegiskv.build()
        assert any(f"(request path {aegiskv.build()})" in line for line in node.lines)
    finally:
        node.stop()


def test_version_names_the_build(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aegiskv", "--version"],
        cwd=tmp_path,  # not the source tree (see above)
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert result.stdout.strip() == f"aegis {aegiskv.__version__} ({aegiskv.build()})"


# -- the build backend's choice (build_support/aegiskv_build.py) -------------------------------


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The build backend module, imported from the source tree, with AEGISKV_COMPILE unset."""
    # The backend wraps setuptools, which pip installs into each build's own environment: a venv
    # of Python 3.12+ (tox's py313) has none of its own.
    pytest.importorskip("setuptools", reason="the build backend wraps setuptools; this venv has none")
    monkeypatch.syspath_prepend(str(ROOT / "build_support"))
    # Set (not deleted) so that monkeypatch restores the caller's value whatever the test sets.
    monkeypatch.setenv("AEGISKV_COMPILE", "auto")
    return importlib.import_module("aegiskv_build")


def test_pip_install_compiles_where_a_compiler_and_headers_are(backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "c_compiler", lambda: "/usr/bin/cc")
    monkeypatch.setattr(backend, "python_headers", lambda: True)
    assert backend.should_compile(editable=False)
    # An editable install runs the sources in place: compiled copies would go stale at the next edit.
    assert not backend.should_compile(editable=True)
    monkeypatch.setattr(backend, "python_headers", lambda: False)
    assert not backend.should_compile(editable=False)
    monkeypatch.setattr(backend, "python_headers", lambda: True)
    monkeypatch.setattr(backend, "c_compiler", lambda: None)
    assert not backend.should_compile(editable=False)


def test_the_variable_overrides_the_machine(backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "c_compiler", lambda: None)
    monkeypatch.setenv("AEGISKV_COMPILE", "1")
    assert backend.should_compile(editable=True)  # asked for: a build without a compiler fails loudly
    monkeypatch.setattr(backend, "c_compiler", lambda: "/usr/bin/cc")
    monkeypatch.setenv("AEGISKV_COMPILE", "0")
    assert not backend.should_compile(editable=False)
    monkeypatch.setenv("AEGISKV_COMPILE", "yes")
    with pytest.raises(ValueError, match=re.escape("must be 1 (compile), 0 (pure Python) or auto")):
        backend.should_compile(editable=False)


def test_the_decision_reaches_setup_py_and_the_requirements(backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # setup.py reads AEGISKV_COMPILE as the backend left it; mypy is asked for only when compiling.
    monkeypatch.setattr(backend, "c_compiler", lambda: "/usr/bin/cc")
    monkeypatch.setattr(backend, "python_headers", lambda: True)
    assert backend._with_compile_requirements(list, editable=False) == backend.COMPILE_REQUIREMENTS
    assert os.environ["AEGISKV_COMPILE"] == "1"
    monkeypatch.setenv("AEGISKV_COMPILE", "auto")
    assert backend._with_compile_requirements(list, editable=True) == []
    assert os.environ["AEGISKV_COMPILE"] == "0"


def test_this_machine_can_build_the_compiled_request_path(backend: Any) -> None:
    # CI installs gcc; the py311 env's compiled build depends on what these two find.
    if os.environ.get("AEGISKV_EXPECT_BUILD") != "compiled":
        pytest.skip("checked where the compiled build is expected")
    assert backend.c_compiler() is not None and backend.python_headers()
