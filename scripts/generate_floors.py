"""Generate probes/data/floors.json: the version floors between packages, read from releases.

Run by a maintainer when releases appear, never at audit time:

    /work/venv/bin/python scripts/generate_floors.py [--cache /work/wheelcache]

For every final release in the window (WINDOWS) it reads, from the release's own files:
- the declared requirements (``Requires-Dist`` on the other packages of the stack, and
  ``Requires-Python``) from the wheel's ``*.dist-info/METADATA``; for torch only that file
  is fetched (scripts/floors_fetch.py);
- the floors transformers' code checks at import or at load (CHECKS: a regex over one file
  of the wheel, each hit kept with its file and line).
Consecutive releases with the same floor become one row whose ``releases`` specifier spans
them. Every release read is listed under ``covered``.
"""

from __future__ import annotations

import argparse
import datetime
import email.parser
import json
import re
import sys
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floors_fetch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pytest_gpuinfer.probes.modes import MODES

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "probes" / "data" / "floors.json"
WINDOWS = {
    "torch": "2.0",
    "transformers": "4.30",
    "accelerate": "0.20",
    "bitsandbytes": "0.31",
    "optimum": "1.8",
}
"""Package -> first release read (flash-attn's floors are generated elsewhere)."""
STACK = frozenset(WINDOWS) | {"flash-attn"}
EXTRAS = {"transformers": "torch"}
"""The extra users install with (``transformers[torch]``): its floors are kept, unconfirmed."""
ALL = ["all"]
QUANTIZED = ["int8", "nf4"]
USED_BY = {"bitsandbytes": QUANTIZED, "optimum": ["fastpath"]}
"""The modes that load a package: its declared floors bite there (transformers imports
bitsandbytes only to quantize, optimum only for BetterTransformer)."""
# Markers are judged for the machines the audit covers: Linux x86_64, CPython 3.11.
MARKER_ENV: dict[str, str] = {
    **{key: str(value) for key, value in default_environment().items()},
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "python_version": "3.11",
    "python_full_version": "3.11.7",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
}


@dataclass(frozen=True)
class Check:
    """Where one package's code checks another's version, and what happens below it."""

    package: str
    requires: str
    file: str
    pattern: str
    """Group 1 is the floor; group 2, when present, must be followed by ``guard``."""
    kind: str
    effect: str
    modes: list[str]
    guard: str | None = None
    """A regex the next non-blank line must match (the raise that makes it a floor)."""
    needs: tuple[tuple[str, str], ...] = ()
    """(file, regex) pairs that must also match in the release for the floor to bite."""


_BNB_VERSION = r'version\.parse\(importlib(?:_metadata|\.metadata)\.version\("bitsandbytes"\)\)'
CHECKS: tuple[Check, ...] = (
    Check(
        "transformers",
        "torch",
        "transformers/utils/import_utils.py",
        r"Disabling PyTorch because PyTorch >= ([\d.]+) is required",
        "import",
        "transformers disables torch at import ('Disabling PyTorch because PyTorch >= X is "
        "required'): from_pretrained raises ImportError",
        ALL,
    ),
    Check(
        "transformers",
        "accelerate",
        "transformers/utils/import_utils.py",
        r'^ACCELERATE_MIN_VERSION = "([\d.]+)"',
        "load-quantized",
        "is_accelerate_available() is False below it: the bitsandbytes quantizer raises "
        "ImportError at from_pretrained",
        QUANTIZED,
        needs=(
            (
                "transformers/utils/import_utils.py",
                r"def is_accelerate_available\(min_version: str = ACCELERATE_MIN_VERSION\)",
            ),
            ("transformers/quantizers/quantizer_bnb_8bit.py", r"is_accelerate_available\(\)"),
        ),
    ),
    Check(
        "transformers",
        "bitsandbytes",
        "transformers/utils/import_utils.py",
        r'^BITSANDBYTES_MIN_VERSION = "([\d.]+)"',
        "load-quantized",
        "is_bitsandbytes_available() is False below it: the bitsandbytes quantizer raises "
        "ImportError at from_pretrained",
        QUANTIZED,
        needs=(
            (
                "transformers/utils/import_utils.py",
                r"def is_bitsandbytes_available\(min_version: str = BITSANDBYTES_MIN_VERSION\)",
            ),
            (
                "transformers/quantizers/quantizer_bnb_8bit.py",
                r"is_bitsandbytes_available\(\)",
            ),
        ),
    ),
    Check(
        "transformers",
        "bitsandbytes",
        "transformers/quantizers/quantizer_bnb_8bit.py",
        _BNB_VERSION + r' < version\.parse\("([\d.]+)"\):',
        "load-int8",
        "ValueError at from_pretrained (8-bit)",
        ["int8"],
        guard=r"raise ValueError\(",
    ),
    Check(
        "transformers",
        "bitsandbytes",
        "transformers/quantizers/quantizer_bnb_4bit.py",
        _BNB_VERSION + r' < version\.parse\("([\d.]+)"\):',
        "load-4bit",
        "ValueError at from_pretrained (4-bit)",
        ["nf4"],
        guard=r"raise ValueError\(",
    ),
    Check(
        "transformers",
        "bitsandbytes",
        "transformers/modeling_utils.py",
        r"supports_4bit = " + _BNB_VERSION + r' >= version\.parse\("([\d.]+)"\)',
        "load-4bit",
        "ValueError at from_pretrained (4-bit)",
        ["nf4"],
        needs=(("transformers/modeling_utils.py", r"if load_in_4bit and not supports_4bit:"),),
    ),
)


