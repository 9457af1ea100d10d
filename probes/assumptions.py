"""What a verdict takes for granted without a table row, said on its line and in JSON."""

from __future__ import annotations

from pytest_gpuinfer.probes import coverage
from pytest_gpuinfer.probes.facts import Facts, UnknownFact
from pytest_gpuinfer.probes.rules_coverage import USED_IN

_HOW = {
    "assumed": "the best official build for this GPU",
    "extrapolated": "newer than the build table, judged by its newest release",
}


def _torch_build(f: Facts, out: list[str]) -> None:
    try:
        build = f.torch_build
    except UnknownFact:
        return
    if build is None or (build.how in ("installed", "official") and f.platform == "x86_64"):
        return
    if build.how == "pypi":
        base = build.version.split("+", 1)[0]
        out.append(
            f"{build.label} assumed: the PyPI wheel for {f.platform} (pip install torch=={base})"
        )
    elif build.how in _HOW:
        out.append(f"{build.label} assumed: {_HOW[build.how]}")
    if f.platform != "x86_64" and build.how != "installed" and build.targets:
        out.append(
            f"{build.label} for {f.platform} assumed to target what its x86_64 build does "
            "(only x86_64 builds' targets are tabulated)"
        )


def assumptions_of(mode: str, f: Facts) -> list[str]:
    """The assumptions behind the verdict for ``mode`` on these facts."""
    out: list[str] = []
    if f.on_gpu:
        _torch_build(f, out)
        if mode in USED_IN["bitsandbytes"] and f.platform != "x86_64" and f.has("bitsandbytes"):
            out.append(
                f"{f.pkg('bitsandbytes')}'s {f.platform} libraries assumed to hold the code "
                "its x86_64 libraries do (cuobjdump read the x86_64 wheels)"
            )
    for package, modes in USED_IN.items():
        version = f.software.packages.get(package)
        if mode not in modes or not version:
            continue
        release = coverage.as_release(version)
        if release is not None:
            out.append(f"{package} {version} judged as release {release}")
        missing = coverage.uncovered(package, version)
        if missing is not None:
            out.append(f"{package} {version} behaves as the releases read (no table read it)")
    return out
