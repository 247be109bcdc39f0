"""Self-describing artifact directories: written to a temporary sibling and renamed into place, owned (replaced
only when their metadata names their kind and lists every file), reserved against concurrent writers, and reused
from the cache when current.

Every saved artifact (corpus index, expert, router) is a directory with a JSON metadata file that lists a
sha256 checksum for each data file (``retriever.storage.files``), so an interrupted save never leaves a
half-written artifact and never destroys the previous one.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from retriever.storage.files import ArtifactError, alive, check_parents

__all__ = [
    "atomic_directory",
    "cached_artifact",
    "check_target",
    "directory_files",
    "remove_stale_temporaries",
    "reuse_or_build",
]

logger = logging.getLogger(__name__)


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
