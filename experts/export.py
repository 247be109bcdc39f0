"""Export an expert as a plain sentence-transformers model directory (LoRA merged into the base weights)."""

from __future__ import annotations

from pathlib import Path

from experts.store import ExpertStore
from retriever.artifacts import atomic_directory
from retriever.encoder import Encoder

__all__ = ["export_expert"]


def export_expert(store: ExpertStore, name: str, base: Encoder, output: str | Path, overwrite: bool = False) -> Path:
    """Write ``SentenceTransformer``-loadable ``output`` whose vectors equal the expert's query vectors."""
    from peft import PeftModel
    from sentence_transformers import SentenceTransformer

    if store.base != base.info:
        raise ValueError(f"store {store.root} is for base model {store.base.id!r}, not {base.info.id!r}")
    store.load_factors(name)  # checks base model and checksums before any work
    model = SentenceTransformer(str(base.path), device="cpu", local_files_only=True)
    transformer = model[0]
    transformer.model = PeftModel.from_pretrained(transformer.model, str(store.path(name))).merge_and_unload()
    with atomic_directory(output, overwrite=overwrite) as tmp:
        model.save(str(tmp))
    return Path(output)
