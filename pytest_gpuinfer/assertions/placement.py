"""Placement assertions: inputs on the model's device, parameters where a device map says."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pytest_gpuinfer.assertions._shared import (
    MAX_ROWS,
    cap,
    checked_call,
    model_device,
    shown,
    unpack,
)
from pytest_gpuinfer.probes.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["assert_device_map", "assert_on_device"]


def _accelerator_type() -> str:
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        current = accelerator.current_accelerator()
        if current is not None:
            return str(current.type)
    return "cuda"


def _normalize_device(device: object) -> str:
    """One spelling per device: 0 / "cuda" / torch.device("cuda", 0) -> "cuda:0"."""
    import torch

    if isinstance(device, bool):
        raise InputError(
            f"device {shown(device)} is not a device; expected an int, 'cpu' or 'cuda:0'"
        )
    if isinstance(device, int):
        return f"{_accelerator_type()}:{device}"
    if isinstance(device, str) and device in ("disk", "meta", "cpu"):
        return device
    try:
        parsed: torch.device = torch.device(device)  # type: ignore[call-overload]
    except (RuntimeError, TypeError) as error:
        raise InputError(
            f"device {shown(device)} is not a device; expected an int, 'cpu', 'disk' or 'cuda:0'"
        ) from error
    kind = str(parsed.type)
    if kind in ("cpu", "meta"):
        return kind
    return f"{kind}:{parsed.index if parsed.index is not None else 0}"


def _iter_tensors(value: object, path: str) -> Iterator[tuple[str, torch.Tensor]]:
    import torch

    if isinstance(value, torch.Tensor):
        yield path or "inputs", value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _iter_tensors(item, f"{path}[{key!r}]" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _iter_tensors(item, f"{path}[{index}]")


@checked_call
def assert_on_device(model: object, inputs: object) -> None:
    """Every tensor in ``inputs`` (tensor, dict, BatchEncoding, list) sits on ``model.device``.

    ``model.device`` is the device of the model's first parameter, so under a multi-device
    map it is the first shard's device: where ``generate()`` and ``forward()`` expect inputs.
    """
    __tracebackhide__ = True
    net: Any = unpack(model)[0]
    expected = _normalize_device(model_device(net))
    tensors = list(_iter_tensors(inputs, ""))
    if not tensors:
        raise InputError(f"inputs hold no tensors (got {type(inputs).__name__})")
    wrong = [
        f"  {name}: {_normalize_device(tensor.device)}"
        for name, tensor in tensors
        if _normalize_device(tensor.device) != expected
    ]
    if wrong:
        raise AssertionError(
            "\n".join(
                [
                    f"{len(wrong)} of {len(tensors)} input tensors are not on the model's device "
                    f"{expected}:",
                    *cap(wrong),
                    "Move them with inputs.to(model.device).",
                ]
            )
        )


def _hook_location(module: Any, name: str) -> str | None:
    """Where accelerate keeps an offloaded tensor of ``module``: "cpu", "disk" or None."""
    hook = getattr(module, "_hf_hook", None)
    hooks = list(getattr(hook, "hooks", ())) or ([hook] if hook is not None else [])
    for candidate in hooks:
        weights_map = getattr(candidate, "weights_map", None)
        if not getattr(candidate, "offload", False) or weights_map is None:
            continue
        dataset = getattr(weights_map, "dataset", weights_map)
        key = f"{getattr(weights_map, 'prefix', '')}{name}"
        if key in getattr(dataset, "state_dict", {}):
            return "cpu"
        if key in getattr(dataset, "index", {}):
            return "disk"
        if isinstance(dataset, Mapping) and key in dataset:
            return "cpu"
    return None


def _offloads(module: Any) -> bool:
    """Whether accelerate offloads ``module``'s weights (an AlignDevicesHook with offload)."""
    hook = getattr(module, "_hf_hook", None)
    hooks = list(getattr(hook, "hooks", ())) or ([hook] if hook is not None else [])
    return any(getattr(candidate, "offload", False) for candidate in hooks)


def _placements(model: Any) -> list[tuple[str, str, bool]]:
    """(tensor name, normalized device, is a buffer of an offloaded module) for every
    parameter and buffer, offload resolved."""
    placements: list[tuple[str, str, bool]] = []
    for module_name, module in model.named_modules():
        offloaded = _offloads(module)
        tensors = [
            *((name, tensor, False) for name, tensor in module.named_parameters(recurse=False)),
            *((name, tensor, True) for name, tensor in module.named_buffers(recurse=False)),
        ]
        for name, tensor, is_buffer in tensors:
            full_name = f"{module_name}.{name}" if module_name else name
            device = _normalize_device(tensor.device)
            if device == "meta":
                device = _hook_location(module, name) or "meta"
            placements.append((full_name, device, offloaded and is_buffer and device != "meta"))
    return placements


def _map_entry(name: str, expected: Mapping[str, str]) -> str | None:
    """The longest prefix of ``name`` (on a module boundary) that ``expected`` maps."""
    best: str | None = None
    for prefix in expected:
        if (prefix == "" or name == prefix or name.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best)
        ):
            best = prefix
    return best


def _expected_map(expected: object) -> dict[str, str]:
    """``expected`` as {module prefix: normalized device}; InputError for anything else."""
    mapping = expected if isinstance(expected, Mapping) else {"": expected}
    if not mapping:
        raise InputError("expected device map is empty")
    for prefix in mapping:
        if not isinstance(prefix, str):
            raise InputError(
                f"device map key {shown(prefix)}: expected a module name prefix (a string, "
                "'' for the whole model)"
            )
    return {prefix: _normalize_device(device) for prefix, device in mapping.items()}


@checked_call
def assert_device_map(model: object, expected: Mapping[str, object] | int | str) -> None:
    """Every parameter and buffer sits where ``expected`` says.

    ``expected`` maps module prefixes to devices, as ``model.hf_device_map`` does
    (``{"model.layers.0": 0, "lm_head": "cpu"}``; ``""`` is the whole model), or is one
    device for everything. Devices may be ints, ``"cpu"``, ``"disk"``, ``"cuda:0"`` or
    ``torch.device``; tensors accelerate offloaded to the CPU or disk count as there, and
    the buffers of such modules may sit on the execution device, where accelerate keeps them.
    """
    __tracebackhide__ = True
    net: Any = unpack(model)[0]
    normalized = _expected_map(expected)
    placements = _placements(net)
    rows: list[tuple[str, str, str]] = []
    for name, actual, offloaded_buffer in placements:
        entry = _map_entry(name, normalized)
        want = "(not in map)" if entry is None else normalized[entry]
        # accelerate keeps the buffers of CPU/disk-offloaded modules on the execution
        # device (offload_buffers=False, its default): that is where they belong.
        if want != actual and not (offloaded_buffer and want in ("cpu", "disk")):
            rows.append((name, want, actual))
    if not rows:
        return
    width = max(len("tensor"), *(len(row[0]) for row in rows[:MAX_ROWS]))
    lines = [f"  {'tensor':<{width}}  {'expected':<12}  actual"]
    lines += [f"  {name:<{width}}  {want:<12}  {actual}" for name, want, actual in rows]
    raise AssertionError(
        "\n".join(
            [
                f"{len(rows)} of {len(placements)} parameters/buffers are not where the map says:",
                *cap(lines, MAX_ROWS + 1),
            ]
        )
    )
