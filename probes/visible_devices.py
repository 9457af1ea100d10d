"""Which GPUs a CUDA process sees, and in what order, given its environment.

Pure functions over light device descriptors; no NVML, no CUDA. The parsing rules mirror
what the CUDA driver does with ``CUDA_VISIBLE_DEVICES``, as observed with driver
580.159.04 on an H100 (each ``CUDA_VISIBLE_DEVICES`` value run through ``cuInit`` and
``cuDeviceGetCount``):

- unset: every GPU; empty: none.
- The first entry fixes the kind of the list: ``GPU-`` UUIDs, ``MIG-`` ids, or integers.
  An entry of another kind ends the list (``0,GPU-...`` sees GPU 0 only).
- Integers are read like ``strtoul``: leading whitespace is skipped and anything after the
  digits is ignored (``" 1 "`` and ``"1abc"`` both mean 1); an entry without digits, an
  index out of range, or a negative number ends the list.
- ``GPU-``/``MIG-`` entries match a unique prefix of the UUID's hex digits, case-insensitive,
  dashes ignored; text after a full UUID is ignored, anything else (a space after a
  prefix, an unknown or ambiguous prefix, leading whitespace) ends the list.
- The list stops at its first invalid entry; entries before it stay visible.
- A GPU listed twice makes CUDA initialisation fail (``CUDA_ERROR_INVALID_DEVICE``), so
  no GPU is visible at all.

Integer entries index CUDA's enumeration order: PCI bus order with
``CUDA_DEVICE_ORDER=PCI_BUS_ID``, otherwise CUDA's ``FASTEST_FIRST`` order. The driver's
speed heuristic is not public; it is approximated here as compute capability descending,
then PCI bus order (stable), and a warning says so whenever the GPUs differ.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_UUID_HEX_DIGITS = 32
_HEX = frozenset("0123456789abcdefABCDEF")
_STRTOUL = re.compile(r"\s*([+-]?)(\d+)")


@dataclass(frozen=True)
class DeviceDescriptor:
    """What the mapping needs to know about one GPU, in NVML (PCI bus) order."""

    nvml_index: int
    uuid: str | None = None
    """NVML's form, ``GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``; None when unreadable."""
    pci_bus_id: str | None = None
    compute_capability: tuple[int, int] | None = None
    mig_uuids: tuple[str, ...] = ()
    """UUIDs (``MIG-...``) of the MIG devices on this GPU, when it is in MIG mode."""


@dataclass
class VisibleDevices:
    """The GPUs a CUDA process would see: position in ``nvml_indices`` = CUDA ordinal."""

    nvml_indices: list[int]
    mig_uuids: list[str | None] = field(default_factory=list)
    """Per CUDA ordinal, the MIG device it stands for when selected by a ``MIG-`` id."""
    warnings: list[str] = field(default_factory=list)

    def cuda_ordinal(self, nvml_index: int) -> int | None:
        """The first CUDA ordinal of an NVML device, None when CUDA does not see it."""
        try:
            return self.nvml_indices.index(nvml_index)
        except ValueError:
            return None


def cuda_enumeration_order(
    devices: Sequence[DeviceDescriptor], device_order: str | None = None
) -> list[DeviceDescriptor]:
    """The devices in the order CUDA enumerates them (before ``CUDA_VISIBLE_DEVICES``)."""
    by_pci = sorted(devices, key=lambda d: d.nvml_index)
    if device_order == "PCI_BUS_ID":
        return by_pci
    # FASTEST_FIRST, approximated; unknown capabilities go last. sorted() is stable.
    return sorted(
        by_pci,
        key=lambda d: (
            d.compute_capability is None,
            tuple(-part for part in d.compute_capability or (0, 0)),
        ),
    )


