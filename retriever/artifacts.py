"""Self-describing artifact directories: atomic writes, JSON metadata, file checksums.

Every saved artifact (corpus index, expert, router) is a directory with a JSON metadata file that lists a
sha256 checksum for each data file. Directories are written to a temporary sibling and renamed into place,
so an interrupted save never leaves a half-written artifact and never destroys the previous one.
"""

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "MODEL_SCHEMA",
    "ArtifactError",
    "alive",
    "atomic_directory",
    "atomic_file",
    "cached_artifact",
    "check_fields",
    "check_finite",
    "check_metadata",
    "check_output_dir",
    "check_output_file",
    "check_parents",
    "check_target",
    "checksum_files",
    "directory_files",
    "library_version",
    "json_text",
    "load_npy",
    "parse_json",
    "read_json",
    "read_metadata",
    "remove_stale_temporaries",
    "reuse_or_build",
    "safe_name",
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


def _dead_writer(other: Path, target: Path, kind: str) -> int | None:
    """The process id in ``.<target name>.<kind>-PID-*`` if ``other`` is such a sibling and that process is gone."""
    match = re.fullmatch(rf"\.{re.escape(target.name)}\.{kind}-(\d+)-[^/]+", other.name)
    return int(match.group(1)) if match and not alive(int(match.group(1))) else None


def remove_stale_temporaries(target: Path) -> None:
    """Clean up after a killed writer of ``target``: its temporary directory (``.NAME.tmp-PID-*``) is deleted; its
    swap directory (``.NAME.old-PID-*``) is put back as ``target`` when the kill came between the two renames
    (no ``target``), and deleted only once ``target`` exists again. Siblings of running processes are kept."""
    if not target.parent.is_dir():
        return
    for other in sorted(target.parent.glob(f".{glob.escape(target.name)}.*-*")):
        if (pid := _dead_writer(other, target, "tmp")) is not None:
            logger.warning("removing %s, left by an interrupted write (process %d)", other, pid)
            shutil.rmtree(other, ignore_errors=True)
        elif (pid := _dead_writer(other, target, "old")) is not None:
            if not target.exists() and (other / "artifact").is_dir():
                logger.warning("restoring %s from %s (process %d was killed while replacing it)", target, other, pid)
                os.rename(other / "artifact", target)
            shutil.rmtree(other, ignore_errors=True)


def directory_files(directory: Path) -> list[str]:
    """Every file below ``directory``, as sorted '/'-separated relative paths (a link, even to a directory, is
    listed as a file and never followed): what an artifact's metadata lists under ``files``."""
    found = []
    for folder, dirs, files in os.walk(directory):
        here = Path(folder)
        found += [(here / name).relative_to(directory).as_posix() for name in files]
        found += [(here / name).relative_to(directory).as_posix() for name in dirs if (here / name).is_symlink()]
    return sorted(found)


def _describes(target: Path, describes: tuple[str, str]) -> bool:
    """Whether ``target`` is that kind of artifact and nothing else: its metadata file says so and lists every
    other file it holds (a directory that also holds anything else, a router say, is not replaceable)."""
    meta_name, kind = describes
    try:
        meta = json.loads((target / meta_name).read_text(encoding="utf-8"))
        if meta.get("kind") != kind:
            return False
        return set(directory_files(target)) <= {meta_name, *meta["files"]}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return False


def _reservation(target: Path) -> Path:
    return target / ".incomplete"


def _reserved_by(target: Path) -> int | None:
    """The process that reserved ``target`` (it holds only ``.incomplete``), or None."""
    marker = _reservation(target)
    if target.is_dir() and [p.name for p in target.iterdir()] == [marker.name]:
        with contextlib.suppress(OSError, ValueError):
            return int(marker.read_text())
    return None


def _replaceable(target: Path, describes: tuple[str, str]) -> bool:
    """An existing directory ``--overwrite`` may replace: empty, that kind of artifact holding nothing else, or
    left reserved by a writer that died."""
    if not any(target.iterdir()) or _describes(target, describes):
        return True
    pid = _reserved_by(target)
    return pid is not None and not alive(pid)


def _reserve(target: Path) -> None:
    """Create ``target`` exclusively, marked as being written by this process; a directory left marked by a
    writer that died is taken over."""
    try:
        os.mkdir(target)
    except FileExistsError:
        pid = _reserved_by(target)
        if pid is None or alive(pid):
            busy = f" (being written by process {pid})" if pid else ""
            raise FileExistsError(f"{target} already exists{busy}; pass --overwrite to replace it") from None
        logger.warning("taking over %s, left incomplete by process %d", target, pid)
    _reservation(target).write_text(str(os.getpid()))


