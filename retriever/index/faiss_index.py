"""The shared corpus index: frozen-base document vectors in FAISS, with string doc ids.

An index directory describes itself::

    index.json        format version, library version, model id + fingerprint, dim, metric, index type,
                      document count, corpus source + sha256, version (1, one more per add/delete:
                      ``retriever.index.changes``), sha256 of every file below
    doc_ids.json      row -> document id
    embeddings.npy    float32 [n, dim], L2-normalised (the exact index *is* this matrix; it is also the
                      cached document side for expert training)
    index.faiss       only for approximate types (hnsw, ivf)

It is written to a temporary sibling and renamed into place (``retriever.storage.artifacts.atomic_directory``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import faiss
import numpy as np
from tqdm.auto import tqdm

from retriever.encoding.encoder import Encoder, ModelInfo, check_device
from retriever.index.base import (
    CorpusSource,
    DenseIndex,
    Doc,
    IndexConfig,
    IndexType,
    Metric,
    chunks,
    corpus_source,
    dense_record,
    is_current,
)
from retriever.storage.artifacts import atomic_directory, cached_artifact, check_target
from retriever.storage.cache import precision_suffix
from retriever.storage.docstore import STORE_FILE, DocStore, StoredDoc
from retriever.storage.files import (
    MODEL_SCHEMA,
    ArtifactError,
    check_finite,
    checksum_files,
    load_npy,
    read_json,
    read_metadata,
    safe_name,
    verify_checksums,
    write_json,
)

__all__ = ["CorpusIndex", "build_index", "check_output", "cuda_ordinal", "default_index_path", "encode_into",
           "ensure_index", "faiss_gpus", "ivf_nlist"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
KIND = "routerretriever-corpus-index"
CHUNK_SIZE = 4096
GPU_MAX_K = 2048  # FAISS's GPU k-selection limit
SCHEMA = {"files": dict, "model": MODEL_SCHEMA, "dim": int, "count": int, "config": dict, "source": dict,
          "precision?": str}


_FAISS_METRIC = {Metric.INNER_PRODUCT: faiss.METRIC_INNER_PRODUCT}


def ivf_nlist(config: IndexConfig, n: int) -> int:
    """IVF lists for ``n`` vectors: the configured number, else about 4 * sqrt(n) (at least 39 vectors per list)."""
    return config.ivf_nlist or max(1, min(n // 39, int(4 * math.sqrt(n))))


def _faiss_index(config: IndexConfig, vectors: np.ndarray) -> faiss.Index:
    """Build the FAISS index over ``vectors`` (possibly a memory map), adding in chunks."""
    n, dim = vectors.shape
    metric = _FAISS_METRIC[config.metric]
    if config.index_type is IndexType.FLAT:
        index = faiss.IndexFlat(dim, metric)
    elif config.index_type is IndexType.HNSW:
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, metric)
        index.hnsw.efConstruction = config.hnsw_ef_construction
    else:
        nlist = ivf_nlist(config, n)
        index = faiss.IndexIVFFlat(faiss.IndexFlat(dim, metric), dim, nlist, metric)
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(n, size=min(n, 256 * nlist), replace=False))
        index.train(np.ascontiguousarray(vectors[sample]))
    for start in range(0, n, CHUNK_SIZE):
        index.add(np.ascontiguousarray(vectors[start : start + CHUNK_SIZE]))
    _apply_search_params(index, config)
    return index


def _apply_search_params(index: faiss.Index, config: IndexConfig) -> None:
    if config.index_type is IndexType.HNSW:
        index.hnsw.efSearch = config.hnsw_ef_search
    elif config.index_type is IndexType.IVF:
        index.nprobe = config.ivf_nprobe


class CorpusIndex(DenseIndex):
    """A loaded corpus index. ``search`` returns raw rows; ``retriever.ranking.topk`` maps them to ids.

    Search runs on FAISS. With ``device`` set (``"cuda"``, ``"cuda:1"``, ``"cpu"``): on a CUDA device with a FAISS
    GPU build installed (the ``gpu`` extra, ``faiss-gpu-cu12``), the FAISS index is copied to that GPU (flat and
    IVF); otherwise search is an exact torch matrix product on the device (flat indexes only).
    """

    QUERY_CHUNK = 4096  # queries per torch matrix product, so scores stay within memory on large batches

    def __init__(self, path: Path, meta: dict, doc_ids: list[str], embeddings: np.ndarray, index: faiss.Index,
                 device: str | None = None):
        self.path = path
        self.meta = meta
        self.doc_ids = doc_ids
        self.embeddings = embeddings
        self.index = index
        self.device = None
        self._device_docs = None
        self._gpu_index = None  # (FAISS GPU resources, the index on the GPU, its lock) with a FAISS GPU build
        self._store: DocStore | None = None  # opened on first use
        if device is not None:
            self.to(device)

    @property
    def store(self) -> DocStore | None:
        """The document store beside the vectors (``docs.sqlite``), or None for an index built before stores."""
        if self._store is None and STORE_FILE in self.meta["files"]:
            store = DocStore.open(self.path / STORE_FILE)
            if len(store) != len(self):
                raise ArtifactError(f"{self.path / STORE_FILE} holds {len(store)} documents, the index {len(self)}")
            self._store = store
        return self._store

    def documents(self, ids: Sequence[str]) -> dict[str, StoredDoc]:
        return {} if self.store is None else self.store.get(ids)

    def to(self, device: str | None) -> CorpusIndex:
        """Search on ``device`` from now on (``None``: FAISS on the CPU): FAISS's GPU index where the installed
        FAISS can use that GPU, else torch. Copies the index there once; on an error nothing changes."""
        gpu_index, device_docs = None, None
        gpu = cuda_ordinal(device)
        if gpu is not None and gpu < faiss_gpus() and self.config.index_type is not IndexType.HNSW:
            check_device(device)
            resources = faiss.StandardGpuResources()
            gpu_index = (resources, faiss.index_cpu_to_gpu(resources, gpu, self.index), threading.Lock())
        elif device is not None:
            import torch

            if self.config.index_type is not IndexType.FLAT:
                raise ValueError(f"device search is exact and needs a flat index; {self.path} is "
                                 f"{self.config.index_type.value} (rebuild it with --index-type flat)")
            check_device(device)
            device_docs = torch.from_numpy(np.array(self.embeddings, dtype=np.float32)).to(device)
        self._gpu_index, self._device_docs, self.device = gpu_index, device_docs, device
        return self

    @property
    def engine(self) -> str:
        """What searches: ``faiss`` (CPU), ``faiss-gpu`` or ``torch`` (on ``device``)."""
        return "faiss-gpu" if self._gpu_index is not None else "torch" if self._device_docs is not None else "faiss"

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        query_vectors, k = self._queries(query_vectors, k)
        if self._gpu_index is not None:
            _, index, lock = self._gpu_index
            if k > GPU_MAX_K:
                raise ValueError(f"FAISS on the GPU returns at most {GPU_MAX_K} hits per query, asked for {k}")
            with lock:  # FAISS GPU indexes and their resources are not thread-safe, searches included
                return index.search(query_vectors, k)
        if self._device_docs is None:
            return self.index.search(query_vectors, k)
        import torch

        scores, rows = [], []
        with torch.no_grad():
            for start in range(0, len(query_vectors), self.QUERY_CHUNK):
                chunk = torch.from_numpy(query_vectors[start : start + self.QUERY_CHUNK]).to(self.device)
                top = torch.topk(chunk @ self._device_docs.T, k, dim=1)
                scores.append(top.values.float().cpu().numpy())
                rows.append(top.indices.cpu().numpy().astype(np.int64))
        if not scores:
            return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
        return np.concatenate(scores), np.concatenate(rows)

    @classmethod
    def load(cls, path: str | os.PathLike, model: ModelInfo | None = None, verify: bool = True,
             device: str | None = None) -> CorpusIndex:
        path = Path(path)
        meta = read_metadata(path / "index.json", KIND, FORMAT_VERSION, SCHEMA)
        try:
            config = IndexConfig(**meta["config"])
        except (TypeError, ValueError) as err:
            raise ArtifactError(f"{path / 'index.json'}: bad index config {meta['config']!r}: {err}") from None
        needed = {"embeddings.npy", "doc_ids.json", *(["index.faiss"] if config.index_type is not IndexType.FLAT
                                                      else [])}
        missing = ", ".join(sorted(needed - set(meta["files"])))
        if missing:
            raise ArtifactError(f"{path / 'index.json'} lists no checksum for {missing}")
        if verify:
            verify_checksums(path, meta["files"])
        doc_ids = read_json(path / "doc_ids.json")
        if not isinstance(doc_ids, list) or not all(isinstance(d, str) for d in doc_ids):
            raise ArtifactError(f"{path / 'doc_ids.json'} must be a JSON list of document id strings")
        embeddings = load_npy(path / "embeddings.npy", mmap=True)
        if embeddings.shape != (meta["count"], meta["dim"]) or len(doc_ids) != meta["count"]:
            raise ArtifactError(
                f"index {path}: {len(doc_ids)} ids and embeddings of shape {embeddings.shape} do not match "
                f"count {meta['count']} and dim {meta['dim']} in index.json"
            )
        if embeddings.dtype != np.float32:
            raise ArtifactError(f"{path / 'embeddings.npy'} holds {embeddings.dtype}, not float32")
        if config.index_type is IndexType.FLAT:
            index = _faiss_index(config, embeddings)
        else:
            try:
                index = faiss.read_index(str(path / "index.faiss"))
            except RuntimeError as err:
                raise ArtifactError(f"{path / 'index.faiss'} is not a readable FAISS index: "
                                    f"{str(err).strip().splitlines()[-1]}") from None
            if index.ntotal != meta["count"] or index.d != meta["dim"]:
                raise ArtifactError(f"{path / 'index.faiss'} holds {index.ntotal} vectors of dim {index.d}, but "
                                    f"index.json says {meta['count']} of dim {meta['dim']}")
            _apply_search_params(index, config)
        loaded = cls(path, meta, doc_ids, embeddings, index, device)
        if model is not None:
            loaded.check_model(model)
        return loaded


def faiss_gpus() -> int:
    """GPUs the installed FAISS build can use: 0 for ``faiss-cpu``."""
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


def cuda_ordinal(device: str | None) -> int | None:
    """The GPU number of a CUDA device name (``cuda`` is 0, ``cuda:1`` is 1); None for any other device."""
    if device is None or not str(device).startswith("cuda"):
        return None
    _, _, number = str(device).partition(":")
    return int(number) if number.isdigit() else 0


def encode_into(vectors: np.ndarray, docs: Iterable[Doc], encoder: Encoder, progress=None) -> int:
    """Encode ``docs`` with the base encoder, chunk by chunk, into the rows of ``vectors`` from the first (every
    chunk's vectors checked finite); ``progress(n)`` after each batch. Returns the rows written."""
    row = 0
    for chunk in chunks(docs, CHUNK_SIZE):
        encoded = encoder.encode([doc.content() for doc in chunk], progress=progress)
        check_finite(encoded, f"the vectors {encoder.info.id} gave documents {chunk[0].id!r}..")
        vectors[row : row + len(chunk)] = encoded
        row += len(chunk)
    return row


def build_index(
    docs: Iterable[Doc] | CorpusSource,
    encoder: Encoder,
    path: str | os.PathLike,
    config: IndexConfig | None = None,
    *,
    progress: bool = False,
    source: dict | None = None,
    overwrite: bool = True,
    owned: bool = False,
) -> CorpusIndex:
    """Encode a corpus with the (frozen) base encoder and write an index directory at ``path``.

    ``docs`` is a dataset (anything with ``corpus()``) or a re-iterable collection of documents: a first pass
    validates and counts, a second streams chunks through the encoder into a memory-mapped matrix, so
    memory holds one chunk of texts at a time. An existing index at ``path`` is replaced only on success, and
    only if it is an index (``owned``: a cache entry of the library's, replaced whatever it holds); with
    ``overwrite=False`` an existing ``path`` is an error (checked before encoding).
    """
    config = config or IndexConfig()
    stream = docs.corpus if hasattr(docs, "corpus") else (lambda: iter(docs))
    doc_ids = [doc.id for doc in stream()]
    if not doc_ids:
        raise ValueError("cannot index an empty corpus")
    if len(set(doc_ids)) != len(doc_ids):
        raise ValueError("document ids must be unique")
    n, dim = len(doc_ids), encoder.dim
    with atomic_directory(path, ("index.json", KIND), overwrite=overwrite, owned=owned) as tmp:
        vectors = np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float32, shape=(n, dim))
        with tqdm(total=n, desc="encoding corpus", unit="doc", disable=not progress) as bar:
            row = encode_into(vectors, stream(), encoder, bar.update)
        if row != n:
            raise RuntimeError(f"corpus changed while indexing: {n} documents counted, {row} encoded")
        vectors.flush()
        files = ["embeddings.npy", "doc_ids.json"]
        (tmp / "doc_ids.json").write_text(json.dumps(doc_ids), encoding="utf-8")
        if config.index_type is not IndexType.FLAT:
            faiss.write_index(_faiss_index(config, vectors), str(tmp / "index.faiss"))
            files.append("index.faiss")
        del vectors
        if DocStore.write(tmp / STORE_FILE, stream()) != n:
            raise RuntimeError(f"corpus changed while indexing: {n} documents encoded, a different number stored")
        files.append(STORE_FILE)
        record = dense_record(KIND, FORMAT_VERSION, encoder, config, n,
                              source if source is not None else corpus_source(docs))
        write_json(tmp / "index.json", {**record, "version": 1, "files": checksum_files(tmp, files)})
    logger.info("indexed %d documents into %s", n, path)
    return CorpusIndex.load(path, encoder.info, verify=False)


