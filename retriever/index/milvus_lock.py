"""One writer at a time per Milvus collection, on a Milvus server too: ``writer_lock`` holds the alias
``NAME__writer`` while a change runs.

Milvus has no lock and no transaction, but its root coordinator creates aliases one at a time and refuses an alias
that already names another collection. So a writer first creates a marker collection of its own,
``NAME__writer_<hex>`` (empty; its properties record the writer's host, pid and start), then points the alias at it:
a second writer's alias is refused, and it fails at once with an ``IndexBusyError`` naming the holder. (A server
accepts an alias that already names the *same* collection, which is why each writer needs its own marker.) Leaving
drops the alias and the marker.

A writer killed on this host leaves both behind: the next writer on this host sees that the recorded pid is gone and
takes the lock over (not atomic: two writers taking over the same dead writer's lock at the same instant could both
proceed). One killed on another host is reported with the command that releases its lock by hand.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator

from retriever.index.changes import IndexBusyError
from retriever.index.milvus import WRITER
from retriever.storage.files import alive

__all__ = ["WRITER", "writer_lock"]

logger = logging.getLogger(__name__)

HOLDER = "routerretriever.writer"


def _marker(client, name: str) -> str:
    """Create this writer's marker collection and return its name."""
    from pymilvus import DataType

    marker = f"{name}{WRITER}_{uuid.uuid4().hex[:12]}"
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector field in every collection
    client.create_collection(marker, schema=schema)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    client.alter_collection_properties(marker, properties={HOLDER: json.dumps(holder)})
    return marker


def _holder(client, alias: str) -> tuple[str | None, dict]:
    """The marker the alias names and the writer it records (``{}`` if unreadable); ``(None, {})`` if no alias."""
    from pymilvus.exceptions import MilvusException

    try:
        marker = client.describe_alias(alias=alias)["collection_name"]
    except MilvusException:
        return None, {}
    try:
        return marker, json.loads(client.describe_collection(marker).get("properties", {}).get(HOLDER, "{}"))
    except (MilvusException, json.JSONDecodeError):
        return marker, {}


def _acquire(client, uri: str, name: str, marker: str, tries: int = 3) -> None:
    from pymilvus.exceptions import MilvusException

    alias = name + WRITER
    for _ in range(tries):
        try:
            client.create_alias(collection_name=marker, alias=alias)
            return
        except MilvusException as err:
            refused = err
            held, holder = _holder(client, alias)
        if held is not None:
            break
    else:  # no holder to be read: the alias was refused for another reason (a privilege, the server)
        raise refused
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) and not alive(holder["pid"]):
        client.alter_alias(collection_name=marker, alias=alias)
        client.drop_collection(held)
        return
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')}"
    raise IndexBusyError(f"Milvus collection {name!r} at {uri} is being changed by another writer ({who}); try again "
                         f"when it has finished. If that writer is gone, release its lock: "
                         f"MilvusClient({uri!r}).drop_alias({alias!r})")


def _release(client, name: str, marker: str) -> None:
    """Drop the alias if it still names this writer's marker (a writer that took a lock over owns it now), then the
    marker; a failure is logged, not raised over the change's own outcome."""
    try:
        try:
            if _holder(client, name + WRITER)[0] == marker:
                client.drop_alias(alias=name + WRITER)
        finally:
            client.drop_collection(marker)
    except Exception as err:  # noqa: BLE001 - the server may be what failed the change
        logger.warning("could not release the writer lock of Milvus collection %r (marker %s): %s", name, marker, err)


@contextlib.contextmanager
def writer_lock(client, uri: str, name: str) -> Iterator[None]:
    """Hold collection ``name``'s writer lock for the block (module docstring); ``IndexBusyError`` if another
    writer holds it."""
    marker = _marker(client, name)
    try:
        _acquire(client, uri, name, marker)
    except BaseException:
        client.drop_collection(marker)
        raise
    try:
        yield
    finally:
        _release(client, name, marker)
