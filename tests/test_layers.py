"""The architecture, checked: layers import only downwards, no import cycles, no private APIs.

Every ``import`` in ``cometgen/`` counts, ``TYPE_CHECKING`` blocks and function bodies
included. A module may import modules of its own layer or of any layer below it (``LAYERS``,
top to bottom); a layer split into sibling groups may not import across those groups.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cometgen"

#: Top to bottom. Each entry is a tuple of sibling groups; siblings never import each other.
#: cli > testing: the CLI serves the built-in mock (``cometgen mock-server``, keyless runs).
LAYERS: list[tuple[tuple[str, ...], ...]] = [
    (("cometgen", "cometgen.__main__", "cometgen._cli", "cometgen._cli._export_cmd",
      "cometgen._cli._gallery_cmd"),),
    (("cometgen.testing",),),
    (("cometgen._bulk", "cometgen._bulk._export", "cometgen._bulk._export_rows",
      "cometgen._bulk._export_formats", "cometgen._bulk._dataset_card",
      "cometgen._bulk._gallery", "cometgen._bulk._gallery_html"),),
    (("cometgen._client", "cometgen._chat", "cometgen._sync", "cometgen._request",
      "cometgen._lifecycle", "cometgen._call_errors", "cometgen._hooks",
      "cometgen._sync_client"),),
    (
        ("cometgen._transport",),
        ("cometgen._limits", "cometgen._redis_limits", "cometgen._redis_scripts",
         "cometgen._redis_support"),
        ("cometgen._retry",),
        ("cometgen._cache",),
    ),
    (("cometgen._result",),),
    (("cometgen._image",),),
    (("cometgen._files",),),
    (("cometgen._wire", "cometgen._wire_errors", "cometgen._base64", "cometgen.types"),),
    (("cometgen._config", "cometgen._version"), ("cometgen._models",)),
    (("cometgen._exceptions",),),
]

#: Private modules of other projects that cometgen must never reach into.
BANNED_PREFIXES = ("anyio._", "aiohttp._", "aiohttp.client_proto", "aiohttp.connector",
                   "aiohttp.client_reqrep", "aiohttp.tracing", "asyncio.base_", "ctypes",
                   "_ctypes")
BANNED_NAMES = ("_acquired", "_create_connection", "pythonapi", "O_DIRECT", "syncfs",
                "sync_file_range", "_backends")


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            # ``from . import _wire`` imports a module, not a name.
            found.update(f"{mod}.{alias.name}" for alias in node.names)
    return found


def _slot(module: str) -> tuple[int, int] | None:
    """(layer index, sibling-group index) of a cometgen module, by longest prefix."""
    best: tuple[int, int, int] | None = None
    for li, groups in enumerate(LAYERS):
        for gi, group in enumerate(groups):
            for prefix in group:
                # "cometgen" is the package's __init__ only, never a catch-all.
                below = prefix != "cometgen" and module.startswith(prefix + ".")
                if (module == prefix or below) and (
                    best is None or len(prefix) > best[2]
                ):
                    best = (li, gi, len(prefix))
    return None if best is None else (best[0], best[1])


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {m for m in _imports(name, path) if m in modules and m != name}
        for name, path in modules.items()
    }


def test_every_module_has_a_layer() -> None:
    missing = sorted(m for m in _modules() if _slot(m) is None)
    assert not missing, f"modules outside the layers contract: {missing}"


def test_layers_import_only_downwards() -> None:
    violations = []
    for module, deps in _graph().items():
        src = _slot(module)
        assert src is not None
        for dep in deps:
            dst = _slot(dep)
            assert dst is not None
            if dep == module or module.startswith(dep + "."):
                continue  # a package's own __init__
            if dst[0] < src[0] or (dst[0] == src[0] and dst[1] != src[1]):
                violations.append(f"{module} -> {dep}")
    assert not violations, "imports against the layers contract:\n" + "\n".join(
        sorted(violations)
    )


def test_no_import_cycles() -> None:
    graph = _graph()
    # A package's __init__ re-exports its children; the child importing its package is not
    # a cycle through code (Python runs the child from inside the package's import).
    for module, deps in graph.items():
        graph[module] = {d for d in deps if not module.startswith(d + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep):], dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_no_private_api_of_other_projects() -> None:
    offenders = []
    for name, path in _modules().items():
        for mod in _imports(name, path):
            if mod.startswith(BANNED_PREFIXES):
                offenders.append(f"{path.name}: imports {mod}")
        text = path.read_text("utf-8")
        for banned in BANNED_NAMES:
            if banned in text:
                offenders.append(f"{path.name}: mentions {banned}")
    assert not offenders, "\n".join(offenders)


def test_aiohttp_is_imported_by_the_transport_module_only() -> None:
    # The mock server (cometgen.testing) is an aiohttp app of its own.
    importers = {name for name, path in _modules().items()
                 if not name.startswith("cometgen.testing")
                 and any(m == "aiohttp" or m.startswith("aiohttp.") for m in _imports(name, path))}
    assert importers == {"cometgen._transport._aiohttp"}


def test_no_file_over_400_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text("utf-8").splitlines())) > 400
    }
    assert not long, f"files over 400 lines: {long}"
