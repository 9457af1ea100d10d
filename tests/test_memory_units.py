"""Memory strings: accelerate's bytes for every form it accepts, one clear line otherwise."""

from __future__ import annotations

import pytest

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.memory_units import format_bytes, parse_max_memory, parse_memory

ACCELERATE_FORMS = [
    "8GiB",
    "8 GiB",
    " 8GiB",
    "1.5GiB",
    "0.3GiB",
    "0GiB",
    "-0GiB",
    "20MiB",
    "512KiB",
    ".5KiB",
    "5GiB",
    "5gib",
    "5Gib",
    "5GB",
    "5gB",
    "0.1GB",
    "5Gb",
    "5gb",
    "500MB",
    "500Mb",
    "5.KB",
    "5 KB",
    "3kb",
    "1e3MB",
    "+5MB",
    "1_000MB",
    0,
    1024,
    123456789,
]


@pytest.mark.parametrize("form", ACCELERATE_FORMS, ids=repr)
def test_parse_memory_matches_accelerate(form: str | int) -> None:
    from accelerate.utils.modeling import convert_file_size_to_int

    assert parse_memory(form) == convert_file_size_to_int(form)


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ("1024", 1024),
        (" 2048 ", 2048),
        ("8GiB ", 8 * 2**30),
        ("1TiB", 2**40),
        ("2TB", 2 * 10**12),
        ("1Tb", 10**12 // 8),
    ],
)
def test_parse_memory_extensions_beyond_accelerate(form: str, expected: int) -> None:
    # Digit strings (a CLI cannot pass an int) and tera units; we hand accelerate ints.
    assert parse_memory(form) == expected


@pytest.mark.parametrize("form", ["abc", "10G", "GiB", "1.5", "8 G", "", "12X", "1e3"])
def test_parse_memory_rejects_what_accelerate_rejects(form: str) -> None:
    from accelerate.utils.modeling import convert_file_size_to_int

    with pytest.raises(ValueError):
        convert_file_size_to_int(form)
    with pytest.raises(InputError) as info:
        parse_memory(form)
    message = str(info.value)
    assert message == (
        f"memory size {form!r} is not understood: expected a number with a unit such as "
        "8GiB, 500MB or 1024 (bytes)"
    )


@pytest.mark.parametrize("form", ["-1GiB", "-5MB", -1])
def test_parse_memory_rejects_negative(form: str | int) -> None:
    with pytest.raises(InputError, match=r"is negative") as info:
        parse_memory(form)
    assert repr(form) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("form", ["infGiB", "nanGiB"])
def test_parse_memory_rejects_non_finite(form: str) -> None:
    # accelerate rejects "nanGiB" and crashes with OverflowError on "infGiB".
    with pytest.raises(InputError) as info:
        parse_memory(form)
    assert str(info.value).startswith(f"memory size {form!r} is not a finite number: expected")


@pytest.mark.parametrize("value", [True, 1.5, None])
def test_parse_memory_rejects_non_size_types(value: object) -> None:
    with pytest.raises(InputError) as info:
        parse_memory(value)  # type: ignore[arg-type]
    assert repr(value) in str(info.value)


def test_parse_memory_names_what_in_the_error() -> None:
    with pytest.raises(InputError) as info:
        parse_memory("10G", what="--max-memory entry for GPU 0")
    assert str(info.value) == (
        "--max-memory entry for GPU 0 '10G' is not understood: expected a number with a unit "
        "such as 8GiB, 500MB or 1024 (bytes)"
    )


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (1_600_000_000, "1.49 GiB"),
        (2_362_232_012, "2.20 GiB"),
        (80 * 2**30, "80.00 GiB"),
        (3 * 2**40, "3.00 TiB"),
        (-2048, "-2.00 KiB"),
    ],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_parse_max_memory_cli_form() -> None:
    budget = parse_max_memory("cpu=64GiB, 1=20GiB,0=20GiB,disk=1TiB")
    assert budget == {0: 20 * 2**30, 1: 20 * 2**30, "cpu": 64 * 2**30, "disk": 2**40}
    # GPUs first, ascending, then mps/cpu/disk: the order accelerate fills devices.
    assert list(budget) == [0, 1, "cpu", "disk"]


def test_parse_max_memory_colon_form_and_case() -> None:
    assert parse_max_memory("0:1GB,CPU:2GB,mps:0") == {0: 10**9, "mps": 0, "cpu": 2 * 10**9}


def test_parse_max_memory_dict_form_matches_accelerate() -> None:
    from accelerate.utils.modeling import get_max_memory

    given: dict[object, object] = {1: "2GB", 0: "1GB", "cpu": 4096, "disk": "10GiB"}
    ours = parse_max_memory({**given})
    theirs = get_max_memory(dict(given))
    assert ours == theirs
    assert list(ours) == list(theirs)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("cuda:0=20GiB", "max_memory device 'cuda:0' is not a max_memory key: use the integer 0"),
        ("cuda:1:20GiB", "max_memory device 'cuda:1' is not a max_memory key: use the integer 1"),
        ({"cuda:0": "1GiB"}, "max_memory device 'cuda:0' is not a max_memory key"),
        ("gpu=20GiB", "max_memory device 'gpu' is not a device: expected a GPU ordinal"),
        ({-1: "1GiB"}, "max_memory device -1 is negative"),
        ({True: "1GiB"}, "max_memory device True is not a device"),
        ("0=10G", "max_memory entry for GPU 0 '10G' is not understood"),
        ("cpu=-1GiB", "max_memory entry for cpu '-1GiB' is negative"),
        ({0: 1.5}, "max_memory entry for GPU 0 1.5 is not understood"),
        ("0=1GiB,0=2GiB", "max_memory names device 0 twice"),
        ("0=1GiB,,cpu=1GiB", "max_memory '0=1GiB,,cpu=1GiB' has an empty entry"),
        ("20GiB", "max_memory entry '20GiB' is not understood: expected DEVICE=SIZE"),
        ("", "max_memory '' names no device"),
        ({}, "max_memory {} names no device"),
        (["0=1GiB"], "max_memory ['0=1GiB'] is not understood"),
    ],
)
def test_parse_max_memory_rejects(spec: object, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        parse_max_memory(spec)  # type: ignore[arg-type]
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_parse_max_memory_what_prefix() -> None:
    with pytest.raises(InputError) as info:
        parse_max_memory("0=10G", what="--max-memory")
    assert str(info.value).startswith("--max-memory entry for GPU 0 '10G' is not understood")


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, pytest_gpuinfer.probes.memory_units; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
