"""Facts about a model type that only its transformers classes state, read from the installed files.

The workload estimate needs a few facts a ``config.json`` does not carry: the attention a
model class runs by default (``_supports_sdpa``), and the config class's defaults
(``tie_word_embeddings``, ``max_position_embeddings``) for keys a config leaves out. They
change between transformers releases (Gemma 2 had SDPA in 5.17 and is eager in 5.23:
``_supports_sdpa = False  # sdpa does not support softcapping``), so they are read from
the installed ``models/<type>/modeling_<type>.py`` and ``configuration_<type>.py`` as
text (``ast``), never imported: no torch, milliseconds, cached per model type. Without
transformers or the file each fact is :class:`Unknown`, with the reason.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SUPPORTS_SDPA = re.compile(
    r"^[ \t]+_supports_sdpa(?:[ \t]*:[ \t]*bool)?[ \t]*=[ \t]*(True|False)", re.MULTILINE
)
_MODEL_TYPE = re.compile(r"[a-z0-9_]+")


@dataclass(frozen=True)
class Unknown:
    """A fact that could not be read, and why ("transformers is not installed")."""

    reason: str

    def __str__(self) -> str:
        return f"unknown, because {self.reason}"


@dataclass(frozen=True)
class ClassFacts:
    """What the installed transformers says about one model type."""

    model_type: str
    attention: str | Unknown
    """"sdpa" where the model class sets ``_supports_sdpa = True``, "eager" where False."""
    attention_source: str
    """``file:line`` the attention was read from (or why it was not)."""
    config_defaults: dict[str, Any] = field(default_factory=dict)
    """Literal field defaults of the config class (``tie_word_embeddings: bool = False``)."""
    config_source: str = ""
    config_error: str = ""
    """Why the config class could not be read ("" when it was)."""
    transformers_version: str | None = None

    def default(self, key: str) -> Any:
        """The config class's default for ``key``, or an :class:`Unknown`."""
        if key in self.config_defaults:
            return self.config_defaults[key]
        return Unknown(
            self.config_error or f"{self.config_source} sets no literal default for {key}"
        )


def _transformers_root() -> Path | str:
    try:
        spec = importlib.util.find_spec("transformers")
    except (ImportError, ValueError) as error:
        return f"transformers cannot be found ({error})"
    if spec is None or not spec.submodule_search_locations:
        return "transformers is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


def _version(root: Path) -> str | None:
    try:
        text = (root / "__init__.py").read_text(encoding="utf-8")
    except OSError:
        return None
    found = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return found.group(1) if found else None


def _literal(node: ast.expr) -> Any:
    # Literals and arithmetic on them (Mixtral: ``max_position_embeddings: int = 4096 * 32``).
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult | ast.Add | ast.Pow):
        left, right = _literal(node.left), _literal(node.right)
        if isinstance(left, int) and isinstance(right, int):
            if isinstance(node.op, ast.Mult):
                return left * right
            return left + right if isinstance(node.op, ast.Add) else left**right
        raise ValueError("not a literal")
    return ast.literal_eval(node)


def _keyword_defaults(args: ast.arguments, found: dict[str, Any]) -> None:
    """Literal defaults of a signature's keywords, where the class body set none."""
    positional = args.posonlyargs + args.args
    pairs = list(
        zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True)
    )
    pairs += [
        (a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None
    ]
    for arg, default in pairs:
        if arg.arg in found:
            continue
        try:
            found[arg.arg] = _literal(default)
        except (ValueError, TypeError, SyntaxError):
            continue


def _popped_defaults(tree: ast.AST) -> dict[str, Any]:
    """``kwargs.pop("key", literal)`` in a class: how transformers 4.x's ``PretrainedConfig``
    defaults ``tie_word_embeddings`` (True) for every config that does not name it."""
    found: dict[str, Any] = {}
    for call in ast.walk(tree):
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "pop"
            and isinstance(call.func.value, ast.Name)
            and call.func.value.id == "kwargs"
            and len(call.args) == 2
            and isinstance(call.args[0], ast.Constant)
            and isinstance(call.args[0].value, str)
            and isinstance(call.args[1], ast.Constant)
        ):
            found.setdefault(call.args[0].value, call.args[1].value)
    return found