@dataclass(frozen=True)
class Fact:
    """One floor read from one release."""

    package: str
    release: Version
    requires: str
    specifier: str
    kind: str
    effect: str
    modes: tuple[str, ...]
    file: str
    line: int

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.requires, self.kind, self.specifier, self.effect)


def declared(package: str, release: Version, metadata: str, file: str) -> Iterator[Fact]:
    """Requires-Dist on the stack's packages (and Requires-Python) of one release."""
    lines = metadata.splitlines()
    headers = email.parser.HeaderParser().parsestr(metadata)
    extra = EXTRAS.get(package)
    for number, line in enumerate(lines, 1):
        if line.startswith("Requires-Python:"):
            spec = str(SpecifierSet(line.split(":", 1)[1].strip()))
            if spec:
                yield Fact(
                    package, release, "python", spec, "declared",
                    "pip refuses to install it on this Python", tuple(USED_BY.get(package, ALL)),
                    file, number,
                )  # fmt: skip
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = Requirement(line.split(":", 1)[1].strip())
        name = requirement.name.lower().replace("_", "-")
        if name not in STACK or name == package or not str(requirement.specifier):
            continue
        marker = requirement.marker
        if marker is None or marker.evaluate({**MARKER_ENV, "extra": ""}):
            kind, effect = "declared", "pip refuses to install them together"
        elif extra and marker.evaluate({**MARKER_ENV, "extra": extra}):
            kind = "declared-extra"
            effect = f"pip refuses {package}[{extra}] with it; nothing checks it at import"
        else:
            continue
        modes = USED_BY.get(package, USED_BY.get(name, ALL))
        yield Fact(
            package, release, name, str(requirement.specifier), kind, effect,
            tuple(modes), file, number,
        )  # fmt: skip
    assert headers["Name"], f"{file}: no Name in METADATA"


def checked(release: Version, wheel: zipfile.ZipFile) -> Iterator[Fact]:
    """The floors transformers' code checks, found by CHECKS in one release's wheel."""
    names = set(wheel.namelist())
    sources: dict[str, list[str]] = {}

    def lines_of(name: str) -> list[str]:
        if name not in sources:
            sources[name] = (
                wheel.read(name).decode("utf-8", "replace").splitlines() if name in names else []
            )
        return sources[name]

    for check in CHECKS:
        lines = lines_of(check.file)
        if not lines or not all(
            any(re.search(rx, line) for line in lines_of(f)) for f, rx in check.needs
        ):
            continue
        for number, line in enumerate(lines, 1):
            match = re.search(check.pattern, line.strip() if check.guard else line)
            if match is None:
                continue
            if check.guard is not None:
                following = next((x for x in lines[number:] if x.strip()), "")
                if not re.search(check.guard, following):
                    continue
            yield Fact(
                check.package, release, check.requires, f">={match.group(1)}", check.kind,
                check.effect, tuple(check.modes), check.file, number,
            )  # fmt: skip


def read_release(release: floors_fetch.ReleaseFile, cache: Path) -> tuple[list[Fact], str]:
    """Every floor of one release, and what was read for it."""
    if release.package == "torch":
        path, how = floors_fetch.fetch_metadata(release, cache)
        name = f"{release.filename}:*.dist-info/METADATA"
        return list(declared("torch", release.version, path.read_text(), name)), how
    path = floors_fetch.fetch_wheel(release, cache)
    with zipfile.ZipFile(path) as wheel:
        metadata_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(metadata_name).decode("utf-8")
        facts = list(declared(release.package, release.version, metadata, metadata_name))
        if release.package == "transformers":
            facts = _without_checked_extras([*facts, *checked(release.version, wheel)])
    return facts, release.filename


