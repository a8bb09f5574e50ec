"""Command line: ``aegis [flags]`` runs a node; ``aegis plugins`` lists plugins.

Every flag maps to a setting in :mod:`aegiskv.server.settings`; only flags actually given
override the file and the environment. Errors are one line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

import aegiskv

# The settings and plugin modules are imported inside the functions, after the check for the
# server's dependencies: settings needs tomli on Python 3.10, which a client-only install lacks,
# and its import failing at the top would end `aegis` in a traceback instead of one line.


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"aegis: command line: {message}", file=sys.stderr, flush=True)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from aegiskv.server import settings as config_module

    parser = _OneLineParser(
        prog="aegis",
        description="AegisKV node. With no flags it serves one node on 0.0.0.0:7700 with an in-memory store.",
        epilog="'aegis plugins' lists the installed plugins; 'aegis cluster up', 'status', 'shards', 'info', "
        "'hotkeys' and 'drain' run and inspect a cluster (docs/cli.md). Settings come from defaults < "
        "--config file < AEGIS_* environment < flags.",
    )
    parser.add_argument("--version", action="version", version=f"aegis {aegiskv.__version__} ({aegiskv.build()})")
    parser.add_argument("--config", default=None, metavar="FILE", help="TOML file with any setting (snake_case keys)")
    config_module.add_flags(parser)
    return parser


def _missing_server_dependency() -> str | None:
    """The server's first dependency that does not import, or None.

    ``pip install --no-deps aegiskv`` is the client-only install (docs/client.md): the client
    needs no other package, the server does. Without this check ``aegis`` in such an install
    would end in a traceback from deep inside the reactor's imports.
    """
    try:
        from aegiskv.server import daemon  # noqa: F401 - imports every module a node runs
    except ModuleNotFoundError as error:
        if error.name is None or error.name.partition(".")[0] == "aegiskv":
            raise  # a module of our own is missing: a broken install or a bug, not a client-only install
        return error.name
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    missing = _missing_server_dependency()
    if missing is not None:
        print(
            f"aegis: the server needs {missing}, which is not installed (a client-only install, "
            "pip install --no-deps?): pip install aegiskv installs the server's dependencies",
            file=sys.stderr,
            flush=True,
        )
        return 2
    from aegiskv.server import plugins
    from aegiskv.server import settings as config_module

    if args[:1] == ["plugins"]:
        if len(args) > 1:
            print(f"aegis: command line: plugins takes no arguments, got {args[1]!r}", file=sys.stderr, flush=True)
            return 2
        for line in plugins.describe_all():
            print(line)
        return 0
    namespace = vars(build_parser().parse_args(args))
    config_path = namespace.pop("config")
    try:
        config = config_module.build(file_path=config_path, flags=namespace)
    except config_module.ConfigError as error:
        print(f"aegis: {error}", file=sys.stderr, flush=True)
        return 2
    from aegiskv.server import daemon

    return daemon.run(config, config_path=config_path, flags=namespace)