@functools.lru_cache(maxsize=4)
def _base_defaults(path: Path) -> dict[str, Any]:
    """Defaults every config inherits: ``PretrainedConfig``'s fields and keywords in
    ``configuration_utils.py`` (5.x declares fields, 4.x pops them from ``kwargs``)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in ("PretrainedConfig", "PreTrainedConfig"):
            found: dict[str, Any] = {}
            for item in node.body:
                if (
                    isinstance(item, ast.AnnAssign)
                    and isinstance(item.target, ast.Name)
                    and item.value is not None
                ):
                    try:
                        found[item.target.id] = _literal(item.value)
                    except (ValueError, TypeError, SyntaxError):
                        continue
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    _keyword_defaults(item.args, found)
            for key, value in _popped_defaults(node).items():
                found.setdefault(key, value)
            return found
    return {}


def _config_defaults(path: Path) -> tuple[dict[str, Any], str, str]:
    """(defaults, where, error)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError) as error:
        return {}, str(path), f"{path} cannot be read ({type(error).__name__})"
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.endswith("Config"):
            found: dict[str, Any] = {}
            for item in node.body:
                if (
                    isinstance(item, ast.AnnAssign)
                    and isinstance(item.target, ast.Name)
                    and item.value is not None
                ):
                    try:
                        found[item.target.id] = _literal(item.value)
                    except (ValueError, TypeError, SyntaxError):
                        continue
            # transformers 4.x: keyword defaults of ``__init__`` (``max_position_embeddings=2048``).
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    _keyword_defaults(item.args, found)
            # Fields set to a literal in a method when the class declares none (T5's
            # ``self.tie_word_embeddings = True`` in ``__init__``).
            for assigned in ast.walk(node):
                if isinstance(assigned, ast.Assign) and len(assigned.targets) == 1:
                    target = assigned.targets[0]
                    if (
                        isinstance(target, ast.Attribute)
                        and isinstance(target.value, ast.Name)
                        and target.value.id == "self"
                        and target.attr not in found
                        and isinstance(assigned.value, ast.Constant)
                    ):
                        found[target.attr] = assigned.value.value
            return found, f"{path}:{node.lineno}", ""
    return {}, str(path), f"{path} defines no config class"


@functools.lru_cache(maxsize=64)
def class_facts(model_type: str) -> ClassFacts:
    """The installed transformers' facts for ``model_type`` (cached per process)."""
    root = _transformers_root()
    if isinstance(root, str):
        return ClassFacts(model_type, Unknown(root), root, config_error=root)
    version = _version(root)
    if not _MODEL_TYPE.fullmatch(model_type):
        why = f"model type {model_type!r} names no transformers module"
        return ClassFacts(model_type, Unknown(why), why, config_error=why)
    folder = root / "models" / model_type
    modeling = folder / f"modeling_{model_type}.py"
    try:
        text = modeling.read_text(encoding="utf-8")
    except OSError:
        why = f"transformers {version} has no {modeling.name}"
        attention: str | Unknown = Unknown(why)
        source = why
    else:
        where = modeling
        hit = _SUPPORTS_SDPA.search(text)
        if hit is None:
            # No override (BLOOM): PreTrainedModel's own default applies.
            where = root / "modeling_utils.py"
            try:
                text = where.read_text(encoding="utf-8")
            except OSError:
                text = ""
            hit = _SUPPORTS_SDPA.search(text)
        if hit is None:
            why = f"neither {modeling} nor {where} sets _supports_sdpa"
            attention, source = Unknown(why), why
        else:
            attention = "sdpa" if hit.group(1) == "True" else "eager"
            source = f"{where}:{text.count(chr(10), 0, hit.start()) + 1}"
    defaults, config_at, error = _config_defaults(folder / f"configuration_{model_type}.py")
    if not error:
        for key, value in _base_defaults(root / "configuration_utils.py").items():
            defaults.setdefault(key, value)
    return ClassFacts(model_type, attention, source, defaults, config_at, error, version)