def _without_checked_extras(facts: list[Fact]) -> list[Fact]:
    """An extra's floor only in the modes where no check of the code states the same one."""
    kept: list[Fact] = []
    for fact in facts:
        if fact.kind != "declared-extra":
            kept.append(fact)
            continue
        checked_modes = {
            mode
            for other in facts
            if other.kind not in ("declared", "declared-extra")
            and (other.requires, other.specifier) == (fact.requires, fact.specifier)
            for mode in (MODES if other.modes == tuple(ALL) else other.modes)
        }
        modes = [m for m in (MODES if fact.modes == tuple(ALL) else fact.modes)]
        left = [m for m in modes if m not in checked_modes]
        if left:
            kept.append(replace(fact, modes=tuple(ALL) if left == list(MODES) else tuple(left)))
    return kept


def _span(first: Version, after: Version | None, last: Version) -> str:
    # Bounded above by the next release read without the floor, else by the newest read:
    # a release nobody read is left to the closed-world check ("unconfirmed").
    return f">={first},<{after}" if after is not None else f">={first},<={last}"


def merge(package: str, versions: list[Version], facts: list[Fact]) -> list[dict[str, object]]:
    """Runs of consecutive releases (in ``versions``) with the same floor, one row each."""
    by_release: dict[Version, dict[tuple[str, str, str, str], Fact]] = {}
    for fact in facts:
        by_release.setdefault(fact.release, {}).setdefault(fact.key, fact)
    rows: list[dict[str, object]] = []
    open_runs: dict[tuple[str, str, str, str], tuple[Fact, Version]] = {}
    for version in [*versions, None]:
        present = by_release.get(version, {}) if version is not None else {}
        for key in list(open_runs):
            if key not in present:
                first, last = open_runs.pop(key)
                rows.append(_row(package, first, version, last))
        for key, fact in present.items():
            if key in open_runs:
                open_runs[key] = (open_runs[key][0], fact.release)
            else:
                open_runs[key] = (fact, fact.release)
    return rows


def _row(package: str, first: Fact, after: Version | None, last: Version) -> dict[str, object]:
    return {
        "package": package,
        "releases": _span(first.release, after, last),
        "requires": first.requires,
        "specifier": first.specifier,
        "kind": first.kind,
        "effect": first.effect,
        "modes": list(first.modes),
        "source": {"release": str(first.release), "file": first.file, "line": first.line},
    }


def generate(
    cache: Path,
    workers: int = 4,
    only: frozenset[str] | None = None,
    kept: dict[str, Any] | None = None,
) -> dict[str, object]:
    """Read every package of WINDOWS; with ``only``, read those and keep the other
    packages' rows and coverage from ``kept`` (the current data file)."""
    covered: dict[str, list[str]] = {}
    yanked: dict[str, list[str]] = {}
    rows: list[dict[str, object]] = []
    for package, minimum in WINDOWS.items():
        if only is not None and package not in only:
            assert kept is not None, "--only needs the current data file"
            covered[package] = kept["covered"][package]
            if package in kept["read"].get("yanked", {}):
                yanked[package] = kept["read"]["yanked"][package]
            rows.extend(r for r in kept["floors"] if r["package"] == package)
            continue
        releases = floors_fetch.releases(package, minimum)
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda r: read_release(r, cache), releases))
        versions = [r.version for r in releases]
        covered[package] = [str(v) for v in versions]
        if any(r.yanked for r in releases):
            yanked[package] = [str(r.version) for r in releases if r.yanked]
        rows.extend(merge(package, versions, [f for facts, _ in results for f in facts]))
    rows.sort(key=lambda r: (str(r["package"]), str(r["requires"]), str(r["kind"]),
                             Version(str(r["source"]["release"]))))  # type: ignore[index]  # fmt: skip
    return {
        "schema": "pytest-gpuinfer/floors",
        "schema_version": "1",
        "generated_by": "scripts/generate_floors.py",
        "generated_at": datetime.date.today().isoformat(),
        "read": {
            "window": {p: f">={m}" for p, m in WINDOWS.items()},
            "releases": "every final release in the window (PyPI simple index), yanked ones "
            "included: pip installs a yanked release when it is pinned with ==",
            "yanked": yanked,
            "files": "one wheel per release (Linux x86_64 / pure); torch: METADATA only, "
            "from the PEP 658 file or, where the index has none, by HTTP Range",
        },
        "covered": covered,
        "floors": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/work/wheelcache"))
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(WINDOWS),
        help="re-read only this package (repeatable); the others' rows are kept from --output",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    only = frozenset(args.only) if args.only else None
    kept = json.loads(args.output.read_text()) if only else None
    data = generate(args.cache, only=only, kept=kept)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(data, indent=1) + "\n")
    covered = data["covered"]
    assert isinstance(covered, dict)
    counts = ", ".join(f"{p} {len(v)}" for p, v in covered.items())
    floors = data["floors"]
    assert isinstance(floors, list)
    print(
        f"{args.output}: {len(floors)} floor rows from {counts} releases "
        f"in {time.monotonic() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
