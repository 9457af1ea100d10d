"""docs/compatibility.md, rendered from the rules table and the built-in profiles.

Never edit that page by hand: `gpuinfer matrix --output docs/compatibility.md` writes it
and a test fails when it is stale.
"""

from __future__ import annotations

from pytest_gpuinfer.probes import coverage, platforms
from pytest_gpuinfer.probes.architectures import SDPA_BACKENDS, TENSOR_CORE_PRECISIONS
from pytest_gpuinfer.probes.builds import TORCH_RELEASES, bnb_releases, targets_text
from pytest_gpuinfer.probes.facts import Facts
from pytest_gpuinfer.probes.modes import MODES
from pytest_gpuinfer.probes.profiles import BUILTIN_PROFILES
from pytest_gpuinfer.probes.report import SoftwareStack, Status
from pytest_gpuinfer.probes.rule import UNCONFIRMED
from pytest_gpuinfer.probes.rules import RULES, judge

# The stacks the profile grids are judged with, fixed so the page does not depend on the
# machine that renders it. torch's CUDA build is assumed to drive each GPU.
REFERENCE_STACKS: dict[str, dict[str, str | None]] = {
    "current (transformers 5.23, bitsandbytes 0.50.2)": {
        "torch": "2.11.0",
        "transformers": "5.23.0",
        "accelerate": "1.15.0",
        "bitsandbytes": "0.50.2",
        "optimum": None,
    },
    "legacy (transformers 4.48.3, optimum 1.24.0, bitsandbytes 0.44.1)": {
        "torch": "2.5.1",
        "transformers": "4.48.3",
        "accelerate": "1.2.1",
        "bitsandbytes": "0.44.1",
        "optimum": "1.24.0",
    },
    "seed (transformers 4.29, bitsandbytes 0.36.0.post2)": {
        "torch": "2.0.1",
        "transformers": "4.29.2",
        "accelerate": "0.19.0",
        "bitsandbytes": "0.36.0.post2",
        "optimum": "1.8.6",
    },
}

_CELL = {
    Status.SUPPORTED: "yes",
    Status.DEGRADED: "degraded",
    Status.UNSUPPORTED: "**no**",
    Status.UNKNOWN: "?",
}


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _rules_table() -> list[str]:
    lines = [
        "| rule | modes | device | requirement | when unmet | source |",
        "|---|---|---|---|---|---|",
    ]
    for rule in RULES:
        modes = ", ".join(m for m in MODES if m in rule.modes)
        lines.append(
            f"| `{rule.id}` | {modes} | {rule.device} | {_escape(rule.requirement)} "
            f"| {rule.otherwise.value} | {_escape(rule.source)} |"
        )
    return lines


