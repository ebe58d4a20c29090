"""The layer table of ARCHITECTURE.md as a test: every module has a layer, and imports point down it.

Read from the source with `ast` (nothing is imported), so a rule holds for function-level imports too and an
import only for type checking counts like any other: a layer that needs another's types to be written depends on it.

Breaks still to fix are listed in `KNOWN_BREAKS` (empty since the app-layer step, issue 12). The test asserts the
breaks found are exactly those: a new break fails, and so does a fixed one still listed, so the list only ever
shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "meshp2p"

#: Bottom to top. A module may import a lower layer, or its own folder; never a higher layer or a sibling on its row.
LAYERS: dict[str, int] = {
    "meshp2p.errors": 0, "meshp2p.home": 0, "meshp2p.hosts": 0, "meshp2p": 0,  # the package's own __init__
    "meshp2p.wire": 1,
    "meshp2p.p2p": 2, "meshp2p.inference": 2, "meshp2p.mesh": 2, "meshp2p.blackboard": 2, "meshp2p.access": 2,
    "meshp2p.backends": 3,
    "meshp2p.api": 4,
    "meshp2p.app": 5,
    "meshp2p.cli": 6, "meshp2p.mcp": 6,
}

#: Third-party packages only one layer may use.
OWNED_BY: dict[str, str] = {"libp2p": "meshp2p.p2p", "multiaddr": "meshp2p.p2p", "rich": "meshp2p.cli"}

#: Imports across one row that the table allows: `meshp2p blackboard mcp` is the command that starts the MCP server
#: (mcp/ itself never imports cli/).
ALLOWED_SIDEWAYS: frozenset[tuple[str, str]] = frozenset({("meshp2p.cli", "meshp2p.mcp")})

#: `mesh/` decides with plain data: of meshp2p it may import only these (and the stdlib, nothing third-party).
MESH_MAY_IMPORT = ("meshp2p.wire", "meshp2p.errors", "meshp2p.mesh")

#: Breaks still to fix, as "importer -> imported (rule)": none since the app-layer step (issue 12). A break that
#: has to land before its fix is listed here with the step that removes it.
KNOWN_BREAKS: frozenset[str] = frozenset()

#: Import cycles on main before the app-layer step, each as its modules joined by " <-> ".
KNOWN_CYCLES: frozenset[str] = frozenset()


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


@cache
def _imports(module: str) -> tuple[str, ...]:
    """Every module `module` imports, resolved to the longest name that exists (`from a import b` is `a.b` when
    `b` is a module)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.append(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return tuple(dict.fromkeys(found))


def _layer_of(module: str) -> str | None:
    """The LAYERS key `module` belongs to: the longest one that is it or a package above it."""
    if module == "meshp2p.__main__":
        return "meshp2p.cli"  # `python -m meshp2p` is the command's other door
    best = None
    for key in LAYERS:
        if (module == key or module.startswith(key + ".")) and (best is None or len(key) > len(best)):
            best = key
    if best == "meshp2p" and module != "meshp2p":
        return None  # a loose module in the package root: no layer
    return best


def _breaks() -> Iterator[str]:
    for module in sorted(MODULES):
        layer = _layer_of(module)
        if layer is None:
            yield f"{module} (no layer)"
            continue
        for imported in _imports(module):
            top = imported.split(".")[0]
            owner = OWNED_BY.get(top)
            if owner is not None and layer != owner:
                yield f"{module} -> {top} (only {owner.removeprefix('meshp2p.')}/ imports it)"
            if layer == "meshp2p.mesh" and top != "meshp2p" and not _is_stdlib(top):
                yield f"{module} -> {top} (mesh/ imports only wire/, errors and the stdlib)"
            if top != "meshp2p" or imported == "meshp2p":
                continue
            if layer == "meshp2p.mesh" and not imported.startswith(MESH_MAY_IMPORT):
                yield f"{module} -> {imported} (mesh/ imports only wire/, errors and the stdlib)"
                continue
            if layer == "meshp2p.api" and imported.startswith("meshp2p.p2p"):
                yield f"{module} -> {imported} (api/ never imports p2p/: a peer is reached through backends/)"
                continue
            target = _layer_of(imported)
            if target is None or target == layer:
                continue  # a loose module is reported once, as itself; a folder may import itself
            if LAYERS[target] >= LAYERS[layer] and (layer, target) not in ALLOWED_SIDEWAYS:
                yield f"{module} -> {imported} (points up or sideways: {_short(layer)} onto {_short(target)})"


def _short(layer: str) -> str:
    return layer.removeprefix("meshp2p.")


def _is_stdlib(top: str) -> bool:
    import sys

    return top in sys.stdlib_module_names or top == "__future__"


def _cycles() -> list[list[str]]:
    """Import cycles between modules (strongly connected components of more than one module, or a self-loop)."""
    graph = {m: [i for i in _imports(m) if i in MODULES and i != m and not m.startswith(i + ".")] for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_resolver_sees_imports_as_python_does() -> None:
    # Guards the test itself: a resolver that saw nothing would pass every rule.
    assert "meshp2p.wire.errors" in _imports("meshp2p.wire.gossip")
    assert "libp2p" in {i.split(".")[0] for i in _imports("meshp2p.p2p.overlay")}
    assert _layer_of("meshp2p.api.openai_app") == "meshp2p.api" and _layer_of("meshp2p.errors") == "meshp2p.errors"


def test_imports_point_down_the_layer_table() -> None:
    found = set(_breaks())
    new, fixed = sorted(found - KNOWN_BREAKS), sorted(KNOWN_BREAKS - found)
    assert not new, "imports against the layer table (ARCHITECTURE.md):\n" + "\n".join(new)
    assert not fixed, "fixed: take these out of KNOWN_BREAKS:\n" + "\n".join(fixed)


def test_no_import_cycles() -> None:
    found = {" <-> ".join(c) for c in _cycles()}
    new, fixed = sorted(found - KNOWN_CYCLES), sorted(KNOWN_CYCLES - found)
    assert not new and not fixed, f"new cycles: {new}; fixed (take them out of KNOWN_CYCLES): {fixed}"
