"""The folders' import rules of docs/contracts.md, read from the source with ``ast``.

Every import counts, at module level or inside a function: a lazy import is still an
edge between two products.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pytest_gpuinfer"

# folder -> the products above it that it must never import (besides pytest, for most).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "probes": ("loading", "requirements", "fleet", "plugin", "cli", "bench", "assertions"),
    "loading": ("requirements", "fleet", "plugin", "cli"),
    "requirements": ("loading", "fleet", "plugin", "cli", "bench"),
    "fleet": ("loading", "plugin", "cli", "bench"),
    "cli": ("plugin",),
    "schemas": ("probes", "loading", "requirements", "fleet", "plugin", "cli", "bench"),
}
# The one module outside plugin/ that imports pytest: the bench fixture's implementation,
# which the plugin imports only when a test asks for gpuinfer_bench.
PYTEST_ALLOWED_OUTSIDE_PLUGIN = {"bench/fixture.py"}


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from pytest_gpuinfer import loading` imports the product itself.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _product(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "pytest_gpuinfer" or len(parts) < 2:
        return None
    return parts[1]


def _imports_pytest(names: set[str]) -> bool:
    return any(n.split(".")[0] in ("pytest", "_pytest") for n in names)


def test_only_the_plugin_folder_imports_pytest() -> None:
    offenders = []
    for path in _modules(PACKAGE.resolve()) + _modules(ROOT / "probes"):
        relative = path.relative_to(PACKAGE) if path.is_relative_to(PACKAGE) else None
        if relative is not None and relative.parts[0] == "plugin":
            continue
        if relative is not None and relative.as_posix() in PYTEST_ALLOWED_OUTSIDE_PLUGIN:
            continue
        if _imports_pytest(_imports(path)):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_a_folder_imports_nothing_above_it(folder: str) -> None:
    directory = ROOT / "probes" if folder == "probes" else PACKAGE / folder
    forbidden = set(FORBIDDEN[folder])
    offenders = []
    for path in _modules(directory):
        for name in sorted(_imports(path)):
            if _product(name) in forbidden:
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_probes_import_nothing_of_the_package_above_them() -> None:
    offenders = []
    for path in _modules(ROOT / "probes"):
        for name in sorted(_imports(path)):
            product = _product(name)
            if name.split(".")[0] == "pytest_gpuinfer" and product not in (None, "probes"):
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
            if name == "pytest_gpuinfer":
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_every_product_folder_states_its_job_in_one_line() -> None:
    for folder in ("loading", "requirements", "plugin", "fleet", "cli", "bench", "assertions"):
        doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))
        assert doc, folder
        assert len(doc.splitlines()[0]) <= 100, folder


def test_the_output_writer_imports_only_the_error_types() -> None:
    # Every layer writes through pytest_gpuinfer.outputs, so it may sit below all of them.
    names = _imports(PACKAGE / "outputs.py")
    ours = {n for n in names if n.split(".")[0] == "pytest_gpuinfer"}
    assert ours <= {"pytest_gpuinfer.probes.errors", "pytest_gpuinfer.probes.errors.InputError"}
    assert not _imports_pytest(names)
