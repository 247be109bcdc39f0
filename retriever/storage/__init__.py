"""Saved artifacts, below everything else in ``retriever``: ``files`` (one file: atomic writes, strict JSON and
``.npy``, checksums, metadata checks, where an output may go), ``artifacts`` (self-describing directories: atomic,
owned, reserved, reused from the cache when current), ``cache`` (the cache directory, what an entry's name records)
and ``docstore`` (the SQLite document store beside an index: what search hits carry back). Imports nothing else of
the project. Tested in ``tests/test_bad_input.py`` and ``tests/test_index.py``.
"""

from retriever.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "ArtifactError": "retriever.storage.files",
    "atomic_directory": "retriever.storage.artifacts",
    "atomic_file": "retriever.storage.files",
    "cached_artifact": "retriever.storage.artifacts",
    "DocStore": "retriever.storage.docstore",
    "default_cache_dir": "retriever.storage.cache",
    "read_json": "retriever.storage.files",
    "read_metadata": "retriever.storage.files",
    "safe_name": "retriever.storage.files",
    "write_json": "retriever.storage.files",
})
