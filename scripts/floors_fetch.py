"""Fetch the release files generate_floors.py reads, from PyPI's simple index, into a cache.

Lists releases through the PEP 691 JSON index, picks one wheel per release (the one a Linux
x86_64, CPython 3.11 machine would install), and keeps it under ``<cache>/<package>/``
after checking its sha256 against the index. For torch only the wheel's core metadata is
fetched (the PEP 658 ``<wheel>.metadata`` file): the wheels are 500-900 MB and nothing in
them but METADATA is read. pip 23.2 (and this index's simple pages, which do not advertise
``core-metadata``) would download the whole wheel for ``pip install --dry-run --report``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import parse_wheel_filename
from packaging.version import InvalidVersion, Version

INDEX = "https://pypi.org/simple"
PYTHON_TAGS = ("py3", "cp311", "py2.py3")
PLATFORM = re.compile(r"^(any|manylinux.*x86_64|linux_x86_64)$")


@dataclass(frozen=True)
class ReleaseFile:
    package: str
    version: Version
    filename: str
    url: str
    sha256: str
    size: int
    yanked: bool = False
    """Yanked on the index: pip skips it unless pinned with ``==``, so it is still read."""


def _get(url: str, accept: str | None = None) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=300) as response:
        data: bytes = response.read()
    return data


def _wheel_fits(filename: str) -> bool:
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except ValueError:
        return False
    return any(t.interpreter in PYTHON_TAGS and PLATFORM.match(t.platform) for t in tags)


def _wheel_rank(filename: str) -> tuple[int, int, str]:
    # A pure wheel first, then one without a build tag (torch 2.10.0 has a rebuilt "-3").
    build = parse_wheel_filename(filename)[2]
    return (0 if filename.endswith("-any.whl") else 1, 1 if build else 0, filename)


def releases(package: str, minimum: str) -> list[ReleaseFile]:
    """Final releases >= minimum (yanked ones too: an exact pin installs them), one wheel
    each, oldest first."""
    index = json.loads(_get(f"{INDEX}/{package}/", "application/vnd.pypi.simple.v1+json"))
    by_version: dict[Version, list[dict[str, object]]] = {}
    for entry in index["files"]:
        name = str(entry["filename"])
        if not name.endswith(".whl") or not _wheel_fits(name):
            continue
        try:
            version = parse_wheel_filename(name)[1]
        except (ValueError, InvalidVersion):
            continue
        if version.is_prerelease or version.is_devrelease or version.local:
            continue
        if version >= Version(minimum):
            by_version.setdefault(version, []).append(entry)
    chosen: list[ReleaseFile] = []
    for version in sorted(by_version):
        entry = min(by_version[version], key=lambda e: _wheel_rank(str(e["filename"])))
        hashes = entry["hashes"]
        assert isinstance(hashes, dict)
        chosen.append(
            ReleaseFile(
                package,
                version,
                str(entry["filename"]),
                str(entry["url"]),
                str(hashes["sha256"]),
                int(str(entry["size"])),
                bool(entry.get("yanked")),
            )
        )
    return chosen


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(release: ReleaseFile, cache: Path) -> Path:
    """The wheel in the cache, downloaded (and hash-checked) when it is not there yet."""
    path = cache / release.package / release.filename
    if path.exists() and path.stat().st_size == release.size and _sha256(path) == release.sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _get(release.url)
    if hashlib.sha256(data).hexdigest() != release.sha256:
        raise RuntimeError(f"{release.filename}: sha256 differs from the index")
    partial = path.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(path)
    return path


class _RemoteFile(io.RawIOBase):
    """A read-only, seekable view of a remote file through HTTP Range requests."""

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size, self.position = url, size, 0
        self.fetched = 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = base + offset
        return self.position

    def readinto(self, buffer: Any) -> int:
        end = min(self.position + len(buffer), self.size)
        if end <= self.position:
            return 0
        request = urllib.request.Request(
            self.url, headers={"Range": f"bytes={self.position}-{end - 1}"}
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            if response.status != 206:
                raise RuntimeError(f"{self.url}: the server ignored the Range request")
            data = response.read()
        buffer[: len(data)] = data
        self.position += len(data)
        self.fetched += len(data)
        return len(data)


def _metadata_by_range(release: ReleaseFile) -> tuple[bytes, str]:
    remote = _RemoteFile(release.url, release.size)
    with zipfile.ZipFile(io.BufferedReader(remote, buffer_size=1 << 16)) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        data = wheel.read(name)
    return data, f"{name} read by HTTP Range ({remote.fetched} of {release.size} bytes)"


def fetch_metadata(release: ReleaseFile, cache: Path) -> tuple[Path, str]:
    """The wheel's METADATA alone, cached as ``<wheel>.metadata``, and how it was read.

    The PEP 658 file when the index has one; else (several torch wheels have none) the
    METADATA member read out of the remote zip with Range requests, as pip's lazy wheel does.
    """
    path = cache / release.package / f"{release.filename}.metadata"
    how_path = path.with_name(path.name + ".how")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data, how = _get(release.url + ".metadata"), "PEP 658 <wheel>.metadata"
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
            data, how = _metadata_by_range(release)
        if not data.startswith(b"Metadata-Version"):
            raise RuntimeError(f"{release.filename}: no core metadata read")
        path.write_bytes(data)
        how_path.write_text(how)
    how = how_path.read_text() if how_path.exists() else "PEP 658 <wheel>.metadata"
    return path, how
