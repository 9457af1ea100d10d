"""Import a repository script (scripts/, benchmarks/) as a module, once per test process,
so tests call its functions instead of spawning it."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


@functools.cache
def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses resolve their module through sys.modules.
    sys.modules.setdefault(path.stem, module)
    spec.loader.exec_module(module)
    return module
