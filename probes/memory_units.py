"""Memory sizes as users write them ("8GiB", "500MB", 1024) and as we print them.

The grammar follows accelerate's ``convert_file_size_to_int``, which is what
``from_pretrained(max_memory=...)`` runs every string through: every string accelerate
accepts parses here to the same number of bytes. On top of that we accept a bare digit
string as bytes (a CLI cannot pass an int) and ``TiB`` / ``TB``, which accelerate lacks
but disk budgets need; we always hand accelerate integers, so the extension never
reaches it. Everything else accelerate rejects is rejected here with one clear line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pytest_gpuinfer.probes.errors import InputError

MemoryKey = int | str
"""A max_memory key: a GPU ordinal (int) or one of "mps", "cpu", "disk"."""

NAMED_DEVICES: tuple[str, ...] = ("mps", "cpu", "disk")
"""Non-GPU max_memory keys, in the order accelerate fills devices."""

# Longest suffixes first so "GiB" is never read as "B"-less "Gi" + "B".
_BINARY_UNITS: tuple[tuple[str, int], ...] = (
    ("TIB", 2**40),
    ("GIB", 2**30),
    ("MIB", 2**20),
    ("KIB", 2**10),
)
_DECIMAL_UNITS: tuple[tuple[str, int], ...] = (
    ("TB", 10**12),
    ("GB", 10**9),
    ("MB", 10**6),
    ("KB", 10**3),
)
_EXPECTED = "expected a number with a unit such as 8GiB, 500MB or 1024 (bytes)"


def parse_memory(text: str | int, *, what: str = "memory size") -> int:
    """Return the number of bytes ``text`` stands for.

    ``GiB/MiB/KiB/TiB`` are powers of 2, ``GB/MB/KB/TB`` powers of 10, a lowercase final
    ``b`` (``Gb``, ``mb``) means bits, a bare integer or digit string means bytes;
    fractions ("1.5GiB") are allowed and rounded down, like accelerate does.
    ``what`` names the value in the error, e.g. "--max-memory entry for GPU 0".

    Raises:
        InputError: the text is not a size, or the size is negative.
    """
    # bool is an int subclass; True bytes is never what anyone meant.
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise InputError(f"{what} {text!r} is not understood: {_EXPECTED}")
    size = text if isinstance(text, int) else _parse_text(text, what)
    if size < 0:
        raise InputError(f"{what} {text!r} is negative: {_EXPECTED}")
    return size


def _parse_text(text: str, what: str) -> int:
    stripped = text.strip()
    if stripped.isdigit():
        return int(stripped)
    upper = stripped.upper()
    for suffix, factor in _BINARY_UNITS:
        if upper.endswith(suffix):
            # int(float(...) * factor) truncates exactly as accelerate does, so
            # "1.3GiB" gives the same byte count on both sides.
            return int(_number(stripped[: -len(suffix)], text, what) * factor)
    for suffix, factor in _DECIMAL_UNITS:
        if upper.endswith(suffix):
            size = int(_number(stripped[: -len(suffix)], text, what) * factor)
            return size // 8 if stripped.endswith("b") else size
    raise InputError(f"{what} {text!r} is not understood: {_EXPECTED}")


def _number(digits: str, text: str, what: str) -> float:
    try:
        value = float(digits)
    except ValueError:
        raise InputError(f"{what} {text!r} is not understood: {_EXPECTED}") from None
    if not math.isfinite(value):
        raise InputError(f"{what} {text!r} is not a finite number: {_EXPECTED}")
    return value


_FORMAT_UNITS: tuple[tuple[str, int], ...] = (
    ("TiB", 2**40),
    ("GiB", 2**30),
    ("MiB", 2**20),
    ("KiB", 2**10),
)


def format_per_gpu(bytes_by_ordinal: Mapping[int, int]) -> str:
    """ "cuda:0 1.00 GiB, cuda:1 2.00 GiB" ("unknown" when empty)."""
    shown = (f"cuda:{i} {format_bytes(b)}" for i, b in sorted(bytes_by_ordinal.items()))
    return ", ".join(shown) or "unknown"


def format_bytes(n: int) -> str:
    """Human-readable binary size with two decimals: ``format_bytes(1600000000) == "1.49 GiB"``.

    Binary units throughout, because NVML and torch report GPU memory in them.
    """
    sign = "-" if n < 0 else ""
    magnitude = abs(n)
    for unit, factor in _FORMAT_UNITS:
        if magnitude >= factor:
            return f"{sign}{magnitude / factor:.2f} {unit}"
    return f"{sign}{magnitude} B"


def parse_max_memory(
    spec: str | Mapping[object, object], *, what: str = "max_memory"
) -> dict[MemoryKey, int]:
    """Parse a per-device memory budget into the dict accelerate's ``max_memory`` takes.

    ``spec`` is either the CLI form ``"0=20GiB,1=20GiB,cpu=64GiB,disk=1TiB"`` (``0:20GiB``
    works too), its JSON form ``'{"0": "20GiB", "cpu": "64GiB"}'``, or a mapping like
    ``{0: "20GiB", "cpu": 64 * 2**30}``. Keys are GPU
    ordinals (ints or digit strings) or "mps", "cpu", "disk"; values go through
    :func:`parse_memory`. The result lists GPUs in ascending order, then mps, cpu, disk:
    the order accelerate fills devices in.

    Raises:
        InputError: an entry, key or value is malformed, or a device is named twice.
    """
    pairs: list[tuple[object, object]]
    if isinstance(spec, str) and spec.strip().startswith("{"):
        spec = _json_spec(spec, what)
    if isinstance(spec, str):
        pairs = list(_split_spec(spec, what))
    elif isinstance(spec, Mapping):
        pairs = list(spec.items())
    else:
        raise InputError(
            f"{what} {spec!r} is not understood: expected a string like '0=20GiB,cpu=64GiB' "
            "or a dict like {0: '20GiB', 'cpu': '64GiB'}"
        )
    if not pairs:
        raise InputError(f"{what} {spec!r} names no device: expected e.g. '0=20GiB,cpu=64GiB'")

    budget: dict[MemoryKey, int] = {}
    for raw_key, raw_value in pairs:
        key = _device_key(raw_key, what)
        if key in budget:
            raise InputError(f"{what} names device {key!r} twice: expected each device once")
        label = f"GPU {key}" if isinstance(key, int) else key
        if not isinstance(raw_value, int | str):
            raise InputError(
                f"{what} entry for {label} {raw_value!r} is not understood: {_EXPECTED}"
            )
        budget[key] = parse_memory(raw_value, what=f"{what} entry for {label}")

    gpus = sorted(k for k in budget if isinstance(k, int))
    ordered: list[MemoryKey] = [*gpus, *(k for k in NAMED_DEVICES if k in budget)]
    return {k: budget[k] for k in ordered}


def _json_spec(spec: str, what: str) -> Mapping[object, object]:
    import json

    try:
        data = json.loads(spec)
    except ValueError as error:
        raise InputError(
            f"{what} {spec!r} is not valid JSON ({str(error).split(':')[0]}): expected "
            """e.g. '{"0": "20GiB", "cpu": "64GiB"}' or 0=20GiB,cpu=64GiB"""
        ) from None
    if not isinstance(data, dict):
        raise InputError(
            f"{what} {spec!r} is not a JSON object: expected e.g. " """'{"0": "20GiB"}'"""
        )
    return data


def _split_spec(spec: str, what: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for entry in spec.split(","):
        entry = entry.strip()
        if not entry:
            if spec.strip():
                raise InputError(
                    f"{what} {spec!r} has an empty entry: expected DEVICE=SIZE entries "
                    "separated by commas"
                )
            continue
        # "=" first; otherwise the last ":" so "cuda:0:20GiB" keeps "cuda:0" as the key
        # and earns the specific "use the integer" message.
        if "=" in entry:
            key, _, value = entry.partition("=")
        elif ":" in entry:
            key, _, value = entry.rpartition(":")
        else:
            raise InputError(
                f"{what} entry {entry!r} is not understood: expected DEVICE=SIZE such as "
                "0=20GiB or cpu=64GiB"
            )
        pairs.append((key.strip(), value.strip()))
    return pairs


def _device_key(raw: object, what: str) -> MemoryKey:
    if isinstance(raw, bool):
        raise InputError(f"{what} device {raw!r} is not a device: {_KEY_EXPECTED}")
    if isinstance(raw, int):
        if raw < 0:
            raise InputError(f"{what} device {raw!r} is negative: {_KEY_EXPECTED}")
        return raw
    if isinstance(raw, str):
        key = raw.strip().lower()
        if key.isdigit():
            return int(key)
        if key in NAMED_DEVICES:
            return key
        prefix, _, ordinal = key.partition(":")
        if ordinal.isdigit() and prefix in ("cuda", "gpu", "xpu", "npu"):
            raise InputError(
                f"{what} device {raw!r} is not a max_memory key: use the integer "
                f"{int(ordinal)} for that GPU"
            )
    raise InputError(f"{what} device {raw!r} is not a device: {_KEY_EXPECTED}")


_KEY_EXPECTED = "expected a GPU ordinal (0, 1, ...) or 'cpu', 'disk', 'mps'"
