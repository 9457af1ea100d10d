"""Writing a command's output files safely: checked against its inputs, replaced atomically.

Every command that writes a file (``gpuinfer merge --html``, ``bench --output/--chart``,
``route --out``, ``matrix --output``, the plugin's ``--gpuinfer-report`` and
``--gpuinfer-requirements``) names its inputs and outputs to one :class:`Outputs` first:
an empty path, a directory, a missing folder, or a path that is also an input or another
output of the same command (compared after resolving symlinks, and by inode for hard
links) is refused with one line before anything runs. A file is written to a temporary
file in its own folder and renamed over the target (``os.replace``), so an error never
leaves a half-written or clobbered file. JSON never carries ``NaN`` or ``Infinity``.

Imports only :mod:`pytest_gpuinfer.probes.errors`: every layer may use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from pytest_gpuinfer.probes.errors import InputError

PathLike = str | os.PathLike[str]


def dumps_json(data: Any, *, indent: int | None = 2, what: str = "the JSON output") -> str:
    """``json.dumps`` that refuses NaN and infinities (they are not JSON)."""
    try:
        return json.dumps(data, indent=indent, allow_nan=False)
    except ValueError as error:
        raise InputError(f"{what} holds a value JSON cannot carry ({error})") from None


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    """What makes two paths the same file: the resolved path, and the inode if it exists."""
    resolved = path.resolve()
    try:
        stat = resolved.stat()
    except OSError:
        return str(resolved), None
    return str(resolved), (stat.st_dev, stat.st_ino)


def same_file(left: Path, right: Path) -> bool:
    """Whether two paths name one file (symlinks followed, hard links compared by inode)."""
    a_path, a_inode = _identity(left)
    b_path, b_inode = _identity(right)
    return a_path == b_path or (a_inode is not None and a_inode == b_inode)


def check_path(value: PathLike | None, what: str) -> Path:
    """``value`` as a path a file can be written to; InputError naming ``what`` otherwise."""
    text = "" if value is None else os.fspath(value)
    if not text.strip():
        raise InputError(f"{what} is empty: expected a file path")
    if "\0" in text:
        raise InputError(f"{what} {text!r} holds a NUL character: expected a file path")
    path = Path(os.path.expanduser(text))
    if path.is_dir():
        raise InputError(f"{what} {text!r} is a directory: expected a file path")
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"{what} {text!r}: folder {str(folder)!r} does not exist")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{what} {text!r} is not writable (Permission denied)")
    try:  # what the write will do: a temporary file in the same folder (root included)
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InputError(f"{what} {text!r} is not writable ({reason})") from None
    os.close(handle)
    os.unlink(probe)
    return path


class Outputs:
    """The files one command reads and writes, checked against each other up front."""

    def __init__(self, inputs: Iterable[tuple[PathLike, str]] = ()) -> None:
        self._inputs: list[tuple[Path, str]] = []
        self._outputs: list[tuple[Path, str]] = []
        for path, what in inputs:
            self.add_input(path, what)

    def add_input(self, path: PathLike, what: str) -> None:
        """A file the command reads (it is never written)."""
        candidate = Path(os.path.expanduser(os.fspath(path)))
        if candidate.exists():
            self._inputs.append((candidate, what))

    def add(self, value: PathLike | None, what: str) -> Path:
        """An output file: checked, and refused when it is an input or an earlier output."""
        path = check_path(value, what)
        for earlier, role in (*self._inputs, *self._outputs):
            if same_file(path, earlier):
                hint = (
                    "an output never replaces an input"
                    if (earlier, role) in self._inputs
                    else "give each output its own file"
                )
                raise InputError(
                    f"{what} {os.fspath(value or '')!r} is the same file as {role} "
                    f"{str(earlier)!r}: {hint}"
                )
        self._outputs.append((path, what))
        return path

    @property
    def paths(self) -> list[Path]:
        return [path for path, _ in self._outputs]


def write_with(path: Path, write: Callable[[IO[bytes]], None], *, what: str = "") -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it into place.

    A symlink is followed (its target is replaced); the file keeps the mode of the one it
    replaces, or gets the umask's default. InputError (one line) when it cannot be written.
    """
    target = path.resolve() if path.is_symlink() else path
    folder = target.parent if str(target.parent) else Path(".")
    label = f"{what} " if what else ""
    try:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=str(folder)
        )
    except OSError as error:
        raise InputError(f"cannot write {label}{str(path)!r}: {error.strerror}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, _mode_for(target))
        os.replace(temporary, target)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise InputError(f"cannot write {label}{str(path)!r}: {error.strerror}") from None
        raise


def _mode_for(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_text(path: Path, text: str, *, what: str = "") -> None:
    """Write ``text`` (UTF-8) atomically."""
    data = text.encode("utf-8")

    def put(stream: IO[bytes]) -> None:
        stream.write(data)

    write_with(path, put, what=what)


def write_json(path: Path, data: Any, *, what: str = "", indent: int | None = 2) -> None:
    """Write ``data`` as JSON (no NaN), newline-terminated, atomically."""
    write_text(path, dumps_json(data, indent=indent, what=what or str(path)) + "\n", what=what)
