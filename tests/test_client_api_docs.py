"""Every public name of the client package has a docstring: the API reference (tox -e docs) is
built from them, so a name without one would appear there as a bare signature.

Type hints need no check here: mypy --strict on the package already refuses a def without
complete annotations, and tests/test_client_typing.py checks them from a user's side.
"""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

import aegiskv.client


def undocumented(module: ModuleType, names: list[str]) -> list[str]:
    """``module.name`` and ``module.Class.method`` of ``names`` without a docstring of their own.

    Methods inherited from outside aegiskv (Exception's, Django's) are those libraries' to
    document; dunder methods are covered by their class's docstring.
    """
    missing = []
    for name in names:
        obj = getattr(module, name)
        if not (obj.__doc__ or "").strip():
            missing.append(name)
        if not inspect.isclass(obj):
            continue
        for attribute, member in inspect.getmembers(obj):
            if attribute.startswith("_"):
                continue
            function = member.fget if isinstance(member, property) else member
            if not inspect.isfunction(function) or not function.__module__.startswith("aegiskv"):
                continue
            if not (function.__doc__ or "").strip():
                missing.append(f"{name}.{attribute}")
    return missing


def test_every_public_client_name_has_a_docstring() -> None:
    assert undocumented(aegiskv.client, aegiskv.client.__all__) == []


def test_every_public_name_of_the_django_backend_has_a_docstring() -> None:
    pytest.importorskip("django", reason="Django is installed in tox's django env")
    import aegiskv.contrib.django as backend

    public = [
        name
        for name, obj in vars(backend).items()
        if not name.startswith("_") and getattr(obj, "__module__", None) == backend.__name__
    ]
    assert undocumented(backend, public) == []
