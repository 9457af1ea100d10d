"""Rule rows for the stack every mode needs: torch and transformers, torch's GPU build, CUDA."""

from __future__ import annotations

from packaging.version import Version

from pytest_gpuinfer.probes import builds
from pytest_gpuinfer.probes.facts import Facts, UnknownFact, cc_text
from pytest_gpuinfer.probes.report import Status
from pytest_gpuinfer.probes.rule import ALL, Rule, always

# CUDA toolkit major -> oldest compute capability it still compiles for.
CUDA_TOOLKIT_MIN_CC: dict[int, tuple[int, int]] = {11: (3, 5), 12: (5, 0), 13: (7, 5)}


def _coverage(f: Facts) -> builds.Coverage | None:
    """How the torch build in play runs this GPU; UnknownFact when nobody can say."""
    build = f.torch_build
    if build is None:
        return "sass"  # no torch, or a CPU build: other rows speak
    if build.targets is None:
        if build.how == "installed":
            raise UnknownFact(f"{build.label} reported no arch list")
        release, _ = builds.torch_release(build.version)
        official = (
            f"official CUDA builds of torch {release.release}: " + ", ".join(release.builds)
            if release is not None
            else "torch versions before 2.0 are not in the build table"
        )
        raise UnknownFact(
            f"{build.label} is not an official build ({official}); "
            "`gpuinfer audit --verify` reads the installed build's own arch list"
        )
    covered = builds.coverage(build.targets, f.cc)
    if build.how == "extrapolated" and covered is not None:
        release, _ = builds.torch_release(build.version)
        assert release is not None
        newest = max(release.builds, key=lambda c: Version(c).release)
        if build.cuda != newest and f.software.torch_cuda is None:
            raise UnknownFact(
                f"torch {build.version} is newer than the build table; in torch "
                f"{release.release} only the CUDA {build.cuda} build targets "
                f"{cc_text(f.cc)}, and such legacy builds get dropped"
            )
    return covered


def _ptx_only(f: Facts) -> bool:
    try:
        return _coverage(f) == "ptx"
    except UnknownFact:
        return False  # torch-build-covers-gpu reports the unknown once


def _not_covered(f: Facts) -> str:
    build = f.torch_build
    assert build is not None and build.targets is not None
    gpu = f"{f.gpu_label}"
    if build.how in ("assumed", "extrapolated"):
        release, _ = builds.torch_release(build.version)
        assert release is not None
        listed = "; ".join(
            f"cu{cuda.replace('.', '')}: {builds.targets_text(targets)}"
            for cuda, targets in release.builds.items()
        )
        sm = f"sm_{f.cc[0]}{f.cc[1]}"
        text = (
            f"no torch {release.release} build targets {sm} (or an older sm_{f.cc[0]}x) "
            f"for {gpu} ({listed})"
        )
    else:
        text = (
            f"{build.label} targets {builds.targets_text(build.targets)}, "
            f"no sm_{f.cc[0]}{f.cc[1]} code for {gpu}"
        )
    last = builds.last_release_covering(f.cc)
    if last is not None:
        text += (
            f"; the newest official build that does: torch {last[0]} cu{last[1].replace('.', '')}"
        )
    else:
        text += "; no official torch 2.x build does"
    return text


def _driver_covers_torch(f: Facts) -> bool:
    cuda = f.torch_cuda
    if cuda is None:
        return True
    raw = f.driver.cuda_driver_version if f.driver else None
    if raw is None:
        why = f.driver.unknown.get("cuda_driver_version") if f.driver else None
        raise UnknownFact(why or "the driver's CUDA version was not read")
    major, _, _minor = raw.partition(".")
    # CUDA minor-version compatibility: a driver of the same major runs any minor.
    return int(major) >= cuda[0]


