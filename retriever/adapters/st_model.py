"""The routed retriever as one sentence-transformers model: ``RoutedEncoder``, the module that
``routerretriever export`` puts behind a sentence-transformers ``Router`` (``query`` and ``document`` routes).

::

    model = SentenceTransformer("my-routed-model", trust_remote_code=True)   # or load_routed_model(...)
    queries = model.encode_query(["does vitamin D prevent fractures?"])    # each query through its routed expert
    documents = model.encode_document(["Vitamin D ..."])                   # the base model, as every index holds

``encode_query`` routes every query as ``RouterRetriever.encode_routed`` does (the base pass, the router on its
vectors or on the shared prefix, each query through its expert's layers in one mixed pass) and returns the vector of
the routed system's dense part: the expert's for an expert or ``hybrid:<expert>``, the base's for ``base``,
``hybrid:base``, ``auto:base`` and ``bm25`` (a lexical system has no dense vector of its own; the base's is what the
shared index is searched with). ``encode_document`` is the base model's vector. ``encode`` without a task is
refused by the ``Router``: a query or a document, never a guess.

The export directory::

    modules.json, router_config.json, config_sentence_transformers.json   sentence-transformers' own files
    README.md                               the model card (what is routed among, how it was measured)
    routerretriever-export.json             kind, format and library version, router kind, experts, base model,
                                            and the sha256 of every other file
    query_0_RoutedEncoder/routed.json       this module's settings: router kind, experts, systems, base model
    query_0_RoutedEncoder/base/             the base model's directory, copied file for file (same fingerprint)
    query_0_RoutedEncoder/router/           a router directory holding only what the routing needs: router.json,
                                            systems.json, routers/<kind>/, experts/<each expert it routes to>/

(The ``Router`` names the folder after the module's first route; the ``document`` route is the same module.)

``RoutedEncoder.load`` checks every file against ``routerretriever-export.json`` before anything is loaded: a file
changed, missing or added after export is an ``ArtifactError`` naming it (never a model routed without an expert).
Loading needs this package installed; sentence-transformers 6 asks ``trust_remote_code=True`` before it imports
any module class outside its own package, even an installed one (nothing in the directory is code, and
``load_routed_model`` checks that ``modules.json`` names no other class before it passes the flag).

Tested in ``tests/test_export.py``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from sentence_transformers.sentence_transformer.modules import InputModule

from retriever.encoding.expert_encoder import BASE
from retriever.ranking.systems import dense_part
from retriever.router_retriever import RouterRetriever
from retriever.storage.artifacts import directory_files
from retriever.storage.files import (
    MODEL_SCHEMA,
    ArtifactError,
    check_fields,
    library_version,
    read_json,
    read_metadata,
    sha256_file,
    write_json,
)

__all__ = ["EXPORT_KIND", "METADATA", "RoutedEncoder", "load_routed_model", "verify_export"]

logger = logging.getLogger(__name__)

METADATA = "routerretriever-export.json"  # the export's metadata, at the top of the model directory
EXPORT_KIND = "routerretriever-routed-export"
MODULE_KIND = "routerretriever-routed-encoder"
MODULE_META = "routed.json"
FORMAT_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CLASS = f"{__name__}.RoutedEncoder"


def _checked_paths(files: Any, where: Path) -> dict[str, str]:
    """``files`` of export metadata: relative '/'-separated paths inside the directory, each with a sha256."""
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{where}: 'files' must map every exported file to its sha256")
    for name, digest in files.items():
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not name or name != path.as_posix():
            raise ArtifactError(f"{where}: bad file entry {name!r} (expected a path inside the export)")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ArtifactError(f"{where}: bad checksum for {name!r}: {digest!r} (expected a sha256)")
    return files


def verify_export(root: str | os.PathLike, kind: str = EXPORT_KIND) -> dict:
    """The export metadata of model directory ``root``, once every file it lists is there with its recorded
    sha256 and no other file is (names starting with '.' aside: a hub checkout's ``.gitattributes``). Anything
    else is an ArtifactError naming the file."""
    root = Path(root)
    meta_path = root / METADATA
    if not meta_path.is_file():
        raise ArtifactError(f"{root} has no {METADATA}: not a model `routerretriever export` wrote, or one changed "
                            "since (export it again)")
    meta = read_json(meta_path)
    check_fields(meta, {"kind": str, "format_version": int, "files": dict, "base_model": MODEL_SCHEMA}, meta_path)
    if meta["kind"] != kind:
        raise ArtifactError(f"{meta_path} describes a {meta['kind']!r}, not a {kind!r}")
    files = _checked_paths(meta["files"], meta_path)
    for name, expected in sorted(files.items()):
        path = root / name
        if not path.is_file():
            raise ArtifactError(f"{path} is missing: the exported model in {root} is incomplete (export it again)")
        if sha256_file(path) != expected:
            raise ArtifactError(f"{path} was changed after export (sha256 differs from {METADATA}); refusing to "
                                "load the exported model (export it again)")
    extra = [name for name in directory_files(root) if name != METADATA and name not in files
             and not any(part.startswith(".") for part in PurePosixPath(name).parts)]
    if extra:
        raise ArtifactError(f"{root / extra[0]} was added after export (not in {METADATA}); refusing to load the "
                            "exported model")
    return meta


def _copy_visible(source: Path, target: Path) -> None:
    """``source``'s files (hidden ones and caches aside) copied byte for byte to ``target``."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".*", "__pycache__"))


class RoutedEncoder(InputModule):
    """Queries routed to their expert, documents through the base model: one sentence-transformers module over a
    ``RouterRetriever`` (``retriever.router_retriever``), whose routing and vectors it uses unchanged."""

    forward_kwargs = {"task"}
    save_in_root = False

    def __init__(self, retriever: RouterRetriever, router_dir: Path, base_dir: Path, router: str):
        super().__init__()
        self.retriever = retriever
        self.model = retriever.encoder.base.model  # a submodule: moved and set to eval() with the outer model
        self.router_dir, self.base_dir, self.router = Path(router_dir), Path(base_dir), router

    @classmethod
    def from_router(cls, router_dir: str | os.PathLike, routing: str = "default",
                    model: str | os.PathLike | None = None) -> RoutedEncoder:
        """The module over router directory ``router_dir``'s router ``routing`` (``default``: the one recorded
        there) and the experts it routes to, on base model ``model`` (what ``RouterRetriever.load`` checks:
        base model, built router, each expert's checksums)."""
        from retriever.encoding.encoder import resolve_model
        from retriever.routers.directory import RouterDirectory

        retriever = RouterRetriever.load(router_dir, routing, model=model, device="cpu")
        kind = RouterDirectory(router_dir, retriever.encoder.info).default_router() if routing == "default" else routing
        return cls(retriever, Path(router_dir), resolve_model(model)[1], kind)

    @property
    def experts(self) -> list[str]:
        """The experts this module routes to (``base`` aside)."""
        return sorted({dense_part(s) for s in self.retriever.router.systems} - {None, BASE})

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def get_embedding_dimension(self) -> int:
        return self.retriever.encoder.dim

    def preprocess(self, inputs: Sequence[str], prompt: str | None = None, task: str | None = None,
                   **kwargs) -> dict[str, Any]:
        """The texts themselves (the routed pass tokenises them per expert), with the prompt in front if any."""
        other = next((text for text in inputs if not isinstance(text, str)), None)
        if other is not None:
            raise TypeError(f"{type(self).__name__} encodes texts only, got a {type(other).__name__}")
        return {"texts": [prompt + text for text in inputs] if prompt else list(inputs)}

    def forward(self, features: dict[str, Any], task: str | None = None, **kwargs) -> dict[str, Any]:
        texts = features["texts"]
        if task == "query":
            vectors = self.encode_queries(texts)[0]
        elif task == "document":
            vectors = self.retriever.encoder.encode(texts, BASE)
        else:
            raise ValueError(f"task must be 'query' or 'document' (encode_query / encode_document), got {task!r}")
        device = next(self.model.parameters()).device
        return {**features, "sentence_embedding": torch.from_numpy(np.ascontiguousarray(vectors)).to(device)}

    def encode_queries(self, texts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """The routed vectors of ``texts`` and the system each was routed to. A query routed to ``bm25`` gets the
        base vector (``encode_routed`` gives it on base embeddings; on a prefix space it leaves zeros)."""
        vectors, choice, _, _ = self.retriever.encode_routed(list(texts))
        lexical = [i for i, system in enumerate(choice) if dense_part(system) is None]
        if lexical and self.retriever.router.space.layer is not None:
            vectors[lexical] = self.retriever.encoder.encode([texts[i] for i in lexical], BASE)
        return vectors, choice

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """Write the module's folder: ``base/`` (the base model's files), ``router/`` (the router and the experts
        it routes to, copied as they are) and ``routed.json``. The export's checksums are written by
        ``experts.export.export_routed`` around the whole model: a model saved by sentence-transformers alone does
        not load (``verify_export``)."""
        out = Path(output_path)
        out.mkdir(parents=True, exist_ok=True)
        _copy_visible(self.base_dir, out / "base")
        router = out / "router"
        (router / "routers").mkdir(parents=True)
        meta = read_json(self.router_dir / "router.json")
        write_json(router / "router.json", {**meta, "default_router": self.router})
        if (self.router_dir / "systems.json").is_file():
            shutil.copy2(self.router_dir / "systems.json", router / "systems.json")
        _copy_visible(self.router_dir / "routers" / self.router, router / "routers" / self.router)
        for name in self.experts:
            _copy_visible(self.router_dir / "experts" / name, router / "experts" / name)
        write_json(out / MODULE_META, {
            "kind": MODULE_KIND, "format_version": FORMAT_VERSION, "library_version": library_version(),
            "router": self.router, "experts": self.experts, "systems": list(self.retriever.router.systems),
            "base_model": self.retriever.encoder.info.record(),
        })

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
             **kwargs) -> RoutedEncoder:
        """Verify the whole export (``verify_export``), then load the router, its experts and the base model from
        the module's folder."""
        hub = {"token": token, "cache_folder": cache_folder, "revision": revision,
               "local_files_only": local_files_only}
        root = Path(cls.load_dir_path(model_name_or_path, subfolder="", **hub))
        folder = Path(cls.load_dir_path(model_name_or_path, subfolder=subfolder, **hub))
        verify_export(root)
        meta = read_metadata(folder / MODULE_META, MODULE_KIND, FORMAT_VERSION,
                             {"router": str, "experts": list, "base_model": MODEL_SCHEMA})
        retriever = RouterRetriever.load(folder / "router", meta["router"], model=folder / "base", device="cpu")
        module = cls(retriever, folder / "router", folder / "base", meta["router"])
        if module.experts != sorted(meta["experts"]):
            raise ArtifactError(f"{folder / MODULE_META} lists experts {sorted(meta['experts'])}, but router "
                                f"{meta['router']!r} routes to {module.experts}")
        return module


def load_routed_model(path: str | os.PathLike, device: str | None = None):
    """``SentenceTransformer(path, trust_remote_code=True)`` once ``path``'s ``modules.json`` and Router config are
    checked to name no module class but sentence-transformers' own and ``RoutedEncoder``: the flag then imports
    only this installed package (sentence-transformers 6 asks for it before importing any class outside its own
    package)."""
    from sentence_transformers import SentenceTransformer

    path = Path(path)
    verify_export(path)
    classes = [entry.get("type") for entry in read_json(path / "modules.json") if isinstance(entry, dict)]
    if (path / "router_config.json").is_file():
        classes += list(read_json(path / "router_config.json").get("types", {}).values())
    foreign = [c for c in classes if not (isinstance(c, str) and (c.startswith("sentence_transformers.")
                                                                  or c == _CLASS))]
    if foreign:
        raise ArtifactError(f"{path} names module class {foreign[0]!r}, which is neither sentence-transformers' nor "
                            f"{_CLASS}; refusing to load it with trust_remote_code")
    return SentenceTransformer(str(path), device=device, trust_remote_code=True, local_files_only=True)