def resolve_visible_devices(
    devices: Sequence[DeviceDescriptor],
    visible_devices: str | None,
    device_order: str | None = None,
) -> VisibleDevices:
    """Map CUDA ordinals to NVML devices as CUDA would with these two variables.

    ``visible_devices`` and ``device_order`` are the raw values of
    ``CUDA_VISIBLE_DEVICES`` and ``CUDA_DEVICE_ORDER`` (None when unset).
    """
    warnings: list[str] = []
    if device_order not in (None, "PCI_BUS_ID", "FASTEST_FIRST"):
        warnings.append(
            f"CUDA_DEVICE_ORDER={device_order!r} is neither PCI_BUS_ID nor FASTEST_FIRST; "
            "assuming CUDA's default, FASTEST_FIRST"
        )
        device_order = "FASTEST_FIRST"
    order = cuda_enumeration_order(devices, device_order)
    if device_order != "PCI_BUS_ID" and _order_is_guessed(devices):
        warnings.append(
            "GPUs differ and CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA ordinals assume "
            "CUDA's FASTEST_FIRST order as highest compute capability first, an "
            "approximation; set CUDA_DEVICE_ORDER=PCI_BUS_ID to make them certain"
        )

    if visible_devices is None:
        indices = [d.nvml_index for d in order]
        return VisibleDevices(indices, [None] * len(indices), warnings)

    if visible_devices == "":
        return VisibleDevices([], [], warnings)
    selected: list[tuple[int, str | None]] = []
    entries = visible_devices.split(",")
    kind = _entry_kind(entries[0])
    for position, entry in enumerate(entries):
        match, problem = _match_entry(entry, kind, order, devices)
        if match is None:
            ignored = [e for e in entries[position + 1 :] if e.strip()]
            if problem is not None or ignored:
                tail = f"; {', '.join(map(repr, ignored))} ignored after it" if ignored else ""
                warnings.append(
                    f"CUDA_VISIBLE_DEVICES={visible_devices!r}: entry {entry!r} "
                    f"{problem or 'is negative'}, so CUDA stops reading the list there{tail}"
                )
            break
        if match in selected:
            warnings.append(
                f"CUDA_VISIBLE_DEVICES={visible_devices!r}: entry {entry!r} names GPU "
                f"{match[0]} a second time; CUDA then fails to initialise "
                "(CUDA_ERROR_INVALID_DEVICE) and no GPU is visible"
            )
            return VisibleDevices([], [], warnings)
        selected.append(match)
    return VisibleDevices([i for i, _ in selected], [m for _, m in selected], warnings)


def _order_is_guessed(devices: Sequence[DeviceDescriptor]) -> bool:
    capabilities = {d.compute_capability for d in devices}
    return len(devices) > 1 and (len(capabilities) > 1 or None in capabilities)


def _entry_kind(entry: str) -> str:
    if entry.startswith("GPU-"):
        return "GPU-"
    if entry.startswith("MIG-"):
        return "MIG-"
    return "int"


def _match_entry(
    entry: str,
    kind: str,
    order: Sequence[DeviceDescriptor],
    devices: Sequence[DeviceDescriptor],
) -> tuple[tuple[int, str | None] | None, str | None]:
    """(nvml index, MIG uuid) for one entry, or (None, why it ends the list).

    (None, None) is a negative number, CUDA's usual way to hide every GPU: it ends the
    list without being a mistake.
    """
    if kind == "int":
        number = _STRTOUL.match(entry)
        if number is None:
            if _entry_kind(entry) != "int":
                return None, "is a UUID in a list of integers"
            return None, "is not a device index"
        if number.group(1) == "-":
            return None, None
        value = int(number.group(2))
        if value >= len(order):
            count = len(order)
            return None, f"is out of range (this machine has {count} GPU{'s' * (count != 1)})"
        return (order[value].nvml_index, None), None

    if not entry.startswith(kind):
        return None, f"is not a {kind} id like the first entry"
    wanted = _uuid_hex(entry[len(kind) :])
    if wanted is None:
        return None, f"is not a valid {kind} UUID or UUID prefix"
    candidates: list[tuple[int, str | None]] = []
    for device in devices:
        if kind == "GPU-":
            if device.uuid is not None and _device_hex(device.uuid).startswith(wanted):
                candidates.append((device.nvml_index, None))
        else:
            for mig in device.mig_uuids:
                if _device_hex(mig).startswith(wanted):
                    candidates.append((device.nvml_index, mig))
    if not candidates:
        return None, "matches no GPU" if kind == "GPU-" else "matches no MIG device"
    if len(candidates) > 1:
        names = ", ".join(str(i) if m is None else m for i, m in candidates)
        return None, f"is ambiguous (matches {names})"
    return candidates[0], None


def _device_hex(uuid: str) -> str:
    return _uuid_hex(uuid.removeprefix("GPU-").removeprefix("MIG-")) or ""


def _uuid_hex(text: str) -> str | None:
    """Lower-case hex digits of a UUID or UUID prefix as CUDA reads it, None if invalid."""
    digits: list[str] = []
    for char in text:
        if len(digits) == _UUID_HEX_DIGITS:
            break  # CUDA ignores whatever follows a complete UUID
        if char == "-":
            continue
        if char not in _HEX:
            return None
        digits.append(char.lower())
    return "".join(digits) or None
