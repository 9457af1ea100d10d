"""Where a model comes from (directory, config, hub id) and its task: for loader and estimate."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pytest_gpuinfer.probes.errors import InputError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
"""What a Hugging Face hub id looks like ("gpt2", "org/name")."""

TASKS: Mapping[str, str] = MappingProxyType(
    {
        "causal-lm": "AutoModelForCausalLM",
        "seq2seq-lm": "AutoModelForSeq2SeqLM",
        "feature-extraction": "AutoModel",
        "encoder": "AutoModel",
        "sequence-classification": "AutoModelForSequenceClassification",
    }
)
"""Task name -> the transformers Auto class that loads it."""

WEIGHT_SUFFIXES: tuple[str, ...] = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".gguf",
)
"""Files that hold a checkpoint's weights, in any format transformers reads."""

DEFAULT_TASK = "causal-lm"
"""The task assumed when a config does not say (no ``architectures`` entry, a hub id)."""


@dataclass(frozen=True)
class ModelSource:
    name: str
    """What from_pretrained receives: a resolved directory or a hub id."""
    directory: Path | None
    """The local directory, None for a hub id."""


def check_task(task: object) -> str:
    """Return ``task`` if it is one of :data:`TASKS`, else raise InputError."""
    if not isinstance(task, str) or task not in TASKS:
        raise InputError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    return task


def resolve_source(name_or_path: object) -> ModelSource:
    """A model directory written by ``save_pretrained`` (with config.json), or a hub id.

    Raises:
        InputError: not a path or string, a missing path, a file, or a directory without
            config.json.
    """
    if not isinstance(name_or_path, str | os.PathLike):
        raise InputError(
            f"model {name_or_path!r} is not understood: expected a directory written by "
            "save_pretrained, or a hub id"
        )
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    looks_like_path = (
        isinstance(name_or_path, os.PathLike)
        or path.is_absolute()
        or text.startswith((".", "~"))
        or not HUB_ID.match(text)
    )
    if path.exists():
        if not path.is_dir():
            raise InputError(
                f"model path {text!r} is a file, not a model directory: expected a directory "
                "written by save_pretrained (with config.json)"
            )
        if not (path / "config.json").is_file():
            raise InputError(
                f"{text!r} is not a model directory: it has no config.json (expected a "
                "directory written by save_pretrained)"
            )
        return ModelSource(str(path.resolve()), path.resolve())
    if looks_like_path:
        raise InputError(f"model path {text!r} does not exist")
    return ModelSource(text, None)


def resolve_config_path(source: str | os.PathLike[str]) -> Path:
    """The config.json behind ``source``: a model directory, a config file, or a hub id
    already in the local Hugging Face cache (looked up offline, never downloaded).

    Raises:
        InputError: nothing usable is found.
    """
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise InputError(f"'{text}' is not a model directory: no config.json")
        return config
    if path.exists():
        return path
    cached = _cached_hub_config(text)
    if cached is not None:
        return cached
    raise InputError(
        f"model '{text}' does not exist: expected a model directory, a config.json, "
        "or a hub id already in the local Hugging Face cache"
    )


def _cached_hub_config(repo_id: str) -> Path | None:
    if not HUB_ID.match(repo_id):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        # Reads the cache directory only: no network, whatever HF_HUB_OFFLINE says.
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # HFValidationError: not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def read_config(path: Path) -> tuple[dict[str, Any], str]:
    """The config.json at ``path`` as a dict, and its ``model_type``.

    Raises:
        InputError: unreadable, not JSON, not an object, or without ``model_type``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        why = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise InputError(f"config '{path}' cannot be read: {why}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"config '{path}' is not valid JSON: {error.msg} at line {error.lineno} "
            f"column {error.colno}"
        ) from None
    if not isinstance(data, dict):
        raise InputError(f"config '{path}' is not valid JSON config: expected a JSON object")
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise InputError(
            f"config '{path}' has no model_type: expected a transformers config.json "
            'with a "model_type" key such as "llama"'
        )
    check_config_sizes(data, f"config '{path}'")
    return data, model_type


MAX_LAYERS = 10_000
"""The most layers a config may state (the largest models have a few hundred)."""
MAX_WIDTH = 1 << 24
"""The largest width, head count, vocabulary or expert count a config may state."""
MAX_POSITIONS = 1 << 30
_LAYER_KEYS = frozenset(
    {
        "num_hidden_layers",
        "n_layer",
        "num_layers",
        "num_decoder_layers",
        "num_encoder_layers",
        "encoder_layers",
        "decoder_layers",
    }
)
_POSITION_KEYS = frozenset({"max_position_embeddings", "n_positions", "n_ctx", "sliding_window"})
_WIDTH_KEYS = frozenset(
    {"hidden_size", "n_embd", "d_model", "intermediate_size", "n_inner", "ffn_dim", "d_ff",
     "num_attention_heads", "n_head", "num_heads", "num_key_value_heads", "head_dim", "d_kv",
     "vocab_size", "num_local_experts", "num_experts", "n_routed_experts",
     "num_experts_per_tok", "moe_intermediate_size", "shared_expert_intermediate_size",
     "word_embed_proj_dim", "relative_attention_num_buckets"}
)  # fmt: skip


def check_config_sizes(data: Mapping[str, Any], where: str) -> None:
    """Refuse sizes no model has (a million layers would take minutes and gigabytes to
    estimate): every bounded key at the top level and in nested sub-configs."""
    stack: list[tuple[str, Mapping[str, Any]]] = [("", data)]
    while stack:
        prefix, table = stack.pop()
        for key, value in table.items():
            if isinstance(value, Mapping) and key.endswith("_config"):
                stack.append((f"{prefix}{key}.", value))
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                continue
            if key in _LAYER_KEYS:
                high = MAX_LAYERS
            elif key in _POSITION_KEYS:
                high = MAX_POSITIONS
            elif key in _WIDTH_KEYS:
                high = MAX_WIDTH
            else:
                continue
            if value > high:
                raise InputError(
                    f"{where} has {prefix}{key}={value}: expected at most {high:,} "
                    "(no model is that large; is the config damaged?)"
                )


def task_for_config(architectures: object, is_encoder_decoder: object) -> str:
    """The task a config's ``architectures`` names; :data:`DEFAULT_TASK` when it cannot tell."""
    names = architectures if isinstance(architectures, list | tuple) else []
    name = names[0] if names and isinstance(names[0], str) else ""
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal-lm"
    if name.endswith("ForSequenceClassification"):
        return "sequence-classification"
    if is_encoder_decoder and (not name or name.endswith("ForConditionalGeneration")):
        return "seq2seq-lm"
    if name.endswith("Model"):
        return "feature-extraction"
    return DEFAULT_TASK


def infer_task(name_or_path: str | os.PathLike[str]) -> str:
    """Guess the task from a local model's config.json ``architectures``.

    :data:`DEFAULT_TASK` when it cannot tell (hub ids, no ``architectures`` entry).
    """
    source = resolve_source(name_or_path)
    if source.directory is None:
        return DEFAULT_TASK
    try:
        config = json.loads((source.directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {source.directory / 'config.json'}: {error}") from None
    if not isinstance(config, dict):
        return DEFAULT_TASK
    return task_for_config(config.get("architectures"), config.get("is_encoder_decoder"))


def infer_task_from_config(config: Any) -> str:
    """Guess the task from a loaded transformers config (see :func:`infer_task`)."""
    return task_for_config(
        list(getattr(config, "architectures", None) or []),
        getattr(config, "is_encoder_decoder", False),
    )
