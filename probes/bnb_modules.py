"""Which modules bitsandbytes quantization leaves in full precision, as transformers
decides it (``get_keys_to_not_convert`` and ``should_convert_module``, transformers 5).

Shared by the memory estimate (what stays 16-bit) and ``assert_quantized`` (what must
not be quantized). Takes a model built by transformers; imports nothing heavy itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any


def module_matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether transformers' quantizers skip module ``name`` for these patterns: a pattern
    matches from the start up to a module boundary (also as a regex), or as a plain suffix
    (transformers' ``should_convert_module``)."""
    for pattern in patterns:
        if name.endswith(pattern):
            return True
        try:
            if re.match(rf"(?:{pattern})(?:(?<=\.)|(?=\.|$))", name):
                return True
        except re.error:
            continue
    return False


def tied_groups(model: Any) -> list[list[str]]:
    """Groups of parameter names that share one tensor."""
    tied = getattr(model, "all_tied_weights_keys", None)
    if isinstance(tied, Mapping):
        groups: dict[str, set[str]] = {}
        for alias, target in tied.items():
            groups.setdefault(str(target), {str(target)}).add(str(alias))
        return [sorted(group) for group in groups.values()]
    from accelerate.utils import find_tied_parameters

    return [sorted(group) for group in find_tied_parameters(model)]


def kept_in_full_precision(model: Any, tied: list[list[str]] | None = None) -> list[str]:
    """What transformers' bnb quantizers skip by default: tied weights, the last
    parameter's module, the output embeddings, and ``_keep_in_fp32_modules``."""
    if tied is None:
        tied = tied_groups(model)
    skip = {name for group in tied for name in group}
    parameters = list(model.named_parameters())
    if parameters:
        skip.add(parameters[-1][0])
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None:
        skip.update(name for name, module in model.named_modules() if module is output)
    skip.update(getattr(model, "_keep_in_fp32_modules", None) or ())
    return sorted({name.removesuffix(".weight") for name in skip})
