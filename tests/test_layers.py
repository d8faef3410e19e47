"""The layer rules of docs/architecture.md, checked on the source: every import statement under src/ and
plugins/ (at module level or inside a function, ``TYPE_CHECKING`` ones too) is parsed with ``ast``.

The rules are data: :data:`PACKAGE_RULES` (which package may import which), :data:`ENGINE_LAYERS` and
:data:`REGISTRY_LAYERS` (the layers inside corridorkey_engine and ckpt_formats; a new module needs its layer
named here). On top of the layers, :func:`test_no_import_cycle` finds any circle of imports between modules,
``TYPE_CHECKING`` ones and those closed through a package's ``__init__`` included.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = [ROOT / "src", ROOT / "plugins", *sorted((ROOT / "plugins" / "examples").glob("*/src"))]

PLUGIN = {"ckpt_formats"}
"""What a format plugin may import from the project: the registry's public package, nothing else."""
PACKAGE_RULES: dict[str, set[str]] = {
    "ckpt_formats": set(),  # the registry knows nothing about CorridorKey or about any plugin
    "corridorkey_engine": {"ckpt_formats"},  # the consumer uses the registry, never a plugin directly
}
"""Top-level project package -> the other project packages it may import. Any other top-level package found
under the source roots is a plugin, held to :data:`PLUGIN`."""

ENGINE_LAYERS: dict[str, int] = {
    "corridorkey_engine.errors": 0,
    "corridorkey_engine.model": 1,
    "corridorkey_engine.device": 1,
    "corridorkey_engine.keying": 2,
    "corridorkey_engine.engine": 3,
    "corridorkey_engine.clips": 4,
    "corridorkey_engine.demo": 5,
    "corridorkey_engine.export": 5,
    "corridorkey_engine.preview": 5,
    "corridorkey_engine.cli_args": 6,
    "corridorkey_engine.cli_options": 6,
    "corridorkey_engine.cli_values": 6,
    "corridorkey_engine.cli_tool_args": 6,
    "corridorkey_engine.cli_clips": 6,
    "corridorkey_engine.cli": 6,
    "corridorkey_engine.cli_ray": 6,
    "corridorkey_engine.cli_export": 6,
    "corridorkey_engine.cli_preview": 6,
    "corridorkey_engine.cli_report": 6,
    "corridorkey_engine.cli_plan": 6,
    "corridorkey_engine.__main__": 7,  # `python -m corridorkey_engine`: runs the command line
}
"""corridorkey_engine's layers, bottom (0) to top: a module may import its own layer and the ones below,
never one above. A module's layer is that of the longest entry its dotted name starts with. The package's
``__init__`` exports names lazily (by string, no import statement) and belongs to no layer."""

REGISTRY_LAYERS: dict[str, int] = {
    **dict.fromkeys(
        ["errors", "formats", "tensors", "sniff", "statedict", "atomic", "shards", "_shards", "_summary",
         "_terminal", "untrusted"],
        0,
    ),  # value types, errors and helpers that know no plugin
    **dict.fromkeys(["_guard", "_registrar", "hookspecs", "_plugins", "_discovery"], 1),  # local, no network
    "hub": 2,  # may use discovery, never the registry facade
    "registry": 3,  # Registry, resolve: composes discovery, the hub and loading
    **dict.fromkeys(["convert", "_inspection", "diff", "testing"], 4),  # what callers do with checkpoints
    **dict.fromkeys(["_commands", "cli"], 5),  # `ckpt-formats`
    "__main__": 6,  # `python -m ckpt_formats`: runs the command line
}
"""ckpt_formats' layers (module names below the package), the same rule as :data:`ENGINE_LAYERS`; the
package's ``__init__`` re-exports the public names and belongs to no layer."""

LAYERS = {**ENGINE_LAYERS, **{f"ckpt_formats.{name}": layer for name, layer in REGISTRY_LAYERS.items()}}


def _modules() -> Iterator[tuple[str, Path]]:
    """(dotted module name, file) for every project module."""
    for root in SOURCE_ROOTS:
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if {"build", "examples"} & set(rel.parts[:-1]) or rel.parts[0] in ("src", "tests"):
                continue  # build outputs; examples/ and src/ are roots of their own
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if parts:
                yield ".".join(parts), path


