"""The session model cache: each load once; the least recently used go when GPU memory is short."""

from __future__ import annotations

import copy
import os
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pytest_gpuinfer.loading import gpu_memory
from pytest_gpuinfer.loading.loader import LoadedModel, default_report, gate, load_request
from pytest_gpuinfer.loading.request import CacheKey, LoadRequest
from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.modes import MODE_INFO

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.report import Report


def _shares_safely(loaded: LoadedModel) -> bool:
    # bitsandbytes parameters and optimum layers are not safe to deepcopy.
    return not loaded.bettertransformer and not MODE_INFO[loaded.mode].quantized


class ModelCache:
    """Load each (model, mode, task, placement, kwargs) once and share it.

    Least recently used entries are released before a load when the GPUs it may use lack
    the free memory it needs. ``private=True`` gives a caller a model of its own: a deep
    copy for float models, a fresh uncached load for int8/nf4 and BetterTransformer
    models, whose bitsandbytes parameters and optimum layers are not safe to deepcopy.
    ``get`` and ``key`` take :func:`~pytest_gpuinfer.loading.load_model`'s arguments.
    """

    def __init__(self, report: Report | None = None) -> None:
        self.report = report
        self.loads = 0
        """How many real loads (not cache hits) ran, private fresh loads included."""
        self.evictions = 0
        """How many entries were released to make room on the GPU."""
        self._entries: OrderedDict[CacheKey, LoadedModel] = OrderedDict()

    def key(self, name_or_path: str | os.PathLike[str], mode: str, **load_kwargs: Any) -> CacheKey:
        """The cache key of a ``get`` with these arguments (validates them)."""
        return LoadRequest.build(name_or_path, mode, **load_kwargs).cache_key

    def get(
        self,
        name_or_path: str | os.PathLike[str],
        mode: str,
        *,
        private: bool = False,
        **load_kwargs: Any,
    ) -> LoadedModel:
        """The cached model for these arguments, loading it on first use.

        Same arguments and errors as :func:`~pytest_gpuinfer.loading.load_model`.
        """
        if not isinstance(private, bool):
            raise InputError(f"private={private!r} is not understood: expected True or False")
        request = LoadRequest.build(name_or_path, mode, **load_kwargs)
        key = request.cache_key
        if self.report is None:
            self.report = default_report(mode)
        gate(mode, self.report)
        cached = self._entries.get(key)
        if cached is not None:
            self._entries.move_to_end(key)
            if not private:
                return cached
            if _shares_safely(cached):
                return _private_copy(cached)
        self._make_room(request)
        loaded = load_request(request, self.report)
        self.loads += 1
        if cached is None:
            self._entries[key] = loaded
        if private and cached is None:
            if _shares_safely(loaded):
                return _private_copy(loaded)
            # The first load stays cached; the caller gets a second, uncached one.
            fresh = load_request(request, self.report)
            self.loads += 1
            return fresh
        return loaded

    def _make_room(self, request: LoadRequest) -> None:
        if not self._entries:
            return
        from pytest_gpuinfer.loading.estimate import estimate_load

        needed = estimate_load(request.source, request.mode, request.workload).needed_bytes
        if needed is None:
            return
        ordinals = gpu_memory.gpu_ordinals(request.device_map, request.max_memory)
        if not ordinals:
            return
        while self._entries and sum(gpu_memory.free_gpu_memory(ordinals).values()) < needed:
            oldest = next(iter(self._entries))
            self.release(oldest)
            self.evictions += 1

    def release(self, key: CacheKey) -> bool:
        """Drop one entry and free its memory; False when the key is not cached.

        Memory returns once no caller holds the model any more.
        """
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        del entry
        gpu_memory.release_memory()
        return True

    def clear(self) -> None:
        """Drop every entry and free the memory."""
        self._entries.clear()
        gpu_memory.release_memory()

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[CacheKey]:
        return iter(list(self._entries))


def _private_copy(loaded: LoadedModel) -> LoadedModel:
    started = time.perf_counter()
    model = copy.deepcopy(loaded.model)
    copied = copy.copy(loaded)
    copied.model = model
    copied.load_seconds = time.perf_counter() - started
    return copied
