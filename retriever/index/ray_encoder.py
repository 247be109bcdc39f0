"""Corpus encoding on Ray: one copy of the base model per actor, on a local Ray cluster (``ray.init()``) or a
real one (``address="ray://head:10001"`` or ``"auto"``).

``RayEncoder`` has the ``Encoder`` interface that ``build_index`` and ``build_milvus_index`` use (``info``,
``dim``, ``encode(texts, progress=...)``): each chunk of the corpus is cut into blocks, the blocks go to the
actors (``ray.util.ActorPool``, results in corpus order); for FAISS the driver writes the vectors into the
memory-mapped matrix in corpus order, for Milvus the workers insert their blocks themselves (``encode_into``:
a server URI as given; a Milvus Lite file through the port its in-process server listens on, so only workers on
this machine reach it). Every actor loads the model the
same way the local path does (the packaged base model, or a directory every worker can read), so the vectors
equal the local encoder's up to float rounding (tests/test_ray.py checks 1e-5).
"""

from __future__ import annotations

import logging
import math
import re
import socket
from collections.abc import Callable, Sequence

import numpy as np

from retriever.encoding.encoder import ModelInfo, check_precision, resolve_model

__all__ = ["RayEncoder", "check_address"]

logger = logging.getLogger(__name__)

BLOCK_SIZE = 256  # texts per task: small enough to keep every actor busy, large enough to batch well


class _Worker:
    """One actor: a base encoder on the worker's CPUs (or its GPU)."""

    def __init__(self, model: str | None, threads: int, device: str | None, precision: str):
        import torch

        from retriever.encoding.encoder import load_encoder

        torch.set_num_threads(threads)
        self.encoder = load_encoder(model, device=device, precision=precision)
        self._client, self._uri = None, None

    def info(self) -> ModelInfo:
        return self.encoder.info

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts)

    def encode_into(self, uri: str, collection: str, first: int, doc_ids: list[str], texts: list[str],
                    weights: list[dict] | None, fields: list[dict] | None = None) -> tuple[int, str]:
        """Encode a block and insert it into the Milvus collection itself; ``(rows, sha256 of its vectors)``."""
        from pymilvus import MilvusClient

        from retriever.index.milvus import insert_block

        if self._client is None or self._uri != uri:
            self._client, self._uri = MilvusClient(uri), uri
        return len(texts), insert_block(self._client, collection, first, doc_ids, self.encoder.encode(texts), weights,
                                        fields)


def check_address(address: str, timeout: float = 10.0) -> None:
    """Refuse a Ray address that is not ``auto``, ``local`` or ``[ray://]host:port``, or where nothing listens
    (``ray.init`` would retry for many minutes), with one line."""
    if address in ("auto", "local"):
        return
    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]/]+?)\]?:(\d{1,5})", str(address))
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise ValueError(f"invalid Ray address {address!r}: use auto, local, host:port or ray://host:port")
    try:
        socket.create_connection((match.group(1), int(match.group(2))), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}") from None


class RayEncoder:
    """Encodes texts with ``workers`` Ray actors, each holding the base model (``cpus`` threads, ``gpus`` GPUs each).

    Starts a local Ray cluster when ``address`` is None and none is running (stopped by ``close``); joins the
    cluster at ``address`` otherwise. Use as a context manager, or call ``close``.
    """

    def __init__(self, model: str | None = None, workers: int = 2, address: str | None = None, cpus: int = 1,
                 gpus: float = 0, block_size: int = BLOCK_SIZE, precision: str = "fp32"):
        import ray
        from ray.util import ActorPool

        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        if not isinstance(gpus, int | float) or isinstance(gpus, bool) or not 0 <= gpus < math.inf:
            raise ValueError(f"gpus must be a finite number >= 0, got {gpus!r}")
        check_precision(precision)
        if block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        if address is None:  # a local cluster's workers read this machine's files: the model must be here
            resolve_model(model)
        else:
            check_address(address)
        self._started = not ray.is_initialized()
        if self._started:
            try:
                if address is None:  # a local cluster with exactly the CPUs the workers ask for
                    ray.init(num_cpus=workers * cpus, num_gpus=int(np.ceil(workers * gpus)) or None,
                             include_dashboard=False, log_to_driver=False, configure_logging=False)
                else:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError) as err:  # RuntimeError: no GCS answered in Ray's retries
                raise ConnectionError(f"cannot join the Ray cluster at {address or 'a new local cluster'}: "
                                      f"{str(err).strip().splitlines()[0]}") from None
        device = "cuda" if gpus > 0 else "cpu"
        actor = ray.remote(num_cpus=cpus, num_gpus=gpus)(_Worker)
        self._actors = [actor.remote(model, cpus, device, precision) for _ in range(workers)]
        try:
            infos = ray.get([a.info.remote() for a in self._actors])  # fails if a worker cannot load the model
        except ray.exceptions.RayError as err:
            self.close()
            raise ValueError(f"Ray workers could not load model {model or 'all-MiniLM-L6-v2'!r}: "
                               f"{str(err).strip().splitlines()[-1]}") from None
        if len(set(infos)) != 1:
            self.close()
            raise RuntimeError(f"Ray workers loaded different models: {sorted({i.fingerprint for i in infos})}")
        self.info: ModelInfo = infos[0]
        self.workers, self.block_size, self.precision = workers, block_size, precision
        self._pool = ActorPool(self._actors)
        logger.info("encoding on Ray with %d workers (%s)", workers, address or "local cluster")

    @property
    def dim(self) -> int:
        return self.info.dim

    def encode(self, texts: Sequence[str], batch_size: int | None = None,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Vectors of ``texts`` in their order; ``progress`` is called with each finished block's size."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        size = min(self.block_size, -(-len(texts) // self.workers))  # every worker gets a block of a short chunk
        blocks = [list(texts[start : start + size]) for start in range(0, len(texts), size)]
        out = []
        for vectors in self._pool.map(lambda actor, block: actor.encode.remote(block), blocks):
            out.append(vectors)
            if progress is not None:
                progress(len(vectors))
        return np.concatenate(out).astype(np.float32, copy=False)

    def encode_into(self, uri: str, collection: str, blocks: list[tuple], progress=None) -> list[str]:
        """Have the workers encode ``blocks`` (``(first row, doc ids, texts, BM25 weights or None, stored fields)``)
        and insert them into ``collection`` at ``uri`` themselves, so vectors never pass through this process; the
        blocks' vector checksums in order."""
        digests = []
        for count, digest in self._pool.map(lambda actor, block: actor.encode_into.remote(uri, collection, *block),
                                            blocks):
            digests.append(digest)
            if progress is not None:
                progress(count)
        return digests

    def close(self) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._started:
            ray.shutdown()

    def __enter__(self) -> RayEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
