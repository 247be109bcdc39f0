"""``RouterRetriever``: the facade users import. Route each query to an expert, encode, search one index.

    rr = RouterRetriever.load("my-router")                 # base model + every expert + the pilot router
    hits = rr.search(["does vitamin D prevent fractures?"], k=10, index="path/to/index")
    hits[0].expert, hits[0].confidence, hits[0].hits        # chosen expert, router confidence, [(doc_id, score)]

Batched: one base pass for all queries (its vectors route, and serve the queries routed to ``base``), then
one pass per chosen expert over its group.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from retriever.expert_encoder import BASE_EXPERT, MultiExpertEncoder
from retriever.index import CorpusIndex
from retriever.ranking import search
from retriever.routers import Router, Routing, load_router

__all__ = ["RoutedResult", "RouterRetriever"]


@dataclass(frozen=True)
class RoutedResult:
    query_id: str
    expert: str
    confidence: float
    hits: list[tuple[str, float]]  # (doc id, score), best first


class RouterRetriever:
    def __init__(self, encoder: MultiExpertEncoder, router: Router):
        missing = [e for e in router.experts if e not in encoder.names]
        if missing:
            raise ValueError(f"router uses experts that are not loaded: {', '.join(missing)}")
        self.encoder = encoder
        self.router = router

    @classmethod
    def load(cls, router_dir: str | os.PathLike, router: str = "pilot", model: str | None = None,
             device: str | None = None) -> RouterRetriever:
        """Load the base model, the experts the router uses, and the router saved as ``routers/<router>``."""
        from retriever.encoder import load_encoder
        from retriever.router_dir import RouterDirectory

        encoder = MultiExpertEncoder(load_encoder(model, device=device))
        store = RouterDirectory(router_dir, encoder.info)
        path = store.router_path(router)
        if not (path / "routing.json").is_file():
            built = ", ".join(store.built_routers()) or "none"
            raise ValueError(f"no router {router!r} in {router_dir}; built: {built}")
        routing_model = load_router(path)
        store.load_into(encoder, [e for e in routing_model.experts if e != BASE_EXPERT])
        return cls(encoder, routing_model)

    @classmethod
    def base_only(cls, model: str | None = None, device: str | None = None) -> RouterRetriever:
        """The base model alone (every query routed to ``base``): plain dense search through the same facade."""
        from retriever.encoder import load_encoder
        from retriever.routers import FixedRouter

        encoder = MultiExpertEncoder(load_encoder(model, device=device))
        return cls(encoder, FixedRouter(encoder.names, {"expert": BASE_EXPERT}))

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, Routing]:
        """Routed query vectors and the routing decisions behind them."""
        base = self.encoder.encode(texts, BASE_EXPERT)
        routing = self.router.route(base)
        vectors = base.copy()
        choice = routing.choice
        for expert in sorted(set(choice) - {BASE_EXPERT}):
            rows = [i for i, e in enumerate(choice) if e == expert]
            vectors[rows] = self.encoder.encode([texts[i] for i in rows], expert)
        return vectors, routing

    def search(self, queries: Sequence[str] | Mapping[str, str], k: int = 10,
               index: CorpusIndex | str | os.PathLike | None = None) -> list[RoutedResult]:
        if index is None:
            raise ValueError("search needs an index: a CorpusIndex or the path of an index directory")
        if not isinstance(index, CorpusIndex):
            index = CorpusIndex.load(index, self.encoder.info)
        else:
            index.check_model(self.encoder.info)
        if isinstance(queries, Mapping):
            ids, texts = list(queries), list(queries.values())
        else:
            ids, texts = [f"q{i}" for i in range(1, len(queries) + 1)], list(queries)
        empty = [qid for qid, text in zip(ids, texts, strict=True) if not isinstance(text, str) or not text.strip()]
        if empty:
            raise ValueError(f"empty query {empty[0]!r}" + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else "")
                             + ": every query needs text to search for")
        vectors, routing = self.encode(texts)
        results = search(index, vectors, ids, k=k)
        return [
            RoutedResult(qid, expert, float(conf), list(results[qid].items()))
            for qid, expert, conf in zip(ids, routing.choice, routing.confidence, strict=True)
        ]
