"""What every assertion shares: unpacking models, checking argument types, message layout."""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.modes import MODE_INFO

if TYPE_CHECKING:
    import torch

# How many rows a failure message lists before it summarises the rest.
MAX_ROWS = 20

_P = ParamSpec("_P")
_R = TypeVar("_R")


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (a model's repr has hundreds)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def checked_call(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn a call that does not fit ``function``'s signature into one ``InputError`` line.

    Python's own ``TypeError`` for ``assert_memory_footprint(ref, cand, 2)`` does not say that
    the tolerance is keyword-only; this names the stray value and the keyword to use.
    """
    signature = inspect.signature(function)
    positional = [
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    keywords = [p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY]

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        __tracebackhide__ = True
        try:
            signature.bind(*args, **kwargs)
        except TypeError as error:
            name = function.__name__
            strays = args[len(positional) :]
            if strays:
                written = ", ".join(
                    f"{keyword}={shown(value)}"
                    for keyword, value in zip(keywords, strays, strict=False)
                )
                rest = (
                    f", tolerances and options by keyword: write {written}"
                    if written
                    else f"; {name} takes nothing else"
                )
                raise InputError(
                    f"{name}: {', '.join(shown(value) for value in strays)} passed by "
                    f"position; only {', '.join(positional)} go by position{rest}"
                ) from None
            raise InputError(f"{name}: {error}") from None
        return function(*args, **kwargs)

    return wrapper


def check_number(
    name: str,
    value: object,
    *,
    above: float | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """``value`` as a float, or InputError: a real number (not a bool) within the bounds."""
    bounds = [
        *([f"> {above:g}"] if above is not None else []),
        *([f">= {minimum:g}"] if minimum is not None else []),
        *([f"<= {maximum:g}"] if maximum is not None else []),
    ]
    expected = "a number" + (f" {' and '.join(bounds)}" if bounds else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name}={shown(value)}: expected {expected}")
    number = float(value)
    if (
        math.isnan(number)
        or (above is not None and not number > above)
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
    ):
        raise InputError(f"{name}={shown(value)}: expected {expected}")
    return number


def check_int(name: str, value: object, *, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, or InputError (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name}={shown(value)}: expected an integer >= {minimum}")
    return int(value)


def check_texts(name: str, value: object) -> list[str]:
    """One string or a non-empty sequence of strings, as a list; else InputError."""
    if isinstance(value, str):
        return [value]
    if (
        isinstance(value, Sequence)
        and not isinstance(value, (bytes, bytearray))
        and all(isinstance(item, str) for item in value)
    ):
        if not value:
            raise InputError(f"{name} is empty: pass at least one text")
        return list(value)
    raise InputError(f"{name}={shown(value)}: expected a string or a list of strings")


def check_tokenizer(tokenizer: object) -> None:
    """``tokenizer=`` is None or a callable tokenizer; else InputError."""
    if tokenizer is not None and not (callable(tokenizer) and hasattr(tokenizer, "decode")):
        raise InputError(
            f"tokenizer={shown(tokenizer)}: expected a Hugging Face tokenizer "
            "(callable, with decode()) or None"
        )


def unpack(obj: object, tokenizer: Any = None, *, what: str = "model") -> tuple[Any, Any]:
    """(model, tokenizer) from a model, a (model, tokenizer) pair or a LoadedModel-like."""
    import torch

    check_tokenizer(tokenizer)
    if isinstance(obj, torch.nn.Module):
        return obj, tokenizer
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], torch.nn.Module):
        return obj[0], tokenizer if tokenizer is not None else obj[1]
    inner = getattr(obj, "model", None)
    if isinstance(inner, torch.nn.Module):
        return inner, tokenizer if tokenizer is not None else getattr(obj, "tokenizer", None)
    raise InputError(
        f"{what}={shown(obj)}: expected a torch model, a (model, tokenizer) pair or a "
        f"LoadedModel; got {type(obj).__name__}"
    )


def loaded_quantized_mode(model: Any) -> str | None:
    """The quantized mode whose bits bitsandbytes loaded ``model`` with (int8, nf4), if any."""
    bits = (
        8
        if getattr(model, "is_loaded_in_8bit", False)
        else 4
        if getattr(model, "is_loaded_in_4bit", False)
        else None
    )
    if bits is None:
        return None
    return next((mode.name for mode in MODE_INFO.values() if mode.bits == bits), None)


def model_device(model: Any) -> torch.device:
    import torch

    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for tensor in model.parameters():
        return tensor.device  # type: ignore[no-any-return]
    return torch.device("cpu")


def to_device(inputs: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    import torch

    return {
        key: value.to(device) if isinstance(value, torch.Tensor) else value
        for key, value in inputs.items()
    }


def cap(lines: list[str], limit: int = MAX_ROWS) -> list[str]:
    if len(lines) <= limit:
        return lines
    return [*lines[:limit], f"... and {len(lines) - limit} more"]


def require_tokenizer(tokenizer: Any, what: str) -> Any:
    if tokenizer is None:
        raise InputError(
            f"{what} needs a tokenizer: pass tokenizer=, a (model, tokenizer) pair or a LoadedModel"
        )
    return tokenizer


def token_text(tokenizer: Any, token_id: int) -> str:
    if tokenizer is None:
        return f"{token_id}"
    return f"{token_id} {tokenizer.decode([token_id])!r}"
