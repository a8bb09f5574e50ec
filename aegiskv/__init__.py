"""AegisKV: a distributed, in-memory key-value cache."""

__version__ = "0.1.0"


def compiled() -> bool:
    """Whether the request path runs compiled by mypyc (``AEGISKV_COMPILE=1`` at install, see setup.py)."""
    from importlib.machinery import EXTENSION_SUFFIXES

    from aegiskv.net import reactor

    return reactor.__file__.endswith(tuple(EXTENSION_SUFFIXES))


def build() -> str:
    """``compiled`` or ``interpreted``: shown by ``aegis --version``, INFO and the startup log."""
    return "compiled" if compiled() else "interpreted"
