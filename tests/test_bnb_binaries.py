"""The generated bitsandbytes binary table (probes/data/bnb_binaries.json) and the rules on it.

The data was read from the wheels by scripts/generate_bnb_binaries.py; these tests check its
shape, that it covers every release the registry listed, and that the rules turn it into the
verdicts the wheels imply, on both sides of each architecture bound the data shows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from packaging.version import Version

from pytest_gpuinfer.probes import builds
from pytest_gpuinfer.probes.probe import probe
from pytest_gpuinfer.probes.report import Status, Verdict
from pytest_gpuinfer.probes.rule import UNCONFIRMED
from pytest_gpuinfer.probes.rules import RULES

ROOT = Path(__file__).resolve().parent.parent
DATA = json.loads((ROOT / "probes" / "data" / "bnb_binaries.json").read_text())
REGISTRY = json.loads((ROOT / "tests" / "data" / "bnb_registry_releases.json").read_text())
SEED_ERA = "torch=2.0.1,transformers=4.30.2,accelerate=0.20.3"
HF4 = "transformers=4.44.2,accelerate=0.33.0"


def int8(profile: str) -> Verdict:
    return probe(profile, modes=["int8"]).verdicts["int8"]


def fired(verdict: Verdict) -> list[str]:
    return [f.rule_id for f in verdict.findings if f.status is not Status.SUPPORTED]


def releases_with(target: str) -> list[str]:
    """Releases, oldest first, with a library holding SASS for ``target``."""
    return [
        row.release
        for row in builds.bnb_releases()
        if any(target in lib.targets for lib in row.libraries)
    ]


def test_data_file_shape() -> None:
    assert DATA["schema"] == "pytest-gpuinfer/bnb-binaries"
    assert DATA["schema_version"] == "1"
    assert DATA["generated_by"] == "scripts/generate_bnb_binaries.py"
    assert "release" in DATA["cuobjdump"]
    covered = DATA["covered"]
    assert list(covered) == ["bitsandbytes"]
    assert covered["bitsandbytes"] == [row["release"] for row in DATA["releases"]]
    for row in DATA["releases"]:
        assert row["wheel"].startswith(f"bitsandbytes-{row['release']}-")
        assert row["no_match"]["behaviour"] in {"cpu-fallback", "nearest", "error"}
        source = row["no_match"]["source"]
        assert source["file"].startswith("bitsandbytes/") and source["line"] > 0
        assert isinstance(row["cpu_library"], bool)
        for lib in row["libraries"]:
            digits = lib["cuda"].replace(".", "")
            suffix = "" if lib["cublaslt"] else "_nocublaslt"
            assert lib["file"] == f"libbitsandbytes_cuda{digits}{suffix}.so"
            assert all(re.fullmatch(r"sm_\d+[af]?", t) for t in lib["sass"]), lib
            assert all(re.fullmatch(r"compute_\d+[af]?", t) for t in lib["ptx"]), lib
            assert lib["sass"] or lib["ptx"], lib


def test_every_registry_release_was_read() -> None:
    wanted = [v for v in REGISTRY["releases"] if Version("0.31") <= Version(v) < Version("0.51")]
    assert wanted, REGISTRY
    missing = set(wanted) - set(DATA["covered"]["bitsandbytes"])
    assert not missing, f"releases on the registry the table lacks: {sorted(missing)}"


def test_the_table_loads_once_and_lazily() -> None:
    assert builds.bnb_releases() is builds.bnb_releases()
    assert [r.release for r in builds.bnb_releases()] == DATA["covered"]["bitsandbytes"]


def test_a_release_nobody_read_is_unconfirmed_not_present() -> None:
    # 0.44.2 was never released: no wheel was read, so no library can be assumed.
    assert builds.bnb_release(Version("0.44.2")) is None
    # The closed world says so (degraded, so --strict fails it), never "supported".
    verdict = int8(f"a100@torch=2.4.1,{HF4},bitsandbytes=0.44.2")
    assert verdict.status is Status.DEGRADED, verdict.reason
    assert "bitsandbytes 0.44.2, not a release read (between 0.44.1 and 0.45.0)" in verdict.reason
    assert "bnb_binaries.json read bitsandbytes 0.31.8-0.50.2" in verdict.reason
    assert verdict.reason.startswith("unconfirmed: ")


def test_043_without_a_library_for_cuda_124_is_not_supported() -> None:
    row = builds.bnb_release(Version("0.43.0"))
    assert row is not None and "12.4" not in row.cuda_libs and "12.3" in row.cuda_libs
    verdict = int8(f"a100@torch=2.4.1+cu124,{HF4},bitsandbytes=0.43.0")
    assert verdict.status is Status.UNSUPPORTED
    assert fired(verdict) == ["bnb-library-for-cuda"]
    # 0.43.0's loader raises 'Setup Failed' (read from the wheel), named with its line.
    assert row.no_match == "error"
    assert "fails to load a native library" in verdict.reason
    assert row.no_match_source in verdict.reason


def test_0431_without_a_library_falls_back_to_cpu_and_says_so() -> None:
    row = builds.bnb_release(Version("0.43.1"))
    assert row is not None and row.no_match == "cpu-fallback" and "12.6" not in row.cuda_libs
    verdict = int8(f"a100@torch=2.6.0+cu126,{HF4},bitsandbytes=0.43.1")
    assert verdict.status is Status.UNSUPPORTED
    assert "silently loads its CPU library" in verdict.reason
    assert row.no_match_source in verdict.reason


def test_043_with_cuda_121_on_an_a100_is_supported() -> None:
    verdict = int8(f"a100@torch=2.2.2+cu121,{HF4},bitsandbytes=0.43.0")
    assert verdict.status is Status.SUPPORTED, verdict.reason


def test_t4_with_bitsandbytes_0354_is_supported_by_the_seed_rule() -> None:
    row = builds.bnb_release(Version("0.35.4"))
    assert row is not None
    lib = builds.bnb_library_for(row, "11.8", (7, 5))
    assert lib is not None and lib.cublaslt and builds.coverage(lib.targets, (7, 5)) == "sass"
    report = probe(f"t4@{SEED_ERA},bitsandbytes=0.35.4", modes=["int8"])
    verdict = report.verdicts["int8"]
    assert verdict.status is Status.SUPPORTED, verdict.reason
    assert "LLM.int8 with bitsandbytes 0.35.4 on Tesla T4 (7.5) (int8 tensor cores)" in (
        verdict.reason
    )
    (seed,) = [r for r in RULES if r.id == "bnb-lt-0.37-needs-turing"]
    assert "HF Efficient Inference on a Single GPU (v4.29)" in seed.source


def test_p100_with_bitsandbytes_0354_is_unsupported_by_the_seed_rule() -> None:
    verdict = int8(f"p100@{SEED_ERA},bitsandbytes=0.35.4")
    assert verdict.status is Status.UNSUPPORTED
    assert fired(verdict) == ["bnb-lt-0.37-needs-turing"]
    assert "with bitsandbytes 0.35.4" in verdict.reason


def test_kepler_code_ends_with_0390() -> None:
    last = releases_with("sm_37")[-1]
    assert last == "0.39.0"
    after = builds.bnb_releases()[[r.release for r in builds.bnb_releases()].index(last) + 1]
    stack = "torch=2.0.1,transformers=4.29.2,accelerate=0.19.0"
    assert "bnb-library-covers-gpu" not in fired(int8(f"k80@{stack},bitsandbytes={last}"))
    verdict = int8(f"k80@{stack},bitsandbytes={after.release}")
    assert verdict.status is Status.UNSUPPORTED
    assert "bnb-library-covers-gpu" in fired(verdict)


def gpu_profile(tmp_path: Path, name: str, cc: str, software: dict[str, str]) -> Path:
    """A profile file for a GPU the built-ins lack (RTX 5090, Tesla M60)."""
    path = tmp_path / f"{name}.json"
    doc = {"base": "t4", "gpu_name": name, "compute_capability": cc, "software": software}
    path.write_text(json.dumps(doc))
    return path


HF451 = {"transformers": "4.51.3", "accelerate": "1.6.0"}


@pytest.mark.parametrize("target,cc", [("sm_100", "10.0"), ("sm_120", "12.0")])
def test_blackwell_code_starts_with_0453(tmp_path: Path, target: str, cc: str) -> None:
    first = releases_with(target)[0]
    assert first == "0.45.3"
    ok = gpu_profile(
        tmp_path, "Blackwell", cc, {**HF451, "torch": "2.7.0+cu128", "bitsandbytes": first}
    )
    assert "bnb-library-covers-gpu" not in fired(int8(str(ok)))
    # 0.45.2 has no cuda128 library and its cuda126 one stops at sm_90
    old = gpu_profile(
        tmp_path, "Blackwell", cc, {**HF451, "torch": "2.7.0+cu126", "bitsandbytes": "0.45.2"}
    )
    verdict = int8(str(old))
    assert verdict.status is Status.UNSUPPORTED
    assert "bnb-library-covers-gpu" in fired(verdict), verdict.reason


def test_maxwell_code_ends_with_0470(tmp_path: Path) -> None:
    last = releases_with("sm_50")[-1]
    assert last == "0.47.0"
    software = {**HF451, "torch": "2.6.0+cu126"}
    ok = gpu_profile(tmp_path, "Tesla M60", "5.2", {**software, "bitsandbytes": last})
    assert "bnb-library-covers-gpu" not in fired(int8(str(ok)))
    dropped = gpu_profile(tmp_path, "Tesla M60", "5.2", {**software, "bitsandbytes": "0.48.0"})
    verdict = int8(str(dropped))
    assert verdict.status is Status.UNSUPPORTED
    assert "bnb-library-covers-gpu" in fired(verdict), verdict.reason


def test_every_rule_message_is_confirmed_for_a_read_release() -> None:
    verdict = int8(f"t4@{SEED_ERA},bitsandbytes=0.35.4")
    assert not any(f.message.startswith(UNCONFIRMED) for f in verdict.findings)
