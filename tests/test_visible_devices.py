"""CUDA_VISIBLE_DEVICES / CUDA_DEVICE_ORDER -> NVML devices, case by case.

The expected behaviour is the CUDA driver's, observed on driver 580.159.04 (see the
module docstring of probes.visible_devices).
"""

from __future__ import annotations

import pytest

from pytest_gpuinfer.probes.visible_devices import (
    DeviceDescriptor,
    cuda_enumeration_order,
    resolve_visible_devices,
)

UUIDS = [
    "GPU-1a08a098-833c-7589-a433-4ee163ceb2ba",
    "GPU-1a0f5e77-0000-4000-8000-000000000001",
    "GPU-9c3e2d10-1111-4000-8000-000000000002",
    "GPU-d4a7b6c5-2222-4000-8000-000000000003",
]
FOUR = [DeviceDescriptor(i, UUIDS[i], f"00000000:{i + 1:02X}:00.0", (8, 0)) for i in range(4)]
# A V100 at PCI index 0 and an A100 at PCI index 1.
MIXED = [
    DeviceDescriptor(0, UUIDS[0], "00000000:01:00.0", (7, 0)),
    DeviceDescriptor(1, UUIDS[1], "00000000:02:00.0", (8, 0)),
]
MIG_UUIDS = ("MIG-5c89f2a1-8b2e-5d0a-9f3e-1c2d3e4f5a6b", "MIG-7e01b3c4-0d1e-5f2a-8b3c-4d5e6f7a8b9c")
WITH_MIG = [
    DeviceDescriptor(0, UUIDS[0], "00000000:01:00.0", (8, 0)),
    DeviceDescriptor(1, UUIDS[2], "00000000:02:00.0", (8, 0), mig_uuids=MIG_UUIDS),
]


def visible(value: str | None, devices: list[DeviceDescriptor] = FOUR) -> list[int]:
    return resolve_visible_devices(devices, value, "PCI_BUS_ID").nvml_indices


def test_unset_shows_every_gpu() -> None:
    result = resolve_visible_devices(FOUR, None)
    assert result.nvml_indices == [0, 1, 2, 3]
    assert result.warnings == []


def test_empty_hides_every_gpu_without_a_warning() -> None:
    result = resolve_visible_devices(FOUR, "")
    assert result.nvml_indices == []
    assert result.warnings == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0,1", [0, 1]), ("1,0", [1, 0]), ("3", [3]), ("2,0", [2, 0])],
)
def test_integers_pick_and_order(value: str, expected: list[int]) -> None:
    result = resolve_visible_devices(FOUR, value, "PCI_BUS_ID")
    assert result.nvml_indices == expected
    assert result.warnings == []
    assert result.cuda_ordinal(expected[0]) == 0


def test_cuda_ordinal_of_a_hidden_gpu_is_none() -> None:
    assert resolve_visible_devices(FOUR, "2").cuda_ordinal(0) is None


def test_out_of_range_stops_the_list_and_is_named() -> None:
    result = resolve_visible_devices(FOUR, "1,7,2", "PCI_BUS_ID")
    assert result.nvml_indices == [1]
    [warning] = result.warnings
    assert "'7' is out of range (this machine has 4 GPUs)" in warning
    assert "'2' ignored" in warning


def test_invalid_entry_stops_the_list() -> None:
    result = resolve_visible_devices(FOUR, "0,abc,1", "PCI_BUS_ID")
    assert result.nvml_indices == [0]
    [warning] = result.warnings
    assert "'abc'" in warning
    assert "'1' ignored" in warning


def test_invalid_first_entry_hides_everything() -> None:
    assert visible("abc,0") == []
    assert visible(",0") == []
    assert visible("  ") == []


def test_minus_one_hides_everything_silently() -> None:
    result = resolve_visible_devices(FOUR, "-1")
    assert result.nvml_indices == []
    assert result.warnings == []


def test_negative_ends_the_list_and_warns_about_what_follows() -> None:
    result = resolve_visible_devices(FOUR, "0,-1,1", "PCI_BUS_ID")
    assert result.nvml_indices == [0]
    [warning] = result.warnings
    assert "'-1' is negative" in warning
    assert "'1' ignored" in warning


@pytest.mark.parametrize("value", ["0,0", "1,0,1", "0 ,0", f"{UUIDS[2]},{UUIDS[2]}"])
def test_duplicates_make_cuda_fail_so_nothing_is_visible(value: str) -> None:
    result = resolve_visible_devices(FOUR, value, "PCI_BUS_ID")
    assert result.nvml_indices == []
    [warning] = result.warnings
    assert "second time" in warning
    assert "CUDA_ERROR_INVALID_DEVICE" in warning


def test_duplicate_via_two_uuid_prefixes() -> None:
    assert visible("GPU-9c3e,GPU-9c3e2d10") == []


