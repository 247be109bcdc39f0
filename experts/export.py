"""Export an expert as a plain sentence-transformers model directory (LoRA merged into the base weights)."""

from __future__ import annotations

from pathlib import Path

from retriever.encoding.encoder import Encoder
from retriever.routers.directory import RouterDirectory
from retriever.storage.artifacts import atomic_directory, check_target, directory_files
from retriever.storage.files import checksum_files, library_version, write_json

__all__ = ["export_expert"]

KIND = "routerretriever-expert-export"
METADATA = "routerretriever-export.json"  # beside the model's own files: says which expert it is, so --overwrite
                                          # replaces only an export


def export_expert(store: RouterDirectory, name: str, base: Encoder, output: str | Path,
                  overwrite: bool = False) -> Path:
    """Write ``SentenceTransformer``-loadable ``output`` whose vectors equal the expert's query vectors, with
    ``routerretriever-export.json`` naming the expert and base model. An existing ``output`` is an error unless
    ``overwrite`` is set and it is an earlier export (or empty)."""
    from peft import PeftModel
    from sentence_transformers import SentenceTransformer

    if store.base != base.info:
        raise ValueError(f"store {store.root} is for base model {store.base.id!r}, not {base.info.id!r}")
    check_target(output, (METADATA, KIND), overwrite)  # before any work, as atomic_directory would at the end
    store.load_factors(name)  # checks base model and checksums before any work
    model = SentenceTransformer(str(base.path), device="cpu", local_files_only=True)
    transformer = model[0]
    transformer.model = PeftModel.from_pretrained(transformer.model, str(store.expert_path(name))).merge_and_unload()
    with atomic_directory(output, (METADATA, KIND), overwrite=overwrite) as tmp:
        model.save(str(tmp))
        write_json(tmp / METADATA, {
            "kind": KIND, "format_version": 1, "library_version": library_version(), "expert": name,
            "base_model": base.info.record(),
            "adapter_sha256": store.expert_info(name)["files"]["adapter_model.safetensors"],
            "files": checksum_files(tmp, directory_files(tmp)),  # what --overwrite may replace
        })
    return Path(output)
