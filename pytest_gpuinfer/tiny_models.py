"""Tiny Hugging Face models built offline from configs, and a shipped trained tiny LM.

Nothing here touches a model hub. Importing this module is cheap: torch, transformers and
tokenizers are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pytest_gpuinfer.probes.errors import InputError

# Task -> the transformers Auto class that loads a model written for that task.
TASK_AUTO_CLASSES: Mapping[str, str] = MappingProxyType(
    {
        "causal-lm": "AutoModelForCausalLM",
        "seq2seq-lm": "AutoModelForSeq2SeqLM",
        "masked-lm": "AutoModelForMaskedLM",
        "encoder": "AutoModel",
    }
)

DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")

# Every tokenizer here is byte-level: one token per byte, no merges, so any text encodes
# without an unknown token and the vocabulary is the special tokens plus 256 bytes.
BYTE_VOCAB_SIZE = 256
MAX_POSITIONS = 128

TINYLLAMA_1B: Mapping[str, Any] = MappingProxyType(
    {
        "vocab_size": 32000,
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
    }
)
"""``config_overrides`` for a 1.1B Llama shaped like TinyLlama (22 layers, hidden 2048, GQA
32/4, vocab 32000): the model of the GPU benchmarks and GPU tests (random weights)."""

TRAINED_PROMPT = "The quick brown fox"
TRAINED_CONTINUATION = (
    " jumps over the lazy dog. A small model learned this line by heart,"
    " one byte at a time, on two tired cores."
)

# Written last: a directory holding it with the same stamp is complete and is reused.
_STAMP_FILE = ".gpuinfer-tiny-model.json"


@dataclass(frozen=True)
class TinyArchitecture:
    """One tiny architecture: how to configure it and tokenize for it."""

    model_type: str
    config_class: str
    config_kwargs: Mapping[str, Any]
    tasks: tuple[str, ...]
    # Special tokens in id order (ids 0..n-1), as (role, text); roles are transformers'
    # special-token attribute names without "_token" (bos, eos, unk, pad, cls, sep, mask).
    special_tokens: tuple[tuple[str, str], ...]
    # Config fields holding a special token's id -> that token's role.
    token_id_fields: Mapping[str, str] = field(default_factory=dict)
    # tokenizers TemplateProcessing template for one sequence; "$A" alone adds nothing.
    template: str = "$A"
    # Template for a pair of sequences; None repeats ``template`` for the second one.
    pair_template: str | None = None
    model_input_names: tuple[str, ...] = ("input_ids", "attention_mask")

    @property
    def task(self) -> str:
        """The default task."""
        return self.tasks[0]

    @property
    def vocab_size(self) -> int:
        return len(self.special_tokens) + BYTE_VOCAB_SIZE

    def token_id(self, role: str) -> int:
        for index, (token_role, _) in enumerate(self.special_tokens):
            if token_role == role:
                return index
        raise KeyError(role)

    def config_values(self) -> dict[str, Any]:
        """Every config keyword argument, token ids and vocabulary size included."""
        values = dict(self.config_kwargs)
        values["vocab_size"] = self.vocab_size
        for config_field, role in self.token_id_fields.items():
            values[config_field] = self.token_id(role)
        return values


_CAUSAL_TASKS = ("causal-lm", "encoder")
_CAUSAL_TOKEN_IDS = {"bos_token_id": "bos", "eos_token_id": "eos", "pad_token_id": "pad"}

ARCHITECTURES: Mapping[str, TinyArchitecture] = MappingProxyType(
    {
        "llama": TinyArchitecture(
            model_type="llama",
            config_class="LlamaConfig",
            config_kwargs=MappingProxyType(
                {
                    "hidden_size": 64,
                    "intermediate_size": 128,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 4,
                    "num_key_value_heads": 2,
                    "max_position_embeddings": MAX_POSITIONS,
                }
            ),
            tasks=_CAUSAL_TASKS,
            special_tokens=(("unk", "<unk>"), ("bos", "<s>"), ("eos", "</s>"), ("pad", "<pad>")),
            token_id_fields=_CAUSAL_TOKEN_IDS,
            template="<s> $A",
        ),
        "gpt2": TinyArchitecture(
            model_type="gpt2",
            config_class="GPT2Config",
            config_kwargs=MappingProxyType(
                {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": MAX_POSITIONS}
            ),
            tasks=_CAUSAL_TASKS,
            # GPT-2 uses one token as bos, eos and unk; a separate pad keeps padding
            # distinguishable from the end of a text.
            special_tokens=(("eos", "<|endoftext|>"), ("pad", "<pad>")),
            token_id_fields={"bos_token_id": "eos", "eos_token_id": "eos", "pad_token_id": "pad"},
        ),
        "bloom": TinyArchitecture(
            model_type="bloom",
            config_class="BloomConfig",
            # BLOOM has ALiBi, not position embeddings: no maximum length in its config.
            config_kwargs=MappingProxyType({"hidden_size": 64, "n_layer": 2, "n_head": 4}),
            tasks=_CAUSAL_TASKS,
            special_tokens=(("unk", "<unk>"), ("bos", "<s>"), ("eos", "</s>"), ("pad", "<pad>")),
            token_id_fields=_CAUSAL_TOKEN_IDS,
        ),
        "opt": TinyArchitecture(
            model_type="opt",
            config_class="OPTConfig",
            config_kwargs=MappingProxyType(
                {
                    "hidden_size": 64,
                    "word_embed_proj_dim": 64,
                    "ffn_dim": 128,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 4,
                    "max_position_embeddings": MAX_POSITIONS,
                }
            ),
            tasks=_CAUSAL_TASKS,
            special_tokens=(("bos", "<s>"), ("pad", "<pad>"), ("eos", "</s>"), ("unk", "<unk>")),
            token_id_fields=_CAUSAL_TOKEN_IDS,
            template="<s> $A",
        ),
        "bert": TinyArchitecture(
            model_type="bert",
            config_class="BertConfig",
            config_kwargs=MappingProxyType(
                {
                    "hidden_size": 64,
                    "intermediate_size": 128,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 4,
                    "max_position_embeddings": MAX_POSITIONS,
                }
            ),
            tasks=("encoder", "masked-lm"),
            special_tokens=(
                ("pad", "[PAD]"),
                ("unk", "[UNK]"),
                ("cls", "[CLS]"),
                ("sep", "[SEP]"),
                ("mask", "[MASK]"),
            ),
            token_id_fields={"pad_token_id": "pad"},
            template="[CLS] $A [SEP]",
            pair_template="[CLS] $A [SEP] $B:1 [SEP]:1",
            model_input_names=("input_ids", "token_type_ids", "attention_mask"),
        ),
        "t5": TinyArchitecture(
            model_type="t5",
            config_class="T5Config",
            config_kwargs=MappingProxyType(
                {
                    "d_model": 64,
                    "d_kv": 16,
                    "d_ff": 128,
                    "num_layers": 2,
                    "num_decoder_layers": 2,
                    "num_heads": 4,
                }
            ),
            tasks=("seq2seq-lm",),
            special_tokens=(("pad", "<pad>"), ("eos", "</s>"), ("unk", "<unk>")),
            # T5 starts decoding from the pad token.
            token_id_fields={
                "pad_token_id": "pad",
                "eos_token_id": "eos",
                "decoder_start_token_id": "pad",
            },
            template="$A </s>",
        ),
    }
)


def get_architecture(architecture: str) -> TinyArchitecture:
    """The entry of ``ARCHITECTURES`` for a name; ``InputError`` for an unknown name."""
    try:
        return ARCHITECTURES[architecture]
    except KeyError:
        choices = ", ".join(ARCHITECTURES)
        raise InputError(
            f"unknown tiny model architecture {architecture!r}; expected one of: {choices}"
        ) from None


def _byte_symbols() -> list[str]:
    """The printable stand-in for each byte 0..255 that tokenizers' ByteLevel uses."""
    # Printable Latin-1 bytes stand for themselves; the rest are shifted past 255 so every
    # byte has a visible, non-whitespace symbol.
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    symbols: list[str] = []
    shifted = 0
    for byte in range(256):
        if byte in keep:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def build_tokenizer(architecture: str) -> Any:
    """A byte-level ``PreTrainedTokenizerFast`` for an architecture, built offline."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    spec = get_architecture(architecture)
    vocab: dict[str, int] = {}
    for _, text in spec.special_tokens:
        vocab[text] = len(vocab)
    for symbol in _byte_symbols():
        vocab[symbol] = len(vocab)

    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    if spec.template != "$A":
        pair = spec.pair_template or f"{spec.template} {spec.template.replace('$A', '$B')}"
        specials_used = [word for word in spec.template.split() if word in vocab]
        backend.post_processor = processors.TemplateProcessing(
            single=spec.template,
            pair=pair,
            special_tokens=[(text, vocab[text]) for text in specials_used],
        )

    is_decoder_only = spec.task == "causal-lm"
    # Named through Any: transformers 5 leaves this constructor unannotated.
    tokenizer_class: Any = transformers.PreTrainedTokenizerFast
    return tokenizer_class(
        tokenizer_object=backend,
        model_max_length=MAX_POSITIONS,
        # Batched generation with a decoder-only model needs the padding on the left.
        padding_side="left" if is_decoder_only else "right",
        model_input_names=list(spec.model_input_names),
        **{f"{role}_token": text for role, text in spec.special_tokens},
    )


def save_tokenizer(tokenizer: Any, directory: str | Path) -> None:
    """``tokenizer.save_pretrained`` that transformers 4.x and 5.x can both load back."""
    directory = Path(directory)
    tokenizer.save_pretrained(str(directory))
    # transformers 5 writes its own class name "TokenizersBackend", which 4.x lacks;
    # "PreTrainedTokenizerFast" names the same class in both.
    config_path = directory / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text(encoding="utf-8"))
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")


def _stamp(
    architecture: str, seed: int, task: str, dtype: str, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    import transformers

    return {
        "architecture": architecture,
        "seed": seed,
        "task": task,
        "dtype": dtype,
        "config_overrides": {key: overrides[key] for key in sorted(overrides)},
        # A directory written by one transformers release may not load in another.
        "transformers": transformers.__version__,
    }


def _is_complete(directory: Path, stamp: Mapping[str, Any]) -> bool:
    try:
        recorded = json.loads((directory / _STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or recorded.get("stamp") != dict(stamp):
        return False
    files = recorded.get("files", [])
    return bool(files) and all((directory / name).is_file() for name in files)


def write_tiny_model(
    architecture: str,
    directory: str | Path,
    *,
    seed: int = 0,
    task: str | None = None,
    dtype: str = "float32",
    config_overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Write a tiny random model and its tokenizer to ``directory`` and return it.

    Weights depend only on ``architecture``, ``seed``, ``task``, ``dtype`` and
    ``config_overrides`` (config keywords that replace the tiny ones, e.g. a 1.1B Llama's
    sizes for a benchmark); a directory already holding that exact model is reused as is.
    Bad arguments raise ``InputError``.
    """
    overrides = dict(config_overrides or {})
    spec = get_architecture(architecture)
    task = spec.task if task is None else task
    if task not in spec.tasks:
        raise InputError(
            f"task {task!r} is not available for tiny {architecture}; expected one of: "
            + ", ".join(spec.tasks)
        )
    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r} is not supported; expected one of: {', '.join(DTYPES)}")

    directory = Path(directory)
    stamp = _stamp(architecture, seed, task, dtype, overrides)
    if _is_complete(directory, stamp):
        return directory

    import torch
    import transformers

    config = getattr(transformers, spec.config_class)(**{**spec.config_values(), **overrides})
    auto_class = getattr(transformers, TASK_AUTO_CLASSES[task])
    # A private RNG: the weights depend on the seed alone, and the caller's torch RNG
    # state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = auto_class.from_config(config)
    model = model.to(getattr(torch, dtype)).eval()
    if getattr(model, "generation_config", None) is not None and "pad" in dict(spec.special_tokens):
        model.generation_config.pad_token_id = spec.token_id("pad")

    directory.mkdir(parents=True, exist_ok=True)
    (directory / _STAMP_FILE).unlink(missing_ok=True)
    # Build beside the target and move file by file: a reader never sees a half-written
    # file, and concurrent writers of the same model (pytest-xdist workers) write the
    # same bytes.
    with tempfile.TemporaryDirectory(dir=directory, prefix=".staging-") as staging_name:
        staging = Path(staging_name)
        model.save_pretrained(str(staging))
        save_tokenizer(build_tokenizer(architecture), staging)
        names = sorted(path.name for path in staging.iterdir() if path.is_file())
        for name in names:
            os.replace(staging / name, directory / name)
        (staging / _STAMP_FILE).write_text(
            json.dumps({"stamp": stamp, "files": names}, indent=2) + "\n", encoding="utf-8"
        )
        os.replace(staging / _STAMP_FILE, directory / _STAMP_FILE)
    return directory


def trained_model_path() -> Path:
    """The shipped tiny causal LM that greedily continues ``TRAINED_PROMPT`` with
    ``TRAINED_CONTINUATION``."""
    return Path(__file__).resolve().parent / "data" / "tiny-trained-lm"
