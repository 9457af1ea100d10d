"""Build a model on the meta device from its config alone, and list its parameters.

The slow path of the weights estimate (imports torch and transformers, seconds): used for
a bare config, weights in another format, or a model type the header path does not know.
Nothing is allocated and no weights are read; sizes come from parameter shapes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_gpuinfer.probes.bnb_modules import module_matches
from pytest_gpuinfer.probes.errors import InputError


@dataclass
class WeightTensor:
    """One parameter as the weights estimate counts it."""

    name: str
    numel: int
    kind: str  # "linear", "embedding" or "other"
    quantizable: bool  # a weight int8/nf4 convert
    out_features: int  # rows of a quantizable weight, for int8's per-row scale
    keep_fp32: bool  # in _keep_in_fp32_modules: fp32 when loading fp16
    keep_fp32_strict: bool = False  # in _keep_in_fp32_modules_strict: fp32 for fp16 and bf16


def first_line(error: BaseException | None) -> str:
    text = str(error).strip() if error is not None else ""
    return (text.splitlines() or [type(error).__name__])[0][:200]


@contextlib.contextmanager
def quiet_loggers() -> Iterator[None]:
    # Building on meta and planning for GPUs this machine may lack makes transformers
    # and accelerate warn ("Device 0 is not available"); the estimate stands regardless.
    names = ("transformers", "accelerate")
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in names]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def build_meta_model(config_path: Path, data: dict[str, Any], model_type: str) -> Any:
    """The model ``config.json`` describes, on the meta device, in fp32.

    Raises:
        InputError: transformers does not know the model type, or cannot build it.
    """
    import torch
    import transformers
    from accelerate import init_empty_weights
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from pytest_gpuinfer.probes.hf_calls import dtype_keyword

    if model_type not in CONFIG_MAPPING:
        raise InputError(
            f"config '{config_path}' has model_type '{model_type}', which transformers "
            f"{transformers.__version__} does not know: expected a built-in model type "
            "such as 'llama' or 'gpt2'"
        )
    try:
        config = CONFIG_MAPPING[model_type].from_dict(data)
    except Exception as error:  # config classes raise ValueError, TypeError, KeyError...
        raise InputError(
            f"config '{config_path}' is not a valid {model_type} config: {first_line(error)}"
        ) from None

    candidates: list[Any] = []
    for name in data.get("architectures") or []:
        cls = getattr(transformers, str(name), None) if isinstance(name, str) else None
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
            candidates.append(cls)
    if getattr(config, "is_encoder_decoder", False):
        candidates.append(transformers.AutoModelForSeq2SeqLM)
    candidates += [transformers.AutoModelForCausalLM, transformers.AutoModel]

    dtype_kwarg = {dtype_keyword(transformers.__version__): torch.float32}
    last_error: Exception | None = None
    with quiet_loggers(), init_empty_weights(include_buffers=True):
        for cls in candidates:
            try:
                if hasattr(cls, "_model_mapping"):  # an Auto class
                    return cls.from_config(config, **dtype_kwarg)
                return cls._from_config(config, **dtype_kwarg)
            except (ValueError, KeyError, TypeError, AttributeError, ImportError) as error:
                last_error = error
    raise InputError(
        f"config '{config_path}' cannot be built into a model: {first_line(last_error)}"
    )


def model_tensors(model: Any, kept: list[str]) -> list[WeightTensor]:
    """Every parameter of ``model`` once (tied ones under their first owner)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    keep_fp32 = list(getattr(model, "_keep_in_fp32_modules", None) or ())
    keep_strict = list(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
    seen: set[int] = set()
    tensors = []
    for module_name, module in model.named_modules():
        # bitsandbytes swaps exactly these types, not subclasses of nn.Linear.
        convertible = type(module) is torch.nn.Linear or isinstance(module, Conv1D)
        if isinstance(module, torch.nn.Linear | Conv1D):
            kind = "linear"
        elif isinstance(module, torch.nn.Embedding):
            kind = "embedding"
        else:
            kind = "other"
        skipped = module_matches(module_name, kept)
        for local, parameter in module.named_parameters(recurse=False):
            # Tied parameters are one tensor: count them once, under their first owner.
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            name = f"{module_name}.{local}" if module_name else local
            quantizable = convertible and local == "weight" and not skipped
            if quantizable and isinstance(module, Conv1D):
                out_features = int(parameter.shape[1])  # Conv1D stores (in, out)
            else:
                out_features = int(parameter.shape[0]) if parameter.dim() else 1
            tensors.append(
                WeightTensor(
                    name=name,
                    numel=int(parameter.numel()),
                    kind=kind,
                    quantizable=quantizable,
                    out_features=out_features,
                    keep_fp32=module_matches(module_name, keep_fp32) if keep_fp32 else False,
                    keep_fp32_strict=(
                        module_matches(module_name, keep_strict) if keep_strict else False
                    ),
                )
            )
    return tensors


def model_facts(model: Any) -> tuple[dict[str, Any], str, bool]:
    """The built config as a full dict, its default attention, and whether it is gated."""
    config = model.config
    data = config.to_dict()
    if hasattr(config, "get_text_config"):
        text = config.get_text_config()
        if text is not config:
            data = {**text.to_dict(), "model_type": data.get("model_type")}
    attention = "sdpa" if getattr(model, "_supports_sdpa", False) else "eager"
    gated = any(".gate" in name or "gate_" in name for name, _ in model.named_parameters())
    return data, attention, gated
