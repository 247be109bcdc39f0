"""``RouterRetriever``: the facade users import. Route each query to a system, encode, search one index.

    rr = RouterRetriever.load("my-router")                 # base model, the experts the router uses, its router
    hits = rr.search(["does vitamin D prevent fractures?"], k=10, index="path/to/index")
    hits[0].system, hits[0].confidence, hits[0].hits        # chosen system, router confidence, [(doc_id, score)]

Batched (``encode_routed``): the base pass routes, then one mixed pass takes every query routed to an expert
through the layers its expert adapts (a router on base embeddings), or the base's lower layers route and every
query then runs the upper layers once (a router on a prefix ``RoutingSpace``); queries routed to ``bm25`` or a
hybrid also search the lexical index, and every ranking is made by ``retriever.ranking.systems.run_system``, as in
evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from retriever.encoding.expert_encoder import BASE_EXPERT, MultiExpertEncoder
from retriever.index.backends import FaissBackend, IndexBackend, backend_for
from retriever.index.base import DenseIndex, LexicalSearch
from retriever.ranking.systems import (
    FUSION_DEPTH,
    FusionSettings,
    dense_part,
    group_rows,
    is_auto,
    is_lexical,
    resolve,
    run_system,
)
from retriever.ranking.third_opinion import third_opinion
from retriever.ranking.topk import search, search_lexical
from retriever.routers import Router
from retriever.storage.files import ArtifactError

__all__ = ["RoutedResult", "RouterRetriever"]


@dataclass(frozen=True)
class RoutedResult:
    query_id: str
    system: str  # what answered: "base", an expert's name, "bm25" or "hybrid:<expert>"
    confidence: float
    hits: list[tuple[str, float]]  # (doc id, score), best first
    unfamiliar: bool = False  # the router did not recognise the query: ``system`` is what its default decided
    documents: tuple[dict | None, ...] = ()  # per hit: {"id", "title", "text", "metadata"} from the index's store
    # (None for a hit it does not hold; empty with ``fields=False`` or an index built without its documents' text)

    def record(self, query: str) -> dict:
        """This answer as JSON data (``search --json`` prints it; the search service answers with it): the routing
        decision, and each hit's id and score with its document's title, text and metadata where the index stores
        them."""
        documents = self.documents or (None,) * len(self.hits)
        return {"query_id": self.query_id, "query": query, "system": self.system, "expert": self.expert,
                "mode": self.mode, "confidence": round(self.confidence, 4), "unfamiliar": self.unfamiliar,
                "hits": [{"doc_id": doc_id, "score": score,
                          **({} if doc is None else {k: doc[k] for k in ("title", "text", "metadata")})}
                         for (doc_id, score), doc in zip(self.hits, documents, strict=True)]}

    @property
    def expert(self) -> str | None:
        """The dense expert behind the answer (``base`` for the base model), None for ``bm25`` alone."""
        return dense_part(self.system)

    @property
    def mode(self) -> str:
        """``dense``, ``lexical`` or ``hybrid``."""
        return "lexical" if self.expert is None else "hybrid" if is_lexical(self.system) else "dense"


class RouterRetriever:
    ENCODE_CHUNK = 1024  # queries per base pass whose hidden states are kept for the routed pass

    def __init__(self, encoder: MultiExpertEncoder, router: Router, fusion: FusionSettings | None = None):
        missing = sorted({dense_part(s) for s in router.systems} - {None, *encoder.names})
        if missing:
            raise ValueError(f"router uses experts that are not loaded: {', '.join(missing)}")
        self.encoder = encoder
        self.router = router
        self.fusion = fusion or FusionSettings()
        self._beside: dict = {}  # (dense index path, version) -> its lexical index, found and checked once

    @property
    def lexical(self) -> bool:
        """Whether the router may choose a system that needs the lexical (BM25) index."""
        return any(is_lexical(s) for s in self.router.systems)

    @classmethod
    def load(cls, router_dir: str | os.PathLike, router: str = "default", model: str | None = None,
             device: str | None = None) -> RouterRetriever:
        """Load the base model, the experts the router uses, the router saved as ``routers/<router>``
        (``default``: the one the routing folds favoured) and the hybrids' calibrated fusion."""
        from retriever.encoding.encoder import load_encoder
        from retriever.routers.directory import RouterDirectory

        encoder = MultiExpertEncoder(load_encoder(model, device=device))
        store = RouterDirectory(router_dir, encoder.info)
        routing_model = store.load_router(store.default_router() if router == "default" else router)
        store.load_into(encoder, sorted({dense_part(e) for e in routing_model.systems} - {None, BASE_EXPERT}))
        return cls(encoder, routing_model, routing_model.fusion or store.load_fusion())

    @classmethod
    def base_only(cls, model: str | None = None, device: str | None = None) -> RouterRetriever:
        """The base model alone (every query routed to ``base``): plain dense search through the same facade."""
        from retriever.encoding.encoder import load_encoder
        from retriever.routers import FixedRouter

        encoder = MultiExpertEncoder(load_encoder(model, device=device))
        return cls(encoder, FixedRouter(encoder.names, {"expert": BASE_EXPERT}))

    @classmethod
    def open(cls, router_dir: str | os.PathLike | None, routing: str = "default", model: str | None = None,
             device: str | None = None) -> RouterRetriever:
        """``load`` of router directory ``router_dir``'s ``routing`` router, or with no directory the base model
        alone (``base_only``); a ``routing`` other than ``default`` needs a directory (checked before any load)."""
        if router_dir is None:
            if routing != "default":
                raise ValueError(f"routing {routing!r} chooses a router of a router directory; give the directory")
            return cls.base_only(model, device=device)
        return cls.load(router_dir, routing, model=model, device=device)

    def encode_routed(self, texts: Sequence[str]) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
        """Each query's vector under the dense expert of the system it is routed to (for ``bm25``, which needs none:
        the base vector on embeddings, zeros on a prefix space), the chosen systems, the router's confidence and
        whether each query was unfamiliar to it (``Routing.unfamiliar``: sent to its default system), in
        chunks of ``ENCODE_CHUNK`` queries so the kept hidden states stay small. A router on base embeddings: one
        base pass, then one mixed pass of the routed queries through the layers their experts change
        (``MultiExpertEncoder.encode_keeping`` / ``resume``). A router on a prefix ``RoutingSpace`` (layer L): the
        base's layers below L, route, then one mixed pass of every query but ``bm25``'s through the layers from L,
        each with its expert or the base's: one encoder pass in all."""
        experts = {dense_part(s) for s in self.router.systems} - {None, BASE_EXPERT}
        layers = {self.encoder.start_layer(e) for e in experts}
        space = self.router.space
        vectors = np.zeros((len(texts), self.encoder.dim), dtype=np.float32)
        choices, confidence, unfamiliar = [], [], []
        for start in range(0, len(texts), self.ENCODE_CHUNK):
            chunk = texts[start : start + self.ENCODE_CHUNK]
            if space.layer is None:  # route on the base vectors: the base pass runs whole
                base, kept = self.encoder.encode_keeping(chunk, layers)
                routing = self.router.route(base)
                names = [dense_part(s) for s in routing.choice]
                routed = self.encoder.resume(kept, names)
                on_base = np.array([n in (None, BASE_EXPERT) for n in names])
                routed[on_base] = base[on_base]
            else:  # route on the shared prefix: every query then runs the layers above it once, base or expert
                _, kept = self.encoder.encode_keeping(chunk, {s for s in layers if s < space.layer}, stop=space.layer)
                routing = self.router.route(space.vectors(self.encoder.mean_states(kept, space.layer)))
                routed = self.encoder.resume(kept, [dense_part(s) for s in routing.choice], base_from=space.layer)
            vectors[start : start + len(chunk)] = routed
            choices += list(routing.choice)
            confidence += list(routing.confidence)
            unfamiliar += list(routing.unfamiliar)
        return vectors, choices, np.asarray(confidence, dtype=np.float32), np.asarray(unfamiliar, dtype=bool)

    def search(self, queries: Sequence[str] | Mapping[str, str], k: int = 10,
               index: DenseIndex | str | os.PathLike | None = None,
               lexical: LexicalSearch | str | os.PathLike | None = None, fields: bool = True,
               groups: Sequence[Hashable] | None = None) -> list[RoutedResult]:
        """Route and search ``index`` (a ``CorpusIndex``, its directory, or a ``retriever.index.milvus.MilvusIndex``),
        opened through its ``IndexBackend`` (``backend_for``). ``lexical`` (a ``LexicalIndex`` or its directory) is
        needed when the router may choose BM25 or a hybrid; by default the backend's ``lexical_of(index)`` is used:
        the one ``routerretriever index`` wrote beside a FAISS index, a Milvus collection's own. Every argument is
        checked before anything loads: one query is a list of one text, never a bare string. ``fields``: each hit's
        title, text and metadata from the index's document store (``RoutedResult.documents``); False skips the
        lookup. ``groups``: one label per query, for calls merged from several callers (the search service's
        batches): ``auto:base`` decides for each group's unfamiliar queries together, so every caller gets the answers
        its own call would (default: the whole call is one group)."""
        if isinstance(queries, str | bytes):  # else each character would be searched as a query
            raise TypeError(f"queries must be a list of query texts or a {{id: text}} mapping, got the string "
                            f"{queries[:80]!r}; for one query pass [{queries[:80]!r}]")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if index is None:
            raise ValueError("search needs an index: a CorpusIndex, the path of an index directory or a MilvusIndex")
        if isinstance(queries, Mapping):
            ids, texts = list(queries), list(queries.values())
        else:
            ids, texts = [f"q{i}" for i in range(1, len(queries) + 1)], list(queries)
        if groups is not None and len(groups) != len(ids):
            raise ValueError(f"groups must give one label per query: {len(groups)} labels for {len(ids)} queries")
        empty = [qid for qid, text in zip(ids, texts, strict=True) if not isinstance(text, str) or not text.strip()]
        if empty:
            raise ValueError(f"empty query {empty[0]!r}" + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else "")
                             + ": every query needs text to search for")
        backend = backend_for(index)
        if isinstance(index, str | os.PathLike):
            index = backend.open(index, self.encoder.info)
        else:
            index.check_model(self.encoder.info)
        if self.lexical:
            lexical = self._lexical_index(backend, index, lexical)
        vectors, choice, confidence, unfamiliar = self.encode_routed(texts)
        depth = max(k, FUSION_DEPTH) if any(is_lexical(s) for s in choice) else k
        dense = {}
        for expert, rows in group_rows([dense_part(s) for s in choice]).items():
            if expert is not None:  # bm25 alone needs no dense ranking
                dense.update(search(index, vectors[rows], [ids[i] for i in rows], k=depth))
        rows = [i for i, s in enumerate(choice) if is_lexical(s)]
        lexical_hits = search_lexical(lexical, [texts[i] for i in rows], [ids[i] for i in rows], depth) if rows else {}
        members: dict = {}
        for row, group in enumerate(groups if groups is not None else [None] * len(ids)):
            members.setdefault(group, []).append(row)
        chosen = {}
        third = (third_opinion(self.encoder.base.model, index, dict(zip(ids, texts, strict=True)))
                 if any(is_auto(s) for s in choice) else None)  # only auto systems consult it
        for rows in members.values():  # auto:base decided here, for each group's queries together
            chosen.update(resolve({ids[i]: choice[i] for i in rows}, dense, lexical_hits, third))
        results = {}
        for system, rows in group_rows([chosen[q] for q in ids]).items():
            results.update(run_system(system, [ids[i] for i in rows], dense, lexical_hits, self.fusion, k))
        docs = index.documents([doc_id for hits in results.values() for doc_id in hits]) if fields else {}
        return [RoutedResult(qid, chosen[qid], float(conf), list(results[qid].items()), bool(new),
                             tuple(docs.get(doc_id) for doc_id in results[qid]) if docs else ())
                for qid, conf, new in zip(ids, confidence, unfamiliar, strict=True)]

    def _lexical_index(self, backend: IndexBackend, index: DenseIndex, lexical) -> LexicalSearch:
        """The lexical index to search with ``index``: the one given (a path: a bm25s index directory), or the one
        ``backend`` says belongs to it (found and checked once per index path, not on every search)."""
        if lexical is not None:
            if isinstance(lexical, str | os.PathLike):
                return FaissBackend().open_lexical(lexical, index)
            lexical.check_corpus(index)
            return lexical
        key = (index.path, index.meta.get("version"))  # a changed index (add/delete) has its own lexical index
        if key not in self._beside:
            try:
                self._beside[key] = backend.lexical_of(index)
            except ArtifactError:
                raise
            except ValueError as err:  # it has none
                raise ValueError(f"this router may choose BM25 or hybrid systems, and {err}") from None
        return self._beside[key]
