"""Installed names: the wheel ships pytest_gpuinfer (with its probes), no top-level `probes`."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import pytest_gpuinfer

ROOT = Path(__file__).resolve().parents[1]


def _missing_build_requirements() -> list[str]:
    """pyproject's build requirements this interpreter lacks (each as written there)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    toml = pytest.importorskip(
        "tomllib" if sys.version_info >= (3, 11) else "tomli",
        reason="reading pyproject's build requirements needs tomllib (3.11+) or tomli",
    )
    data = toml.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    missing = []
    for text in data["build-system"]["requires"]:
        requirement = Requirement(text)
        try:
            found = version(requirement.name)
        except PackageNotFoundError:
            missing.append(text)
            continue
        if not requirement.specifier.contains(found, prereleases=True):
            missing.append(f"{text} (found {found})")
    return missing


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build isolation would download the build requirements: the GPU machine has no
    # network. Build with the ones installed here, or say which are missing.
    missing = _missing_build_requirements()
    if missing:
        pytest.skip(
            f"building the wheel offline needs {', '.join(missing)} installed "
            "(with build isolation pip would fetch it from the network)"
        )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("-w", str(out), str(ROOT)),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (found,) = out.glob("pytest_gpuinfer-*.whl")
    return found


def test_wheel_installs_probes_under_the_project_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert "probes" not in top_level
    assert {"pytest_gpuinfer/probes/rules.py", "pytest_gpuinfer/probes/modes.py"} <= set(names)
    assert f"pytest_gpuinfer-{pytest_gpuinfer.__version__}.dist-info/METADATA" in names


def test_import_probes_fails_after_installing_the_wheel(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    env = {**os.environ, "PYTHONPATH": str(target)}
    prefix = str(target)
    code = (
        "import importlib.util, pytest_gpuinfer.probes.rules as r, pytest_gpuinfer as p\n"
        f"print(importlib.util.find_spec('probes'), p.__file__.startswith({prefix!r}), "
        "len(r.RULES) > 0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "True", "True"]


def test_version_is_the_distribution_version() -> None:
    from importlib.metadata import version

    assert pytest_gpuinfer.__version__ == version("pytest-gpuinfer")


def test_wheel_ships_every_product_folder_and_the_schema_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("cli", "fleet", "loading", "plugin", "requirements", "schemas"):
        assert f"pytest_gpuinfer/{folder}/__init__.py" in names, folder
    for fmt in ("report", "requirements", "merge", "routing", "error", "audit"):
        assert f"pytest_gpuinfer/schemas/{fmt}.schema.json" in names, fmt