TORCH_RULES: tuple[Rule, ...] = (
    Rule(
        id="torch-installed",
        modes=ALL,
        device="any",
        requirement="torch must be installed",
        otherwise=Status.UNSUPPORTED,
        source="transformers requirements",
        applies=always,
        holds=lambda f: f.has("torch"),
        found=lambda f: "no torch (pip install 'pytest-gpuinfer[hf]')",
    ),
    Rule(
        id="transformers-installed",
        modes=ALL,
        device="any",
        requirement="transformers must be installed",
        otherwise=Status.UNSUPPORTED,
        source="pytest-gpuinfer loads models through transformers",
        applies=always,
        holds=lambda f: f.has("transformers"),
        found=lambda f: "no transformers (pip install 'pytest-gpuinfer[hf]')",
    ),
    Rule(
        id="torch-cuda-build",
        modes=ALL,
        device="cuda",
        requirement="a GPU needs a CUDA build of torch",
        otherwise=Status.UNSUPPORTED,
        source="PyTorch install matrix",
        applies=lambda f: f.has("torch"),
        holds=lambda f: not f.torch_is_cpu_build,
        found=lambda f: f"{f.pkg('torch')} (CPU-only build) with {f.gpu_label}",
    ),
    Rule(
        id="torch-build-covers-gpu",
        modes=ALL,
        device="cuda",
        requirement="torch's build must contain code for the GPU's architecture "
        "(sm_XY runs on X.Y and later X.Z; PTX compiles for newer GPUs)",
        otherwise=Status.UNSUPPORTED,
        source="official torch builds per release and CUDA version (probes/builds.py: "
        "cuobjdump of pytorch packages, RELEASE.md support matrix, build_cuda.sh); "
        "torch.cuda.get_arch_list() of the installed build",
        applies=lambda f: f.has("torch") and not f.torch_is_cpu_build,
        holds=lambda f: _coverage(f) is not None,
        found=_not_covered,
    ),
    Rule(
        id="torch-build-ptx-only",
        modes=ALL,
        device="cuda",
        requirement="torch's build has no native code for the GPU, only PTX the driver "
        "compiles at first use (slow start; kernels tuned for an older GPU)",
        otherwise=Status.DEGRADED,
        source="CUDA C++ Programming Guide, binary compatibility; probes/builds.py",
        applies=lambda f: f.has("torch") and not f.torch_is_cpu_build,
        holds=lambda f: not _ptx_only(f),
        found=lambda f: f"{f.torch_label} on {f.gpu_label}",
        confirmed=False,
    ),
    Rule(
        id="cuda-toolkit-covers-gpu",
        modes=ALL,
        device="cuda",
        requirement="torch's CUDA toolkit must still compile for the GPU "
        "(CUDA 12 needs compute capability >= 5.0, CUDA 13 >= 7.5)",
        otherwise=Status.UNSUPPORTED,
        source="CUDA 12.0 and 13.0 release notes (dropped Kepler; Maxwell, Pascal, Volta)",
        applies=lambda f: f.torch_cuda is not None and f.torch_cuda[0] in CUDA_TOOLKIT_MIN_CC,
        holds=lambda f: f.cc >= CUDA_TOOLKIT_MIN_CC[f.torch_cuda[0] if f.torch_cuda else 0],
        found=lambda f: f"torch built for CUDA {f.torch_cuda_text} on {f.gpu_label}",
    ),
    Rule(
        id="driver-covers-torch-cuda",
        modes=ALL,
        device="cuda",
        requirement="the NVIDIA driver must support the CUDA major version torch was built for",
        otherwise=Status.UNSUPPORTED,
        source="CUDA compatibility guide (minor-version compatibility)",
        applies=lambda f: not f.simulated and f.torch_cuda is not None,
        holds=_driver_covers_torch,
        found=lambda f: (
            f"driver supports CUDA {f.driver.cuda_driver_version if f.driver else '?'}, "
            f"torch built for CUDA {f.software.torch_cuda}"
        ),
    ),
)