def cached_artifact(path: Path, metadata: str, what: str, load: Callable[[Path], Any],
                    current: Callable[[Any], bool], build: Callable[[], Any]) -> Any:
    """A cache entry of the library's: ``load(path)`` when its ``metadata`` file is there and ``current`` says the
    entry still fits (same source, same settings), else ``build()``. A stale, damaged or incomplete entry is
    rebuilt with a log line; ``build`` replaces it only once the new one is complete."""
    if not (path / metadata).exists() and path.exists():
        logger.warning("rebuilding %s %s: it has no %s", what, path, metadata)
    return reuse_or_build((path / metadata).exists(), f"{what} {path}", lambda: load(path), current, build)


def reuse_or_build(present: bool, label: str, load: Callable[[], Any], current: Callable[[Any], bool],
                   build: Callable[[], Any]) -> Any:
    """``cached_artifact``'s rule for any store (a directory, a Milvus collection): when ``present``, ``load()``
    it and reuse it if ``current`` says it still fits; else, or when it is stale or damaged (an ArtifactError),
    ``build()`` it, with a log line naming ``label``."""
    if present:
        try:
            loaded = load()
            if current(loaded):
                logger.info("reusing %s", label)
                return loaded
            logger.info("%s is stale (corpus, settings or tokenizer changed); rebuilding", label)
        except ArtifactError as err:
            logger.warning("rebuilding %s: %s", label, err)
    return build()


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


def _check_location(target: Path) -> Path:
    """``check_parents``, and never the current directory or one that contains it (replacing it would pull the
    directory out from under the process)."""
    target = check_parents(target)
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise ValueError(f"{target} is the current directory or contains it; refusing to replace it (run the "
                         "command from another directory)")
    return target


def check_target(target: str | os.PathLike, describes: tuple[str, str], overwrite: bool) -> None:
    """The refusals of ``atomic_directory``, without writing anything (so a command can fail before long work):
    ``target`` is a file, under a file, or the current directory (or contains it); with ``overwrite``, a
    directory that is not that kind of artifact holding nothing else; without it, any existing ``target`` but
    a dead writer's reservation."""
    target = _check_location(Path(target))
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory; refusing to replace it")
    if not target.is_dir():
        return
    if overwrite and not _replaceable(target, describes):
        raise FileExistsError(
            f"{target} exists and is not a {describes[1]} holding nothing else (its {describes[0]} must say so "
            "and list every file in it); refusing to replace it"
        )
    pid = _reserved_by(target)
    if not overwrite and (pid is None or alive(pid)):
        busy = f" (being written by process {pid})" if pid else ""
        raise FileExistsError(f"{target} already exists{busy}; pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, describes: tuple[str, str], overwrite: bool = True,
                     owned: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``target`` only if the block succeeds.

    ``describes`` is ``(metadata file, kind)`` of the artifact written: an existing ``target`` is replaced only
    if it is empty or that file says it is that kind of artifact and lists (under ``files``) every other file
    it holds, so a user's other directory, or anything put inside the artifact, is never deleted. A link is
    followed: the directory it points to is written. ``owned``: the path is the library's own (a cache entry),
    replaced whatever it holds, a damaged entry too.
    Without ``overwrite`` the target is created exclusively at the start (a second writer fails at once, and
    an existing target is never touched). An exception (or a kill) inside the block leaves ``target`` exactly
    as it was; what a killed writer left is cleaned up by the next write (``remove_stale_temporaries``). The
    swap keeps the old directory until the new one is in place, so a kill between the two renames loses
    nothing: the next write puts the old one back first.
    """
    target = _check_location(Path(target))
    if not owned:
        check_target(target, describes, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    if overwrite and (pid := _reserved_by(target)) is not None and not alive(pid):
        _reservation(target).unlink()  # a dead exclusive writer's empty reservation: nothing to keep
    reserved = not overwrite
    if reserved:
        _reserve(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the artifact gets ordinary permissions
    try:
        yield tmp
        if reserved:
            _reservation(target).unlink()
            os.rename(tmp, target)  # onto the empty directory this process created
        elif target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
            os.rename(target, old / "artifact")
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if reserved and target.is_dir() and [p.name for p in target.iterdir()] in ([], [".incomplete"]):
            shutil.rmtree(target, ignore_errors=True)
        raise
