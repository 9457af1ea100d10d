"""Rule rows for the platform: which official torch and bitsandbytes wheels drive the GPU.

On an Arm server (aarch64: GH200, GB200) the official torch wheels are CUDA builds only
where data/torch_platforms.json says so (PyPI's, read from their metadata; the PyTorch
index's, from the public statements it cites). On a Jetson (tegra) no registry wheel
drives the integrated GPU: torch must be NVIDIA's JetPack build, and a JetPack build is
tabulated nowhere yet, so it is unconfirmed.
"""

from __future__ import annotations

from packaging.version import Version

from pytest_gpuinfer.probes import platforms
from pytest_gpuinfer.probes.facts import Facts
from pytest_gpuinfer.probes.report import Status
from pytest_gpuinfer.probes.rule import ALL, QUANTIZED, Rule, short_source


def _torch(f: Facts) -> str:
    return f.software.packages.get("torch") or ""


def _aarch64_torch(f: Facts) -> bool:
    return f.platform == "aarch64" and f.has("torch") and not _torch(f).endswith("+cpu")


def _aarch64_known(f: Facts) -> bool | None:
    """True: an official aarch64 CUDA build of this torch exists; False: none does; None:
    no table says."""
    version = _torch(f)
    wheel = platforms.pypi_wheel(version, "aarch64")
    stated = platforms.stated_builds(version, "aarch64")
    wanted = f.software.torch_cuda
    if wanted is None:  # not named: pip's wheel, else the index's build
        if wheel is not None and wheel.cuda is not None:
            return True
        if stated is not None:
            return bool(stated.cuda)
        return False if wheel is not None and _before_index(version) else None
    if wheel is not None and wheel.cuda == wanted:
        return True
    if stated is not None:
        return wanted in stated.cuda
    return None


def _before_index(version: str) -> bool:
    """Older than every release whose index builds a source states: none is assumed."""
    rows = platforms.table().get("stated", [])
    oldest = min((Version(r["release"]) for r in rows), default=None)
    parsed = Version(Version(version).public)
    return oldest is not None and Version(f"{parsed.major}.{parsed.minor}") < oldest


def _aarch64_found(f: Facts) -> str:
    version = _torch(f)
    wheel = platforms.pypi_wheel(version, "aarch64")
    stated = platforms.stated_builds(version, "aarch64")
    parts = [f"{f.pkg('torch')} on aarch64 ({f.gpu_label})"]
    if wheel is not None:
        built = f"a CUDA {wheel.cuda} build" if wheel.cuda else "CPU-only"
        parts.append(f"PyPI's aarch64 wheel of {wheel.version} is {built}")
    if stated is not None:
        cudas = ", ".join(f"cu{c.replace('.', '')}" for c in stated.cuda) or "no CUDA build"
        parts.append(f"the PyTorch index has {cudas} for aarch64 torch {stated.release} "
                     f"({short_source(stated.source).split(' ')[0]})")  # fmt: skip
    else:
        parts.append(f"no source read states the PyTorch index's aarch64 builds of "
                     f"torch {version.split('+')[0]}")  # fmt: skip
    first = _first_pypi_cuda()
    if first is not None:
        parts.append(f"PyPI's aarch64 wheels are CUDA builds from torch {first}")
    return "; ".join(parts)


def _first_pypi_cuda() -> str | None:
    rows = platforms.table().get("torch", {})
    with_cuda = sorted(Version(v) for v, r in rows.items() if r.get("aarch64", {}).get("cuda"))
    return str(with_cuda[0]) if with_cuda else None


def _jetson_found(f: Facts) -> str:
    return (
        f"{f.pkg('torch')} from the registry on {f.gpu_label}, a Jetson (tegra, integrated "
        "GPU): PyPI's and the PyTorch index's aarch64 wheels are CPU or SBSA server builds "
        "that see no CUDA device there; install NVIDIA's JetPack build of torch"
    )


def _bnb_platform_known(f: Facts) -> bool:
    return (
        f.has("bitsandbytes")
        and platforms.bnb_wheel_platforms(f.software.packages["bitsandbytes"] or "") is not None
    )


