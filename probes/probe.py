"""One probe of this machine (or of a simulated profile), turned into a Report."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from pytest_gpuinfer.probes.report import MODES, DriverInfo, NativeCheck, Report, parse_modes

SIMULATED = "simulated profile: not read from a driver"


def probe(
    profile: str | Path | None = None,
    *,
    verify: bool = False,
    environ: Mapping[str, str] | None = None,
    modes: Sequence[str] = MODES,
) -> Report:
    """Probe GPUs (NVML, never CUDA) and the stack, and judge every mode.

    Never raises for hardware or software trouble (unknown fields carry their reason);
    raises ``InputError`` for a bad profile or mode. ``verify`` runs bitsandbytes' int8
    matmul and reads ``torch.cuda.get_arch_list()`` in a child process (seconds; cached
    per versions and GPU; later probes reuse the cached arch list).
    """
    from pytest_gpuinfer.probes.rules import judge
    from pytest_gpuinfer.probes.software import cached_arch_list, probe_software, verify_stack

    started = time.perf_counter()
    env = os.environ if environ is None else environ
    modes = parse_modes(modes)
    software = probe_software()
    if profile is not None:
        from pytest_gpuinfer.probes.profiles import load_profile

        simulated = load_profile(profile)
        gpus = simulated.gpus()
        driver = DriverInfo(
            unknown={
                "driver_version": SIMULATED,
                "cuda_driver_version": SIMULATED,
                "nvml_version": SIMULATED,
            }
        )
        packages = {**software.packages, **simulated.software}
        software = replace(
            software,
            packages=packages,
            overridden=sorted(simulated.software),
            # Judge the GPU, not this laptop's torch build: assume one that drives it.
            torch_cuda=simulated.torch_cuda,
            torch_hip=None,
            assumed_torch_build=simulated.assumes_cuda_torch and packages.get("torch") is not None,
            torch_arch_list=None,
            bitsandbytes_native=NativeCheck(state="not-run", detail="simulated profile"),
        )
        report = Report(
            gpus=gpus,
            driver=driver,
            software=software,
            verdicts=judge(
                gpus,
                software,
                modes=modes,
                simulated=True,
                driver=driver,
                platform=simulated.platform,
            ),
            profile=simulated.name,
            platform=simulated.platform,
            visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
        )
    else:
        from pytest_gpuinfer.probes.nvml import probe_nvml
        from pytest_gpuinfer.probes.platform_info import machine_platform

        nvml = probe_nvml(env)
        if verify:
            device = "cuda" if nvml.gpus else "cpu"
            uuid = nvml.gpus[0].uuid if nvml.gpus else None
            check, arch_list = verify_stack(software, device=device, device_id=uuid, environ=env)
            software = replace(software, bitsandbytes_native=check, torch_arch_list=arch_list)
        elif nvml.gpus:
            # What an earlier --verify read from the installed torch (a file read, no import).
            software = replace(software, torch_arch_list=cached_arch_list(software, environ=env))
        platform = machine_platform()
        report = Report(
            gpus=nvml.gpus,
            driver=nvml.driver,
            software=software,
            verdicts=judge(nvml.gpus, software, modes=modes, driver=nvml.driver, platform=platform),
            platform=platform,
            gpu_unavailable_reason=nvml.unavailable_reason,
            visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
            warnings=list(nvml.warnings),
        )
    report.probe_seconds = round(time.perf_counter() - started, 4)
    return report
