"""The import graph of the aegiskv package, and the rules it must keep.

    python tools/import_graph.py            # the layers and what each imports; exit 1 on a broken rule
    python tools/import_graph.py --modules  # every module's imports of other aegiskv modules

Every import counts, including those under ``if TYPE_CHECKING:`` and inside
functions: a circle that only the type checker sees is still a circle a reader
must untangle. Rules: no circle between modules; no circle between layers; each
layer imports only the layers listed for it in ALLOWED (downward: server ->
protocols -> node -> backends).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "aegiskv"

# Layer -> the layers it may import. A layer is a subpackage of aegiskv, or a top-level module.
ALLOWED: dict[str, set[str]] = {
    "aegiskv": {"net"},  # __init__: build() looks at the reactor module
    "__main__": {"admin"},
    # The aegis command: admin commands through the client; any other command line goes to server.cli.
    "admin": {"client", "server"},
    "errors": set(),
    "obs": set(),  # logging helpers (repeat limiting): loguru only, usable from every layer
    "net": {"aegiskv", "obs"},
    "backends": {"errors", "obs"},
    "cluster": {"net", "errors", "obs"},
    "node": {"aegiskv", "backends", "cluster", "errors", "obs"},
    "protocols": {"node", "backends", "cluster", "net", "errors", "aegiskv", "obs"},
    "server": {"protocols", "node", "backends", "cluster", "net", "errors", "aegiskv", "plugin_api", "obs"},
    "client": {"protocols", "cluster", "net"},
    "contrib": {"client"},  # integrations with other frameworks, through the client only
    "plugin_api": {"backends", "cluster"},
    "testing": {
        "server",
        "protocols",
        "node",
        "backends",
        "cluster",
        "net",
        "errors",
        "obs",
        "client",
        "aegiskv",
        "plugin_api",
    },
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return "aegiskv" if len(parts) == 1 else parts[1]


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The aegiskv modules ``path`` imports (``from a.b import c`` counts a.b.c when it is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "aegiskv")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "aegiskv":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
    return {name for name in found if name in modules}


def build_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph = {module_name(path): imports_of(path, modules) for path in paths}
    for module, imported in graph.items():
        imported.discard(module)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle in ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    layers: dict[str, set[str]] = defaultdict(set)
    for module, imported in graph.items():
        layers[layer_of(module)]
        for target in imported:
            if layer_of(target) != layer_of(module):
                layers[layer_of(module)].add(layer_of(target))
    return dict(layers)


def problems(graph: dict[str, set[str]]) -> list[str]:
    found = []
    if cycle := find_cycle(graph):
        found.append("module circle: " + " -> ".join(cycle))
    layers = layer_graph(graph)
    if cycle := find_cycle(layers):
        found.append("layer circle: " + " -> ".join(cycle))
    for module, imported in sorted(graph.items()):
        layer = layer_of(module)
        if layer not in ALLOWED:
            found.append(f"{module}: layer {layer!r} has no rule in tools/import_graph.py ALLOWED")
            continue
        for target in sorted(imported):
            target_layer = layer_of(target)
            if target_layer != layer and target_layer not in ALLOWED[layer]:
                found.append(f"{module} imports {target}: {layer} may not import {target_layer}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", action="store_true", help="list every module's imports")
    arguments = parser.parse_args()
    graph = build_graph()
    if arguments.modules:
        for module, imported in sorted(graph.items()):
            print(f"{module}: {', '.join(sorted(imported)) or '-'}")
    else:
        for layer, imported in sorted(layer_graph(graph).items()):
            print(f"{layer:>10} -> {', '.join(sorted(imported)) or '-'}")
    found = problems(graph)
    for problem in found:
        print(f"BROKEN: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