def _bnb_found(f: Facts) -> str:
    version = f.software.packages.get("bitsandbytes") or ""
    wheels = platforms.bnb_wheel_platforms(version) or ()
    kinds = ", ".join(wheels) or "none"
    text = f"{f.pkg('bitsandbytes')} has Linux wheels for: {kinds}"
    if "any" in wheels:
        text += " (a pure wheel carrying x86_64 libraries: bitsandbytes#1043)"
    first = platforms.bnb_first_with("aarch64")
    if first is not None:
        text += f"; aarch64 wheels from bitsandbytes {first}"
    return text


PLATFORM_RULES: tuple[Rule, ...] = (
    Rule(
        id="aarch64-wheel-is-cuda-build",
        modes=ALL,
        device="cuda",
        requirement="on aarch64 (Arm servers: GH200, GB200) torch must be an official CUDA "
        "build for aarch64; PyPI's aarch64 wheels were CPU-only before torch 2.11",
        otherwise=Status.UNSUPPORTED,
        source=f"{platforms.DATA} (PyPI wheels' METADATA; PyTorch index builds as stated: "
        "pytorch#134790, #160162, vllm#16502)",
        applies=lambda f: _aarch64_torch(f) and _aarch64_known(f) is not None,
        holds=lambda f: bool(_aarch64_known(f)),
        found=_aarch64_found,
    ),
    Rule(
        id="aarch64-build-not-tabulated",
        modes=ALL,
        device="cuda",
        requirement="no table says whether this torch has an official aarch64 CUDA build",
        otherwise=Status.DEGRADED,
        source=f"{platforms.DATA} (PyPI wheels read; PyTorch index builds stated for "
        "some releases only)",
        applies=lambda f: _aarch64_torch(f) and _aarch64_known(f) is None,
        holds=lambda f: False,
        found=_aarch64_found,
        confirmed=False,
    ),
    Rule(
        id="jetson-needs-jetpack-torch",
        modes=ALL,
        device="cuda",
        requirement="on a Jetson (tegra) torch must be NVIDIA's JetPack build: the "
        "registry's wheels cannot drive its integrated GPU",
        otherwise=Status.UNSUPPORTED,
        source="pinokio#1027, dusty-nv/jetson-inference#1932 (registry torch on Jetson Orin: "
        "torch.cuda.is_available() False); pytorch#160162 (the aarch64 CUDA wheels are SBSA "
        "builds)",
        applies=lambda f: f.platform == "tegra" and f.has("torch"),
        holds=lambda f: platforms.is_jetpack_build(_torch(f)),
        found=_jetson_found,
    ),
    Rule(
        id="jetpack-torch-not-tabulated",
        modes=ALL,
        device="cuda",
        requirement="a JetPack torch build is judged only where the JetPack table has it "
        "(its CUDA version and architectures)",
        otherwise=Status.DEGRADED,
        source=f"{platforms.DATA} jetpack (no JetPack build read yet)",
        applies=lambda f: f.platform == "tegra" and platforms.is_jetpack_build(_torch(f)),
        holds=lambda f: _torch(f) in platforms.jetpack_covered(),
        found=lambda f: f"{f.pkg('torch')} on {f.gpu_label}; {platforms.jetpack_source()}",
        confirmed=False,
    ),
    Rule(
        id="bnb-aarch64-wheel",
        modes=QUANTIZED,
        device="cuda",
        requirement="on aarch64 bitsandbytes must ship an aarch64 wheel (its CUDA libraries "
        "are native code)",
        otherwise=Status.UNSUPPORTED,
        source=f"{platforms.DATA} (wheel file names per release on PyPI); bitsandbytes#1043",
        applies=lambda f: f.platform == "aarch64" and _bnb_platform_known(f),
        holds=lambda f: (
            "aarch64"
            in (platforms.bnb_wheel_platforms(f.software.packages.get("bitsandbytes") or "") or ())
        ),
        found=_bnb_found,
    ),
    Rule(
        id="jetson-bnb-registry-wheel",
        modes=QUANTIZED,
        device="cuda",
        requirement="on a Jetson the registry's bitsandbytes aarch64 wheels are server (SBSA) "
        "builds; one report has them fail at the first kernel",
        otherwise=Status.DEGRADED,
        source="bitsandbytes#1930 (0.46.1 aarch64 wheel on Jetson Orin)",
        applies=lambda f: f.platform == "tegra" and f.has("bitsandbytes"),
        holds=lambda f: False,
        found=lambda f: f"{f.pkg('bitsandbytes')} on {f.gpu_label}",
        confirmed=False,
    ),
)