def _imports(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of everything ``module`` imports; ``from x import y`` yields ``x.y``
    (``y`` may be a submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def _layer(name: str) -> int | None:
    best = max(
        (prefix for prefix in LAYERS if name == prefix or name.startswith(prefix + ".")),
        key=len,
        default=None,
    )
    return None if best is None else LAYERS[best]


MODULES = dict(_modules())
TOP_LEVEL = {name.split(".")[0] for name in MODULES}


def test_the_rule_tables_match_the_tree() -> None:
    assert set(PACKAGE_RULES) <= TOP_LEVEL, "a package in PACKAGE_RULES no longer exists"
    plugins = TOP_LEVEL - set(PACKAGE_RULES)
    assert {"ckpt_formats_safetensors", "ckpt_formats_pickle", "ckpt_formats_npz"} <= plugins
    layered = [m for m in MODULES if m.startswith(("corridorkey_engine.", "ckpt_formats."))]
    unplaced = [m for m in layered if _layer(m) is None]
    assert not unplaced, f"modules in no layer of ENGINE_LAYERS or REGISTRY_LAYERS: {unplaced}"
    for prefix in LAYERS:  # every layer still names something
        assert any(m == prefix or m.startswith(prefix + ".") for m in layered), prefix


def test_packages_import_only_what_their_rule_allows() -> None:
    wrong = []
    for module, path in MODULES.items():
        top = module.split(".")[0]
        allowed = PACKAGE_RULES.get(top, PLUGIN) | {top}
        for line, name in _imports(module, path):
            other = name.split(".")[0]
            if other in TOP_LEVEL and other not in allowed:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_no_layer_imports_a_higher_one() -> None:
    wrong = []
    for module, path in MODULES.items():
        own = _layer(module)
        if own is None:
            continue
        for line, name in _imports(module, path):
            layer = _layer(name)
            if layer is not None and layer > own and name.split(".")[0] == module.split(".")[0]:
                wrong.append(
                    f"{path.relative_to(ROOT)}:{line}: {module} (layer {own}) imports {name} ({layer})"
                )
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The rules are not vacuous: an upward import in a lower layer is found, with its line."""
    path = tmp_path / "frames.py"
    path.write_text("import os\n\n\ndef f():\n    from ..engine import CorridorKeyEngine\n")
    found = list(_imports("corridorkey_engine.keying.frames", path))
    assert found == [(1, "os"), (5, "corridorkey_engine.engine.CorridorKeyEngine")]
    assert _layer(found[1][1]) > _layer("corridorkey_engine.keying.frames")


@pytest.mark.parametrize("package", ["ckpt_formats", "corridorkey_engine"])
def test_importing_a_package_imports_no_torch(package: str) -> None:
    code = (
        f"import sys, {package}\n"
        "heavy = sorted({'torch', 'safetensors', 'huggingface_hub', 'timm', 'cv2'} & set(sys.modules))\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"import {package} pulled in {done.stdout.strip()} {done.stderr[-500:]}"


# -- no import cycle --------------------------------------------------------------------------------------

PENDING_CYCLES: list[set[str]] = []
"""Cycles another change is removing (issue 19 moves the hub's download pieces apart). Each entry must
still be a cycle: once it is gone, delete it here."""


def _ancestors(module: str) -> list[str]:
    """``a``, ``a.b`` for ``a.b.c``: the packages whose ``__init__`` runs before ``a.b.c`` does."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _module_of(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported dotted name lands in (``pkg.mod.func`` -> ``pkg.mod``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, Path], root: Path = ROOT) -> dict[str, dict[str, str]]:
    """module -> {module it imports: ``file:line`` of the first such import}.

    Every import statement counts (module level, inside functions, under ``TYPE_CHECKING``). Importing
    ``a.b.c`` runs ``a/b/__init__.py`` first, so it is an import of ``a.b`` too, unless the importer is
    inside ``a.b`` itself (its package is already being imported by then).
    """
    graph: dict[str, dict[str, str]] = {m: {} for m in modules}
    for module, path in modules.items():
        own = {module, *_ancestors(module)}
        for line, name in _imports(module, path):
            target = _module_of(name, modules)
            if target is None:
                continue
            for reached in (*_ancestors(target), target):
                if reached in modules and reached not in own:
                    graph[module].setdefault(reached, f"{path.relative_to(root)}:{line}")
    return graph


def import_cycles(graph: dict[str, dict[str, str]]) -> list[tuple[frozenset[str], list[str]]]:
    """Each group of modules that import one another in circles (strongly connected, 2+ modules), with one
    shortest circle through its first module: ``({a, b, c}, [a, b, a])``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    circles = []
    for group in groups:
        start = min(group)
        paths = {start: [start]}
        queue = [start]
        while queue:  # breadth first, inside the group: the shortest way back to start
            v = queue.pop(0)
            for w in sorted(graph[v]):
                if w == start:
                    circles.append((frozenset(group), [*paths[v], start]))
                    queue = []
                    break
                if w in group and w not in paths:
                    paths[w] = [*paths[v], w]
                    queue.append(w)
    return sorted(circles)


def _describe(group: frozenset[str], circle: list[str], graph: dict[str, dict[str, str]]) -> str:
    steps = [f"{a} -> {b} ({graph[a][b]})" for a, b in itertools.pairwise(circle)]
    return (
        f"import cycle among {len(group)} modules ({', '.join(sorted(group))}), e.g. "
        + " -> ".join(circle)
        + ":\n    "
        + "\n    ".join(steps)
    )


def test_no_import_cycle() -> None:
    """No module imports itself through others: a cycle is named module by module, with each import's line
    (``python3 ../shared/tools/import_cycles.py src`` lists them too)."""
    graph = import_graph(MODULES)
    cycles = import_cycles(graph)
    found = [_describe(group, circle, graph) for group, circle in cycles if group not in PENDING_CYCLES]
    assert not found, "\n".join(found)
    gone = [sorted(p) for p in PENDING_CYCLES if p not in [group for group, _ in cycles]]
    assert not gone, f"no longer a cycle, remove it from PENDING_CYCLES: {gone}"


def test_the_cycle_check_names_a_type_only_cycle_and_one_through_a_package(tmp_path: Path) -> None:
    """The check is not vacuous: a cycle made only of a ``TYPE_CHECKING`` import is found, and so is one
    closed by a package's ``__init__`` (importing ``pkg.low`` runs ``pkg/__init__.py``, which imports
    ``pkg.high``)."""
    (tmp_path / "app" / "pkg").mkdir(parents=True)
    files = {
        "app/__init__.py": "",
        "app/types.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .users import User\n",
        "app/users.py": "from .types import Id\n",
        "app/pkg/__init__.py": "from .high import run\n",
        "app/pkg/low.py": "import os\n",
        "app/pkg/high.py": "def run():\n    from ..client import call\n",
        "app/client.py": "from .pkg.low import helper\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    modules = {
        ".".join(p.relative_to(tmp_path).with_suffix("").parts).removesuffix(".__init__"): p
        for p in tmp_path.rglob("*.py")
    }
    graph = import_graph(modules, tmp_path)
    cycles = import_cycles(graph)
    assert [circle for _, circle in cycles] == [
        ["app.client", "app.pkg", "app.pkg.high", "app.client"],
        ["app.types", "app.users", "app.types"],
    ]
    message = _describe(*cycles[1], graph)
    assert "(app.types, app.users)" in message
    assert "app.types -> app.users (app/types.py:3)" in message


WEB_FRAMEWORKS = {"fastapi", "starlette", "uvicorn", "pydantic"}
WEB_MODULES = {"corridorkey_engine.preview.server"}
"""The only modules that may import a web framework (``corridorkey preview`` imports them when it runs)."""


def test_web_frameworks_are_imported_only_by_the_preview_server() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {module} imports {name}"
        for module, path in MODULES.items()
        for line, name in _imports(module, path)
        if name.split(".")[0] in WEB_FRAMEWORKS and module not in WEB_MODULES
    ]
    assert not wrong, "\n".join(wrong)
    server = MODULES["corridorkey_engine.preview.server"]
    imported = {name.split(".")[0] for _, name in _imports("corridorkey_engine.preview.server", server)}
    assert "fastapi" in imported  # the table names the module that really serves


def test_the_corridorkey_command_line_imports_no_web_framework() -> None:
    code = (
        "import sys\n"
        "from corridorkey_engine import cli, cli_args, cli_preview\n"
        "from corridorkey_engine.preview import session, settings, frames, render\n"
        "cli_args.build_parser()\n"
        f"web = sorted({{m.split('.')[0] for m in sys.modules}} & {WEB_FRAMEWORKS!r})\n"
        "print(web)\n"
        "sys.exit(1 if web else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"the CLI pulled in {done.stdout.strip()} {done.stderr[-500:]}"
