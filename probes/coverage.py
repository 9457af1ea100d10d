"""The closed world: which releases each generated table read, and whether one is covered.

Every data file under ``data/`` lists the releases its generator read (its ``covered``
key: package -> releases). A version is covered by a table when it is one of those
releases (its local label aside: ``2.6.0+cu126`` is torch 2.6.0; a pre-release is judged
as the release it leads to, and says so among the verdict's assumptions); a version newer
than the newest read, older than the oldest, or between two read releases but not one of
them is not, and nothing a table says holds for it. The closed world flags the versions
newer than every release read and those between two of them; below a window the hand rows
speak. ``DATA_DIR`` is module-level so a test can point it at a synthetic data folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from packaging.version import InvalidVersion, Version

DATA_DIR: Path = Path(__file__).resolve().parent / "data"
"""Where the tables are read from (tests monkeypatch it)."""

TABLES: tuple[str, ...] = (
    "floors.json",
    "bnb_binaries.json",
    "fastpath.json",
    "torch_platforms.json",
)
"""The generated tables, each with a ``covered`` key."""

PACKAGE_FACTS: dict[str, str] = {
    "torch": "its official builds per platform and its declared floors",
    "transformers": "its floors on torch, accelerate and bitsandbytes and its attention paths",
    "accelerate": "its declared floors",
    "bitsandbytes": "its CUDA libraries, their architectures, its wheels per platform and "
    "its torch floor",
    "optimum": "its declared floors and BetterTransformer's bounds",
    "flash-attn": "its floors, GPU check and kernels",
}
"""What the tables state about each package: the fact an uncovered version leaves unknown."""

Where = Literal["read", "newer", "older", "between", "unparsable"]


@dataclass(frozen=True)
class TableCoverage:
    """Whether one table read one release of one package."""

    table: str
    package: str
    version: str
    where: Where
    first: str
    last: str
    below: str | None = None
    """For ``between``: the read releases either side."""
    above: str | None = None

    @property
    def covered(self) -> bool:
        return self.where == "read"

    @property
    def text(self) -> str:
        """ "floors.json read transformers 4.30.0-5.25.0"."""
        return f"{self.table} read {self.package} {self.first}-{self.last}"


@lru_cache(maxsize=32)
def _covered_of(data_dir: Path, table: str) -> dict[str, tuple[Version, ...]]:
    path = data_dir / table
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    covered = raw.get("covered", {}) if isinstance(raw, dict) else {}
    return {
        package: tuple(sorted(Version(v) for v in versions))
        for package, versions in covered.items()
        if isinstance(versions, list)
    }


def covered_releases(table: str, package: str) -> tuple[Version, ...]:
    """The releases of ``package`` that ``table`` read, oldest first (empty: none)."""
    return _covered_of(DATA_DIR, table).get(package, ())


def tables_for(package: str) -> tuple[str, ...]:
    """The tables that read any release of ``package``."""
    return tuple(t for t in TABLES if covered_releases(t, package))


def coverage(table: str, package: str, version: str) -> TableCoverage | None:
    """How ``table`` covers ``package`` at ``version``; None when it reads no release of it."""
    releases = covered_releases(table, package)
    if not releases:
        return None
    first, last = str(releases[0]), str(releases[-1])
    try:
        public = Version(Version(version).public)
    except InvalidVersion:
        return TableCoverage(table, package, version, "unparsable", first, last)
    if public in releases:
        return TableCoverage(table, package, version, "read", first, last)
    if as_release(version) in releases:
        return TableCoverage(table, package, version, "read", first, last)
    if public > releases[-1]:
        return TableCoverage(table, package, version, "newer", first, last)
    if public < releases[0]:
        return TableCoverage(table, package, version, "older", first, last)
    below = max(r for r in releases if r < public)
    above = min(r for r in releases if r > public)
    return TableCoverage(table, package, version, "between", first, last, str(below), str(above))


def as_release(version: str) -> Version | None:
    """A pre- or dev-release (``2.5.0a0+872d972e41.nv24.08``) as the release it leads to;
    None for a release itself or a version that cannot be parsed."""
    try:
        parsed = Version(version)
    except InvalidVersion:
        return None
    if not (parsed.is_prerelease or parsed.is_devrelease):
        return None
    return Version(parsed.base_version)


def is_covered(package: str, version: str, table: str) -> bool:
    """Whether ``table`` read this release of ``package``."""
    found = coverage(table, package, version)
    return found is not None and found.covered


def uncovered(package: str, version: str) -> list[TableCoverage] | None:
    """The tables' coverage when none of them read ``version``; None when one did, when no
    table reads the package at all, or when the version is older than a table's window:
    the hand rows of the seed (transformers 4.29, accelerate 0.12, bitsandbytes < 0.31.8)
    speak below the windows, which start where the generated facts begin."""
    found = [c for t in TABLES if (c := coverage(t, package, version)) is not None]
    if not found or any(c.covered or c.where == "older" for c in found):
        return None
    return found


def describe(found: list[TableCoverage]) -> str:
    """ "transformers 5.99.0, newer than every release read (tables: floors.json read ...)"."""
    head = found[0]
    where = {
        "newer": "newer than every release read",
        "older": "older than every release read",
        "unparsable": "a version no table can place",
        "read": "read",
        "between": "",
    }[head.where]
    if head.where == "between":
        where = f"not a release read (between {head.below} and {head.above})"
    tables = "; ".join(c.text for c in found)
    return f"{head.package} {head.version}, {where} (tables: {tables})"


def clear_cache() -> None:
    """Forget the tables read (after DATA_DIR changes or a table is rewritten)."""
    _covered_of.cache_clear()
