"""Exports as sentence-transformers model directories, each a query/document model (a sentence-transformers
``Router``: ``encode_query`` and ``encode_document``), because experts are query-side only: a document is always
encoded by the base model, as the shared corpus index holds it.

- ``export_expert`` — one expert: its LoRA merged into a copy of the base for queries, the base for documents.
  Plain sentence-transformers modules: loading needs no code of this package.
- ``export_routed`` — a router and the experts it routes to: ``retriever.adapters.st_model.RoutedEncoder`` on both
  routes (queries routed, documents through the base), every file's sha256 recorded and checked on load.

Both write to a temporary sibling and rename (``atomic_directory``), with ``routerretriever-export.json`` (kind,
versions, base model, every file's sha256) and a model card (``experts.model_card``) beside the model's files.
"""

from __future__ import annotations

import os
from pathlib import Path

from experts.model_card import expert_card, routed_card
from retriever.adapters.st_model import EXPORT_KIND, METADATA, RoutedEncoder
from retriever.encoding.encoder import Encoder
from retriever.routers.directory import RouterDirectory
from retriever.storage.artifacts import atomic_directory, check_target, directory_files
from retriever.storage.files import checksum_files, library_version, write_json

__all__ = ["EXPERT_KIND", "export_expert", "export_routed"]

EXPERT_KIND = "routerretriever-expert-export"
EXPERT_FORMAT = 2  # 2: a query/document model (1 ran the expert on documents too)
ROUTED_FORMAT = 1


def _query_document(query_modules: list, document_modules: list, after: tuple | list = ()):
    """A SentenceTransformer whose ``query`` route runs ``query_modules`` and ``document`` route
    ``document_modules``, then both ``after``; ``encode`` without a task is refused (no default route): a query
    encoded as a document, or the reverse, would be silently wrong."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Router

    router = Router.for_query_document(query_modules=query_modules, document_modules=document_modules,
                                       default_route=None, allow_empty_key=False)
    return SentenceTransformer(modules=[router, *after], device="cpu")


def _finish(tmp: Path, model, card: str, meta: dict) -> None:
    """Save ``model`` into ``tmp`` with ``card`` as its README and the export metadata listing every file."""
    model.save(str(tmp), create_model_card=False)
    (tmp / "README.md").write_text(card, encoding="utf-8")
    write_json(tmp / METADATA, {**meta, "library_version": library_version(),
                                "files": checksum_files(tmp, directory_files(tmp))})


def export_expert(store: RouterDirectory, name: str, base: Encoder, output: str | Path,
                  overwrite: bool = False) -> Path:
    """Write ``SentenceTransformer``-loadable ``output``: ``encode_query`` gives the expert's query vectors,
    ``encode_document`` the base model's (both as ``MultiExpertEncoder`` and the base ``Encoder`` give them). An
    existing ``output`` is an error unless ``overwrite`` is set and it is an earlier export (or empty)."""
    from peft import PeftModel
    from sentence_transformers import SentenceTransformer

    if store.base != base.info:
        raise ValueError(f"store {store.root} is for base model {store.base.id!r}, not {base.info.id!r}")
    check_target(output, (METADATA, EXPERT_KIND), overwrite)  # before any work, as atomic_directory would at the end
    store.load_factors(name)  # checks base model and checksums before any work
    query = SentenceTransformer(str(base.path), device="cpu", local_files_only=True)
    document = SentenceTransformer(str(base.path), device="cpu", local_files_only=True)
    query[0].model = PeftModel.from_pretrained(query[0].model, str(store.expert_path(name))).merge_and_unload()
    # the modules after the transformer (pooling, normalisation) are the same on both sides: shared after the Router
    model = _query_document([query[0]], [document[0]], list(document)[1:])
    with atomic_directory(output, (METADATA, EXPERT_KIND), overwrite=overwrite) as tmp:
        _finish(tmp, model, expert_card(store, name), {
            "kind": EXPERT_KIND, "format_version": EXPERT_FORMAT, "expert": name, "query": name, "document": "base",
            "base_model": base.info.record(),
            "adapter_sha256": store.expert_info(name)["files"]["adapter_model.safetensors"],
        })
    return Path(output)


def export_routed(router_dir: str | os.PathLike, output: str | os.PathLike, routing: str = "default",
                  model: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Write the router ``routing`` of ``router_dir`` (``default``: the one recorded there) and the experts it routes
    to as one sentence-transformers model at ``output`` (``RoutedEncoder``: ``encode_query`` gives
    ``RouterRetriever``'s routed vectors, ``encode_document`` the base model's). A damaged router directory or a
    missing expert is an error before anything is written; what is written is loaded back (checksums and all)
    before it is put in place."""
    check_target(output, (METADATA, EXPORT_KIND), overwrite)
    try:
        module = RoutedEncoder.from_router(router_dir, routing, model)
    except ValueError as err:  # ArtifactError too: a damaged file, a missing expert, another base model
        raise type(err)(f"cannot export router {routing!r} of {router_dir}: {err}") from None
    store = RouterDirectory(router_dir, module.retriever.encoder.info)
    st_model = _query_document([module], [module])  # one module, one copy of the base: it reads the task
    folder = f"query_0_{type(module).__name__}"  # where the Router saves it
    with atomic_directory(output, (METADATA, EXPORT_KIND), overwrite=overwrite) as tmp:
        _finish(tmp, st_model, routed_card(store, module.retriever.router, module.experts, folder), {
            "kind": EXPORT_KIND, "format_version": ROUTED_FORMAT, "router": module.router, "routing": routing,
            "experts": module.experts, "systems": list(module.retriever.router.systems),
            "base_model": store.base_model,
            "adapter_sha256": {name: store.expert_info(name)["files"]["adapter_model.safetensors"]
                               for name in module.experts},
        })
        if not (tmp / folder).is_dir():
            raise RuntimeError(f"sentence-transformers saved the routed module elsewhere than {folder}")
        RoutedEncoder.load(str(tmp), subfolder=folder)  # what is written loads: checksums, base model, experts
    return Path(output)
