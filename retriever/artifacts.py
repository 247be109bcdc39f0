"""Self-describing artifact directories: atomic writes, JSON metadata, file checksums.

Every saved artifact (corpus index, expert, router) is a directory with a JSON metadata file that lists a
sha256 checksum for each data file. Directories are written to a temporary sibling and renamed into place,
so an interrupted save never leaves a half-written artifact and never destroys the previous one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "ArtifactError",
    "atomic_directory",
    "checksum_files",
    "library_version",
    "read_metadata",
    "save_npy",
    "sha256_file",
    "verify_checksums",
    "write_json",
]

logger = logging.getLogger(__name__)


class ArtifactError(ValueError):
    """A saved artifact is missing, corrupt, or does not fit what it is loaded with."""


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_files(directory: Path, names: list[str]) -> dict[str, str]:
    return {name: sha256_file(directory / name) for name in sorted(names)}


def verify_checksums(directory: Path, checksums: dict[str, str]) -> None:
    for name, expected in checksums.items():
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing; the artifact in {directory} is incomplete")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(
                f"checksum mismatch for {path}: expected sha256 {expected[:12]}…, got {actual[:12]}…; "
                "the file was modified or corrupted"
            )


def library_version() -> str:
    """This library's installed version, recorded in every artifact's metadata."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("routerretriever")
    except PackageNotFoundError:
        return "unknown"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary sibling, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_npy(path: Path, array) -> None:
    """Save an array as ``.npy`` atomically; load it back with ``allow_pickle=False``."""
    import numpy as np

    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(tmp, path)


def read_metadata(path: Path, kind: str, format_version: int) -> dict[str, Any]:
    """Read an artifact's JSON metadata file, checking its kind and format version."""
    if not path.is_file():
        raise ArtifactError(f"not a {kind}: {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise ArtifactError(f"{path} does not describe a {kind} (kind={data.get('kind')!r})")
    version = data.get("format_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{path} has no integer format_version")
    if version > format_version:
        logger.warning(
            "%s was written in %s format version %d, newer than this library's %d; loading may fail",
            path, kind, version, format_version,
        )
    return data


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``target`` only if the block succeeds.

    An exception (or a kill) inside the block leaves ``target`` exactly as it was. The swap keeps the old
    directory until the new one is in place, so there is no moment without a complete artifact on disk
    except the instant between two renames, and the old one is recoverable from ``<name>.old-*`` then.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the artifact gets ordinary permissions
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / "artifact")
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