def _grid(packages: dict[str, str | None]) -> list[str]:
    lines = ["| profile | GPU | cc | platform | torch build judged | " + " | ".join(MODES) + " |"]
    lines.append("|---" * (5 + len(MODES)) + "|")
    for profile in BUILTIN_PROFILES.values():
        software = SoftwareStack(
            python="3.12",
            platform="Linux-x86_64",
            packages=dict(packages),
            assumed_torch_build=True,
        )
        gpu = profile.gpus()[0]
        platform = profile.platform
        verdicts = judge([gpu], software, simulated=True, platform=platform)
        build = Facts(software, gpu, simulated=True, platform=platform).torch_build
        judged = build.label.removeprefix("torch ") if build and build.cuda else "none"
        cc = f"{profile.compute_capability[0]}.{profile.compute_capability[1]}"
        cells = []
        for mode in MODES:
            verdict = verdicts[mode]
            deciding = [f for f in verdict.findings if f.status is verdict.status]
            rules = sorted({f.rule_id for f in deciding})
            cell = _CELL[verdict.status]
            if any(f.message.startswith(UNCONFIRMED) for f in deciding):
                cell += ", unconfirmed"
            if verdict.status is not Status.SUPPORTED:
                cell += " (" + ", ".join(f"`{r}`" for r in rules) + ")"
            cells.append(cell)
        lines.append(
            f"| {profile.name} | {profile.gpu_name} | {cc} | {platform} | {judged} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def _torch_builds_table() -> list[str]:
    lines = ["| torch | CUDA build | targets | source |", "|---|---|---|---|"]
    for release in TORCH_RELEASES:
        for cuda, targets in release.builds.items():
            source = _escape(release.source)
            lines.append(f"| {release.release} | {cuda} | {targets_text(targets)} | {source} |")
    return lines


def _bnb_builds_table() -> list[str]:
    lines = [
        "| bitsandbytes | CUDA libraries | targets | no library for torch's CUDA | wheel |",
        "|---|---|---|---|---|",
    ]
    for row in bnb_releases():
        by_targets: dict[tuple[str, ...], list[str]] = {}
        for lib in row.libraries:
            name = lib.cuda if lib.cublaslt else f"{lib.cuda} nocublaslt"
            by_targets.setdefault(lib.targets, []).append(name)
        libs = "; ".join(
            f"{', '.join(names)}: {targets_text(targets) or 'no GPU code'}"
            for targets, names in by_targets.items()
        )
        cuda = ", ".join(row.cuda_libs) or "none"
        no_match = f"{row.no_match} ({row.no_match_source})"
        lines.append(
            f"| {row.release} | {cuda} | {_escape(libs)} | {_escape(no_match)} | {row.wheel} |"
        )
    return lines


def _platform_table() -> list[str]:
    lines = [
        "| torch | PyPI wheel, x86_64 | PyPI wheel, aarch64 | PyPI metadata read |",
        "|---|---|---|---|",
    ]
    for version, row in platforms.table().get("torch", {}).items():
        cells = []
        for machine in ("x86_64", "aarch64"):
            cuda = row.get(machine, {}).get("cuda")
            cells.append(f"CUDA {cuda}" if cuda else "CPU-only")
        wheels = ", ".join(row[m]["wheel"] for m in ("x86_64", "aarch64") if m in row)
        lines.append(f"| {version} | {cells[0]} | {cells[1]} | {wheels} |")
    lines += ["", "| platform | torch | PyPI-index builds | source |", "|---|---|---|---|"]
    for stated in platforms.table().get("stated", []):
        cudas = ", ".join(stated["cuda"]) or "none"
        source = _escape(stated["source"])
        lines.append(f"| {stated['platform']} | {stated['release']} | {cudas} | {source} |")
    return lines


def _coverage_table() -> list[str]:
    lines = ["| table | package | releases read | first | newest |", "|---|---|---|---|---|"]
    for table in coverage.TABLES:
        for package in coverage.PACKAGE_FACTS:
            releases = coverage.covered_releases(table, package)
            if releases:
                lines.append(
                    f"| {table} | {package} | {len(releases)} | {releases[0]} | {releases[-1]} |"
                )
    return lines


def render_matrix() -> str:
    out = [
        "# Compatibility matrix",
        "",
        "<!-- Generated by `gpuinfer matrix --output docs/compatibility.md` from",
        "     probes/rules.py, probes/profiles.py and probes/data/*.json. Do not edit by hand. -->",
        "",
        "Each cell is the verdict `gpuinfer audit --profile NAME` gives for that GPU with the",
        "stack named above the grid, on the profile's platform. torch's CUDA build is the",
        "PyPI wheel of that version where it has native code for the GPU, else the best",
        "*official* build (native code first, then one bitsandbytes ships a library for, then",
        "the newest CUDA), named in the 'torch build judged' column; 'none' means no official",
        "build has code for the GPU (or, on aarch64, none is a CUDA build). Non-`yes` cells",
        "name the rules that decided",
        "them; 'unconfirmed' marks a case the sources do not settle. The rules, and the",
        "build tables they read, are listed below.",
        "",
    ]
    for title, packages in REFERENCE_STACKS.items():
        out += [f"## Stack: {title}", "", *_grid(packages), ""]
    out += [
        "## Rules",
        "",
        "Every verdict comes from these rows (`probes/rules.py`); skip reasons quote the",
        "requirement text and what was found.",
        "",
        *_rules_table(),
        "",
        "## Hardware tables",
        "",
        "| tensor-core precision | first compute capability |",
        "|---|---|",
        *(f"| {p} | {c[0]}.{c[1]} |" for p, c in TENSOR_CORE_PRECISIONS.items()),
        "",
        "GTX 16xx boards (Turing, 7.5) have no tensor cores at all.",
        "",
        "| SDPA kernel | first compute capability |",
        "|---|---|",
        *(f"| {b} | {c[0]}.{c[1]} |" for b, c in SDPA_BACKENDS.items()),
        "",
        "## Official torch builds",
        "",
        "What each official torch wheel compiles (`probes/builds.py`). `sm_XY` runs on X.Y",
        "and later X.Z; PTX is compiled by the driver for newer GPUs. Versions newer than the",
        "table are judged by its newest row, and say so.",
        "",
        *_torch_builds_table(),
        "",
        "## bitsandbytes binaries",
        "",
        "Which CUDA libraries each bitsandbytes release ships, and the GPUs each has code for.",
        "Before 0.50 a missing library for torch's exact CUDA version silently loads the CPU",
        "library. The 0.36.0 wheel ships only `*_nocublaslt` libraries (no LLM.int8 matmul);",
        "0.36.0.post2 adds the cuBLASLt ones.",
        "",
        *_bnb_builds_table(),
        "",
        "## Platforms",
        "",
        "Which torch wheel `pip install torch==V` installs on each Linux platform, read from",
        "each wheel's METADATA (`probes/data/torch_platforms.json`,",
        "`scripts/generate_torch_platforms.py`), and the PyTorch index's aarch64 builds as",
        "public sources state them (that index was not reachable to read). A plain torch",
        "version in a profile is judged as its PyPI wheel where that wheel drives the GPU.",
        "On a Jetson (`tegra`) no registry wheel drives the integrated GPU: torch must be",
        "NVIDIA's JetPack build, and no JetPack build is tabulated yet (unconfirmed).",
        "",
        *_platform_table(),
        "",
        "## Closed world",
        "",
        "The releases each generated table read. A version of these packages that no table",
        "read (newer than the newest, or between two releases read) is *unconfirmed*: the",
        "verdict is degraded and names the fact left unknown; below a window the hand rows",
        "speak.",
        "",
        *_coverage_table(),
        "",
    ]
    return "\n".join(out)
