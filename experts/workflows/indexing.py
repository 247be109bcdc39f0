"""``routerretriever index``: encode a dataset's corpus or a collection file (in this process or on Ray actors)
into a dense index and a BM25 index, in the cache or at a named target, closing the encoder whatever happens."""

from __future__ import annotations

from typing import NamedTuple

from eval.data import open_dataset
from retriever.encoding.encoder import load_encoder
from retriever.index.backends import FaissBackend, IndexBackend
from retriever.index.base import IndexConfig
from retriever.index.collection import open_collection

__all__ = ["Indexed", "check_encoder_options", "check_source_options", "index_source", "index_dataset"]


class Indexed(NamedTuple):
    dense: object  # the dense index the backend built or found
    lexical: object | None  # its BM25 index (None: not asked for)
    config: IndexConfig
    encoder_id: str


def check_encoder_options(encoder_kind: str = "local", ray_address: str | None = None, gpus_per_worker: float = 0,
                          device: str | None = None, batch_size: int | None = None) -> None:
    """Options that belong to the other encoder kind fail here (the CLI shows them as usage errors)."""
    if encoder_kind == "local" and (ray_address or gpus_per_worker):
        raise ValueError("--ray-address and --gpus-per-worker are for --encoder ray")
    if encoder_kind == "ray" and (device or batch_size):
        raise ValueError("--device and --batch-size are for --encoder local (Ray workers: --gpus-per-worker)")


def _open_encoder(model, encoder_kind, workers, ray_address, gpus_per_worker, precision, device, batch_size):
    if encoder_kind == "ray":
        from retriever.index.ray_encoder import RayEncoder

        return RayEncoder(model, workers, ray_address, gpus=gpus_per_worker, precision=precision)
    encoder = load_encoder(model, device=device, precision=precision)
    encoder.batch_size = batch_size or encoder.batch_size
    return encoder


def check_source_options(dataset: str | None = None, corpus=None, output=None, backend_name: str = "faiss") -> None:
    """Exactly one of ``dataset`` and ``corpus``; a FAISS ``corpus`` needs ``output`` (the CLI shows these as usage
    errors)."""
    if (dataset is None) == (corpus is None):
        raise ValueError("give --dataset NAME (a BEIR folder under --data-dir) or --corpus FILE (your own "
                         "collection), " + ("not both" if dataset else "one of them"))
    if corpus is not None and output is None and backend_name == "faiss":
        raise ValueError(f"--corpus {corpus} needs --output DIR: a collection is indexed into a named index "
                         "directory, not the cache")


def index_source(data_dir, dataset: str | None = None, corpus=None, output=None, backend_name: str = "faiss",
                 **fields):
    """What to index: BEIR dataset ``dataset`` under ``data_dir``, or the collection file ``corpus``
    (``retriever.index.collection.open_collection``; ``fields``: its ``id_field``, ``title_field``, ``text_field``,
    ``format``), which goes to a named index (``output``), never the cache."""
    check_source_options(dataset, corpus, output, backend_name)
    if corpus is None:
        return open_dataset(data_dir, dataset)
    return open_collection(corpus, **{k: v for k, v in fields.items() if v is not None})


def index_dataset(data_dir, dataset: str | None, model: str | None = None, index_type: str = "flat",
                  backend: IndexBackend | None = None, cache_dir=None, output=None, overwrite: bool = False,
                  lexical: bool = True, encoder_kind: str = "local", workers: int = 2, ray_address: str | None = None,
                  gpus_per_worker: float = 0, precision: str = "fp32", device: str | None = None,
                  batch_size: int | None = None, progress: bool = False, corpus=None, **fields) -> Indexed:
    """Index ``dataset`` (or the collection file ``corpus``, read with ``fields``: ``index_source``): into the
    backend's cache (``output`` None: reused when already built), or created exclusively at ``output`` (a FAISS
    directory or a Milvus collection; ``overwrite`` replaces one). A target that cannot be written fails before
    the model loads."""
    check_encoder_options(encoder_kind, ray_address, gpus_per_worker, device, batch_size)
    backend = backend or FaissBackend(cache_dir)
    ds = index_source(data_dir, dataset, corpus, output, backend.name, **fields)
    config = IndexConfig(index_type=index_type)
    if output is not None:  # fail before the model loads; the writes themselves are exclusive as well
        backend.check_target(output, overwrite, lexical=lexical)
    encoder = _open_encoder(model, encoder_kind, workers, ray_address, gpus_per_worker, precision, device,
                            batch_size)
    try:
        if output is None:
            built, bm25 = backend.ensure(ds, encoder, config, lexical=lexical, progress=progress)
        else:  # created exclusively: a second run on the same output fails instead of replacing the first's
            built, bm25 = backend.build(ds, encoder, output, config, lexical=lexical, overwrite=overwrite,
                                        progress=progress)
    finally:
        if encoder_kind == "ray":
            encoder.close()
    return Indexed(built, bm25, config, encoder.info.id)