def test_duplicate_after_an_invalid_entry_is_never_reached() -> None:
    assert visible("0,9,0") == [0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(" 1 , 0 ", [1, 0]), ("\t2", [2]), ("1abc", [1]), ("0x1", [0]), ("+1", [1]), ("0,,1", [0])],
)
def test_integers_are_read_like_strtoul(value: str, expected: list[int]) -> None:
    assert visible(value) == expected


def test_full_uuid() -> None:
    assert visible(UUIDS[2]) == [2]
    assert visible(f"{UUIDS[3]},{UUIDS[0]}") == [3, 0]


def test_full_uuid_is_case_insensitive_and_ignores_what_follows() -> None:
    assert visible(UUIDS[2].upper()) == [2]
    assert visible(UUIDS[2] + " ") == [2]
    assert visible(UUIDS[2] + "-0") == [2]


def test_abbreviated_uuid() -> None:
    assert visible("GPU-9c3e") == [2]
    assert visible("GPU-d4a7b6c52222") == [3]  # dashes are optional


def test_ambiguous_prefix_is_invalid() -> None:
    result = resolve_visible_devices(FOUR, "GPU-1a0", "PCI_BUS_ID")
    assert result.nvml_indices == []
    [warning] = result.warnings
    assert "'GPU-1a0' is ambiguous (matches 0, 1)" in warning


@pytest.mark.parametrize(
    "value",
    [
        "GPU-",
        "gpu-9c3e",
        "9c3e2d10-1111-4000-8000-000000000002",
        " GPU-9c3e",
        "GPU-9c3e ",
        "GPU-ffff",
    ],
)
def test_malformed_or_unknown_uuid_hides_everything(value: str) -> None:
    result = resolve_visible_devices(FOUR, value, "PCI_BUS_ID")
    assert result.nvml_indices == []
    assert len(result.warnings) == 1


def test_the_first_entry_fixes_the_kind_of_list() -> None:
    assert visible(f"0,{UUIDS[2]},1") == [0]
    assert visible(f"{UUIDS[2]},0,{UUIDS[1]}") == [2]
    result = resolve_visible_devices(FOUR, f"0,{UUIDS[2]}", "PCI_BUS_ID")
    assert "is a UUID in a list of integers" in result.warnings[0]


def test_mig_id_selects_that_mig_device() -> None:
    result = resolve_visible_devices(WITH_MIG, f"{MIG_UUIDS[1]},MIG-5c89", "PCI_BUS_ID")
    assert result.nvml_indices == [1, 1]
    assert result.mig_uuids == [MIG_UUIDS[1], MIG_UUIDS[0]]
    assert result.warnings == []


def test_unknown_mig_id_hides_everything() -> None:
    result = resolve_visible_devices(WITH_MIG, "MIG-ffff", "PCI_BUS_ID")
    assert result.nvml_indices == []
    assert "matches no MIG device" in result.warnings[0]


def test_mixed_box_fastest_first_puts_the_a100_first() -> None:
    result = resolve_visible_devices(MIXED, "0", None)
    assert result.nvml_indices == [1]  # CUDA ordinal 0 is the A100
    assert "approximation" in result.warnings[0]
    assert resolve_visible_devices(MIXED, None, "FASTEST_FIRST").nvml_indices == [1, 0]


def test_mixed_box_pci_bus_id_keeps_pci_order_without_a_warning() -> None:
    result = resolve_visible_devices(MIXED, "0", "PCI_BUS_ID")
    assert result.nvml_indices == [0]
    assert result.warnings == []


def test_uuids_ignore_device_order() -> None:
    assert resolve_visible_devices(MIXED, UUIDS[0], None).nvml_indices == [0]


def test_identical_gpus_need_no_order_warning() -> None:
    assert resolve_visible_devices(FOUR, "1", None).warnings == []


def test_unknown_device_order_falls_back_to_fastest_first() -> None:
    result = resolve_visible_devices(MIXED, None, "pci_bus_id")
    assert result.nvml_indices == [1, 0]
    assert "CUDA_DEVICE_ORDER='pci_bus_id'" in result.warnings[0]


def test_unknown_capability_sorts_last() -> None:
    devices = [DeviceDescriptor(0, None, None, None), DeviceDescriptor(1, UUIDS[1], None, (7, 5))]
    assert [d.nvml_index for d in cuda_enumeration_order(devices)] == [1, 0]
    assert [d.nvml_index for d in cuda_enumeration_order(devices, "PCI_BUS_ID")] == [0, 1]


def test_gpu_without_uuid_cannot_be_selected_by_uuid() -> None:
    devices = [DeviceDescriptor(0, None, None, (8, 0)), DeviceDescriptor(1, UUIDS[1], None, (8, 0))]
    assert resolve_visible_devices(devices, "GPU-1a0f", "PCI_BUS_ID").nvml_indices == [1]
