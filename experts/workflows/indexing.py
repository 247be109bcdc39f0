"""``routerretriever index``: encode a dataset's corpus (in this process or on Ray actors) into a dense index and a
BM25 index, in the cache or at a named target, closing the encoder whatever happens."""

from __future__ import annotations

from typing import NamedTuple

from eval.data import open_dataset
from retriever.encoding.encoder import load_encoder
from retriever.index.backends import FaissBackend, IndexBackend
from retriever.index.base import IndexConfig

__all__ = ["Indexed", "check_encoder_options", "index_dataset"]


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


def index_dataset(data_dir, dataset: str, model: str | None = None, index_type: str = "flat",
                  backend: IndexBackend | None = None, cache_dir=None, output=None, overwrite: bool = False,
                  lexical: bool = True, encoder_kind: str = "local", workers: int = 2, ray_address: str | None = None,
                  gpus_per_worker: float = 0, precision: str = "fp32", device: str | None = None,
                  batch_size: int | None = None, progress: bool = False) -> Indexed:
    """Index ``dataset``: into the backend's cache (``output`` None: reused when already built), or created
    exclusively at ``output`` (a FAISS directory or a Milvus collection; ``overwrite`` replaces one). A target
    that cannot be written fails before the model loads."""
    check_encoder_options(encoder_kind, ray_address, gpus_per_worker, device, batch_size)
    ds = open_dataset(data_dir, dataset)
    config = IndexConfig(index_type=index_type)
    backend = backend or FaissBackend(cache_dir)
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