def check_output(path: str | os.PathLike, overwrite: bool) -> None:
    """Whether ``build_index`` may write ``path`` (``retriever.storage.artifacts.check_target``), before any
    encoding."""
    check_target(path, ("index.json", KIND), overwrite)


def default_index_path(cache_dir: str | os.PathLike, name: str, model: ModelInfo, config: IndexConfig,
                       precision: str = "fp32") -> Path:
    name = safe_name(name, "dataset")
    return Path(cache_dir) / "indexes" / f"{name}-{model.fingerprint[:12]}-{config.index_type.value}" \
        f"{precision_suffix(precision, '-')}"


def ensure_index(
    dataset: CorpusSource,
    encoder: Encoder,
    cache_dir: str | os.PathLike,
    config: IndexConfig | None = None,
    *,
    progress: bool = False,
) -> CorpusIndex:
    """Load the cached index of ``dataset`` for this model, or build it when absent or stale."""
    config = config or IndexConfig()
    path = default_index_path(cache_dir, dataset.name, encoder.info, config, encoder.precision)
    source = corpus_source(dataset)

    def current(index: CorpusIndex) -> bool:
        return is_current(index.meta, source, config.to_json(), encoder.precision)

    return cached_artifact(path, "index.json", "index", lambda p: CorpusIndex.load(p, encoder.info), current,
                           lambda: build_index(dataset, encoder, path, config, progress=progress, source=source,
                                               owned=True))
