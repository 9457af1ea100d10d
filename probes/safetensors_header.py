"""Parameter names, shapes and dtypes of a local checkpoint, read from safetensors headers.

A safetensors file starts with an 8-byte little-endian header length, then that many
bytes of JSON: ``{name: {"dtype": "F16", "shape": [...], "data_offsets": [a, b]}}``.
Reading it costs one small read per file and imports neither torch nor numpy, which is
what keeps ``gpuinfer audit --model DIR`` about as fast as the audit without a model.
A sharded checkpoint is read through its ``model.safetensors.index.json``.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.modes import SAFETENSORS_DTYPES, dtype_bytes

MAX_HEADER_BYTES = 100 * 2**20
"""The safetensors format caps its JSON header at 100 MB; a larger length is corruption."""

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


@dataclass(frozen=True)
class HeaderTensor:
    """One tensor as a safetensors header describes it."""

    name: str
    dtype: str
    """The safetensors dtype tag ("F16", "BF16", "F32", ...)."""
    shape: tuple[int, ...]
    file: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def stored_bytes(self) -> int:
        return self.numel * (dtype_bytes(self.dtype) or 4)


def checkpoint_files(directory: Path) -> list[Path] | None:
    """The safetensors files of the checkpoint in ``directory``; None when it has none
    (another weight format, or a bare config).

    Raises:
        InputError: the shard index is unreadable or names a missing file.
    """
    index = directory / INDEX_NAME
    if index.is_file():
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            weight_map = data["weight_map"]
            names = sorted({str(v) for v in weight_map.values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            why = getattr(error, "strerror", None) or type(error).__name__
            raise InputError(
                f"'{index}' is not a valid safetensors index ({why}): expected JSON with a "
                '"weight_map" of tensor name -> shard file'
            ) from None
        files = [directory / name for name in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise InputError(
                f"'{index}' names shard '{missing[0]}', which is not in {directory}: "
                "expected every shard of the checkpoint"
            )
        return files
    single = directory / SINGLE_NAME
    if single.is_file():
        return [single]
    return None


def read_header(path: Path) -> list[HeaderTensor]:
    """The tensors of one safetensors file, from its header only.

    Raises:
        InputError: one line naming the file when the header is truncated, oversized,
            not JSON, or describes tensors that do not fit the file.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise InputError(
                    f"safetensors file '{path}' is truncated: {len(prefix)} bytes, "
                    "expected an 8-byte header length and a JSON header"
                )
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES or length + 8 > size:
                raise InputError(
                    f"safetensors file '{path}' is corrupt or truncated: its header claims "
                    f"{length} bytes but the file has {size}; expected a file written by "
                    "safetensors"
                )
            raw = handle.read(length)
    except OSError as error:
        raise InputError(f"safetensors file '{path}' cannot be read: {error.strerror}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InputError(
            f"safetensors file '{path}' has a corrupt header: not JSON; expected a file "
            "written by safetensors"
        ) from None
    if not isinstance(header, dict):
        raise InputError(f"safetensors file '{path}' has a corrupt header: not a JSON object")
    data_bytes = size - 8 - length
    tensors = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensors.append(_tensor(path, name, entry, data_bytes))
    return tensors


def _tensor(path: Path, name: str, entry: object, data_bytes: int) -> HeaderTensor:
    bad = f"safetensors file '{path}' has a corrupt header entry for '{name}'"
    if not isinstance(entry, dict):
        raise InputError(f"{bad}: expected an object with dtype, shape and data_offsets")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPES:
        raise InputError(f"{bad}: dtype {dtype!r} is not a safetensors dtype")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InputError(f"{bad}: shape {shape!r} is not a list of sizes")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
    ):
        raise InputError(f"{bad}: data_offsets {offsets!r} is not [start, end]")
    tensor = HeaderTensor(name, str(dtype), tuple(shape), path.name)
    start, end = offsets
    if end - start != tensor.stored_bytes or start < 0 or end > data_bytes:
        raise InputError(
            f"safetensors file '{path}' is truncated or corrupt: tensor '{name}' needs bytes "
            f"{start}..{end} of {data_bytes}; expected a complete file"
        )
    return tensor


def read_checkpoint(directory: Path) -> list[HeaderTensor] | None:
    """Every tensor of the safetensors checkpoint in ``directory``; None without one."""
    files = checkpoint_files(directory)
    if files is None:
        return None
    tensors: list[HeaderTensor] = []
    for file in files:
        tensors.extend(read_header(file))
    return tensors
