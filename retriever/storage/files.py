"""One file at a time: atomic writes, JSON and ``.npy`` read and written strictly (no NaN, no pickle), checksums,
metadata checks, and where an output may go. ``ArtifactError``: a saved artifact that is missing, corrupt or does
not fit what it is loaded with."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "MODEL_SCHEMA",
    "alive",
    "ArtifactError",
    "atomic_file",
    "check_fields",
    "check_finite",
    "check_metadata",
    "check_output_dir",
    "check_output_file",
    "check_parents",
    "checksum_files",
    "json_text",
    "library_version",
    "load_npy",
    "parse_json",
    "read_json",
    "read_metadata",
    "safe_name",
    "save_npy",
    "Schema",
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


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def safe_name(name: object, what: str) -> str:
    """``name`` if it can be one path component under a directory the library owns, else a ValueError naming it.

    The one rule for dataset, expert and router names (every path join of a user-given name goes through it):
    1-128 letters, digits, '.', '-' or '_', starting with a letter or digit — so never empty, absolute, ``..``,
    or containing a separator.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid {what} name {name!r}: use 1-128 letters, digits, '.', '-' or '_', starting with a letter or "
            "digit (a name, not a path)"
        )
    return name


def json_text(data: Any) -> str:
    """``data`` as the library writes JSON: indented, one trailing newline; a NaN or infinite number (which JSON
    cannot hold: Python would write ``NaN``) is a ValueError."""
    try:
        return json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"
    except ValueError as err:
        raise ValueError(f"{err}: a NaN or infinite number cannot be written as JSON") from None


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (temporary sibling, then rename; ``atomic_file``)."""
    try:
        text = json_text(data)
    except ValueError as err:
        raise ValueError(f"refusing to write {path}: {err}") from None
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def parse_json(text: str | bytes) -> Any:
    """``json.loads``, refusing what JSON does not allow but Python reads: ``NaN``, ``Infinity`` and a number
    too large for a float (``1e999``), as a ValueError naming it. Every JSON the library reads goes through it."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def check_finite(array, where: str) -> None:
    """Refuse a float array holding a NaN or an infinity, as an ArtifactError naming ``where`` and the first
    such position: the one finite-number check of everything loaded (``.npy`` files, adapters, BM25 weights)
    and of vectors before they are saved. Reads a memory map in blocks."""
    import numpy as np

    if not np.issubdtype(array.dtype, np.inexact):
        return
    if array.ndim == 0:
        array = array.reshape(1)
    step = max(1, (1 << 22) // max(1, array[:1].size))  # rows per block: about 4M values
    for start in range(0, len(array), step):
        bad = np.argwhere(~np.isfinite(array[start : start + step]))
        if len(bad):
            at = (int(bad[0][0]) + start, *map(int, bad[0][1:]))
            value = array[at]
            raise ArtifactError(f"{where} holds a non-finite value ({value}) at index "
                                f"{at[0] if len(at) == 1 else at}")


def save_npy(path: Path, array) -> None:
    """Save an array as ``.npy`` atomically; load it back with ``allow_pickle=False``."""
    import numpy as np

    with atomic_file(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


def load_npy(path: Path, mmap: bool = False):
    """An array saved by ``save_npy`` (never a pickle); a missing, truncated or pickled file, or a NaN or infinite
    value in it (``check_finite``), is an ArtifactError."""
    import numpy as np

    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing") from None
    except (ValueError, EOFError) as err:  # content: not .npy, truncated, pickled (other OSErrors pass through)
        raise ArtifactError(f"{path} is not a readable .npy array: {err}") from None
    check_finite(array, str(path))
    return array


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; it replaces ``path`` only if the block succeeds. A link is
    followed (the file it points to is replaced, never the link); a path that is not a regular file, such as a
    FIFO or a device (``/dev/stdout``), is written through once the block succeeds, never replaced."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder) / f"output{Path(path).suffix}"
            yield tmp
            with open(tmp, "rb") as source, open(path, "wb") as target:
                shutil.copyfileobj(source, target)
        return
    path = check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for other in path.parent.glob(f".{glob.escape(path.stem)}.tmp-*{glob.escape(path.suffix)}"):  # a killed writer's
        match = re.fullmatch(rf"\.{re.escape(path.stem)}\.tmp-(\d+){re.escape(path.suffix)}", other.name)
        if match and not alive(int(match.group(1))):
            other.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path, what: str = "JSON file") -> Any:
    """Parse a JSON file the library wrote; unreadable bytes, malformed JSON or a non-finite number
    (``parse_json``) are an ArtifactError naming it."""
    try:
        return parse_json(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{what} {path} does not exist") from None
    except ValueError as err:  # not UTF-8, malformed, or a non-finite number (parse_json)
        raise ArtifactError(f"{path} is not valid JSON: {err}") from None


Schema = dict[str, Any]  # key -> type, tuple of types, or a nested Schema; a key ending in "?" is optional


def check_fields(data: Any, schema: Schema, where: str) -> None:
    """Check that ``data`` is a JSON object with ``schema``'s keys and types (``bool`` is never an ``int``)."""
    if not isinstance(data, dict):
        raise ArtifactError(f"{where} must be a JSON object, got {type(data).__name__}")
    for key, expected in schema.items():
        optional = key.endswith("?")
        key = key.rstrip("?")
        if key not in data:
            if optional:
                continue
            raise ArtifactError(f"{where} lacks the field {key!r}")
        value = data[key]
        if isinstance(expected, dict):
            check_fields(value, expected, f"{where} field {key!r}")
            continue
        types = expected if isinstance(expected, tuple) else (expected,)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join(t.__name__ for t in types)
            raise ArtifactError(f"{where} field {key!r} must be {names}, got {value!r}"[:300])


_SHA256 = re.compile(r"[0-9a-f]{64}")


MODEL_SCHEMA: Schema = {"id": str, "fingerprint": str, "dim": int}  # a base model as artifacts record it


def read_metadata(path: Path, kind: str, format_version: int, schema: Schema | None = None) -> dict[str, Any]:
    """Read an artifact's JSON metadata file, checking its kind, format version, ``schema`` and the entries of its
    ``files`` (plain file names with a sha256 each): any malformed content is an ArtifactError naming the file."""
    if not path.is_file():
        raise ArtifactError(f"not a {kind}: {path} does not exist")
    return check_metadata(read_json(path), str(path), kind, format_version, schema)


def check_metadata(data: Any, path: str, kind: str, format_version: int, schema: Schema | None = None
                   ) -> dict[str, Any]:
    """``read_metadata``'s checks of metadata already parsed (``path`` names where it came from in errors)."""
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise ArtifactError(f"{path} does not describe a {kind} (kind={found!r})")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArtifactError(f"{path} has no integer format_version")
    if version > format_version:
        logger.warning(
            "%s was written in %s format version %d, newer than this library's %d; loading may fail",
            path, kind, version, format_version,
        )
    check_fields(data, {"files?": dict, **(schema or {})}, path)
    for name, digest in data.get("files", {}).items():
        if not _NAME.fullmatch(name) or not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ArtifactError(f"{path}: bad file entry {name!r}: {digest!r} (expected a file name and a sha256)")
    return data


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (writers are told apart by process id: a writer in another
    PID namespace or on another host sharing the directory would look dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_parents(path: str | os.PathLike) -> Path:
    """``path`` made absolute with its links followed (a write goes through a link, never replaces it), once its
    nearest existing ancestor is checked to be a directory (so a write cannot fail on it after long work)."""
    path = Path(path).resolve()
    parent = next((p for p in path.parents if p.exists()), path)
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {parent} is not a directory")
    return path


def check_output_file(path: str | os.PathLike) -> Path:
    """Where a file output goes (``check_parents``: its links followed), refused if it is a directory."""
    path = check_parents(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    return path


def check_output_dir(path: str | os.PathLike) -> Path:
    """Where a directory of outputs goes (``check_parents``), refused if it exists and is not a directory."""
    path = check_parents(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"cannot write into {path}: it is not a directory")
    return path
