"""The software stack a simulated profile assumes for packages this machine lacks.

A CI planning job often has no torch (or no bitsandbytes) installed: judging a built-in
profile with that machine's packages makes every mode "unsupported" on any GPU. The
runner it plans for will have the stack installed, so where this machine lacks a package
the profile assumes the newest release the rules have read that drives its GPU:

* torch: the newest release with native code for the GPU's compute capability, in the
  CUDA build :func:`probes.builds.last_release_covering` names (its newest patch release
  in ``probes/data/floors.json``);
* bitsandbytes: the newest release that ships a library for the GPU
  (:func:`probes.builds.bnb_releases_covering`);
* transformers, accelerate: the newest release in ``probes/data/floors.json``.

Packages this machine has keep their versions (the planning job installs the same pins as
the runners); a profile's own ``software`` table wins over both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from packaging.version import Version

from pytest_gpuinfer.probes.profiles import Profile

ASSUMED_PACKAGES: tuple[str, ...] = ("torch", "transformers", "accelerate", "bitsandbytes")


def _newest_covered(package: str, minor: str | None = None) -> str | None:
    from pytest_gpuinfer.probes.rules_floors import load_data

    covered = [str(v) for v in load_data().get("covered", {}).get(package, [])]
    if minor is not None:
        covered = [v for v in covered if f"{Version(v).major}.{Version(v).minor}" == minor]
    return max(covered, key=Version) if covered else None


def assumed_versions(profile: Profile) -> dict[str, str]:
    """Package -> the version assumed for ``profile``'s GPU (see the module docstring)."""
    from pytest_gpuinfer.probes.builds import bnb_releases_covering, last_release_covering

    versions: dict[str, str] = {}
    covering = last_release_covering(profile.compute_capability)
    if covering is not None:
        release, cuda = covering
        version = _newest_covered("torch", release) or f"{release}.0"
        versions["torch"] = f"{version}+cu{cuda.replace('.', '')}"
    bnb = bnb_releases_covering(profile.compute_capability)
    if bnb is not None:
        versions["bitsandbytes"] = bnb[1]
    for package in ("transformers", "accelerate"):
        newest = _newest_covered(package)
        if newest is not None:
            versions[package] = newest
    return versions


def with_assumed_stack(profile: Profile, installed: Mapping[str, str | None]) -> Profile:
    """``profile`` with the assumed version of every package ``installed`` lacks."""
    missing = [p for p in ASSUMED_PACKAGES if not installed.get(p) and p not in profile.software]
    if not missing:
        return profile
    assumed = assumed_versions(profile)
    software = {**{p: assumed[p] for p in missing if p in assumed}, **profile.software}
    torch_cuda = profile.torch_cuda
    if "torch" in software and "torch" in missing:
        from pytest_gpuinfer.probes.builds import cuda_from_local_label

        torch_cuda = cuda_from_local_label(software["torch"]) or torch_cuda
    return replace(profile, software=software, torch_cuda=torch_cuda)
