"""The layer rules of docs/architecture.md, checked on the source: every import statement under src/ and
plugins/ (at module level or inside a function, ``TYPE_CHECKING`` ones too) is parsed with ``ast``.

The rules are data (:data:`PACKAGE_RULES`, :data:`ENGINE_LAYERS`) naming packages and corridorkey_engine's
layers only, so renaming a module inside ckpt_formats or a layer's modules needs no change here.
"""

from __future__ import annotations

import ast
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
    "corridorkey_engine.cli_args": 6,
    "corridorkey_engine.cli": 6,
    "corridorkey_engine.cli_ray": 6,
    "corridorkey_engine.cli_report": 6,
    "corridorkey_engine.cli_plan": 6,
    "corridorkey_engine.__main__": 7,  # `python -m corridorkey_engine`: runs the command line
}
"""corridorkey_engine's layers, bottom (0) to top: a module may import its own layer and the ones below,
never one above. A module's layer is that of the longest entry its dotted name starts with. The package's
``__init__`` exports names lazily (by string, no import statement) and belongs to no layer."""


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
        (prefix for prefix in ENGINE_LAYERS if name == prefix or name.startswith(prefix + ".")),
        key=len,
        default=None,
    )
    return None if best is None else ENGINE_LAYERS[best]


MODULES = dict(_modules())
TOP_LEVEL = {name.split(".")[0] for name in MODULES}


def test_the_rule_tables_match_the_tree() -> None:
    assert set(PACKAGE_RULES) <= TOP_LEVEL, "a package in PACKAGE_RULES no longer exists"
    plugins = TOP_LEVEL - set(PACKAGE_RULES)
    assert {"ckpt_formats_safetensors", "ckpt_formats_pickle", "ckpt_formats_npz"} <= plugins
    engine = [m for m in MODULES if m.startswith("corridorkey_engine.")]
    unplaced = [m for m in engine if _layer(m) is None]
    assert not unplaced, f"modules in no layer of ENGINE_LAYERS: {unplaced}"
    for prefix in ENGINE_LAYERS:  # every layer still names something
        assert any(m == prefix or m.startswith(prefix + ".") for m in engine), prefix


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


def test_no_engine_layer_imports_a_higher_one() -> None:
    wrong = []
    for module, path in MODULES.items():
        own = _layer(module)
        if own is None:
            continue
        for line, name in _imports(module, path):
            layer = _layer(name)
            if layer is not None and layer > own:
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
