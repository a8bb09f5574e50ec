"""tox's in-tree plugin: let plain ``tox`` find every Python that pyenv installed.

tox looks for ``python3.10`` and friends on PATH. With pyenv, PATH holds shims that
answer only for the versions selected in ``.python-version`` or ``pyenv global``, so
on a machine with 3.10 to 3.13 installed but one selected, every other env would be
"missing". This module adds each installed version's own ``bin`` directory to the end
of PATH before tox looks, so the README's one test command tests every interpreter
the machine has; an interpreter the machine lacks fails the run (tox.ini sets
``skip_missing_interpreters = false``), it never vanishes from it.
"""

from __future__ import annotations

import glob
import os


def _pyenv_bin_directories() -> list[str]:
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    # Sorted newest first by version, so a python3.X on PATH is the newest patch release of 3.X.
    found = glob.glob(os.path.join(root, "versions", "3.*", "bin"))

    def version(directory: str) -> tuple[int, ...]:
        name = os.path.basename(os.path.dirname(directory))
        return tuple(int(part) if part.isdigit() else -1 for part in name.split("."))

    return sorted(found, key=version, reverse=True)


def _extend_path() -> None:
    path = os.environ.get("PATH", "").split(os.pathsep)
    extra = [directory for directory in _pyenv_bin_directories() if directory not in path]
    if extra:
        os.environ["PATH"] = os.pathsep.join([*path, *extra])


_extend_path()
