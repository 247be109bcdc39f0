"""``SearchService``: what the HTTP layer calls, free of it: open the router and the index a ``ServiceConfig`` names,
and answer a merged batch of requests with one ``RouterRetriever.search`` per system asked for.

A batch of requests is searched as one call (``groups``: each request's queries are its own group, so ``auto:base``
decides per request and a request's answer is the one its own call would give); each request then gets its own
queries' results, cut to its ``k``. If that call fails, each request of it is searched alone, so only a request
that fails on its own gets an error. Every request of a batch reads one ``IndexSnapshot`` (one version).
"""

from __future__ import annotations

import logging
import os
import platform
import socket
from dataclasses import dataclass
from importlib import metadata

from retriever.encoding.expert_encoder import BASE_EXPERT
from retriever.index.backends import make_backend
from retriever.ranking.systems import AUTO, BM25, FUSION_DEPTH, HYBRID
from retriever.router_retriever import RoutedResult, RouterRetriever
from retriever.routers import FixedRouter
from retriever.service.config import ServiceConfig
from retriever.service.live_index import IndexSnapshot, LiveIndex

__all__ = ["Answer", "SearchRequest", "SearchService", "versions"]

logger = logging.getLogger(__name__)

PACKAGES = ("routerretriever", "torch", "transformers", "sentence-transformers", "faiss-cpu", "faiss-gpu-cu12",
            "bm25s", "pymilvus", "fastapi", "uvicorn", "pydantic", "ray")


@dataclass(frozen=True)
class SearchRequest:
    """One request's part of a batch (already validated)."""

    queries: tuple[str, ...]
    k: int = 10
    system: str | None = None  # None: routed
    fields: bool = True


@dataclass(frozen=True)
class Answer:
    """One request's answer: a record per query (``RoutedResult.record``), in order, from one index version."""

    records: list[dict]
    index_version: int


def versions() -> dict[str, str]:
    """The installed versions of the packages the service runs on (those installed)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


class SearchService:
    """A loaded router (``retriever``) and the index it searches (``live``), answering batches of requests."""

    def __init__(self, config: ServiceConfig, retriever: RouterRetriever, live: LiveIndex):
        self.config, self.retriever, self.live = config, retriever, live
        systems = list(dict.fromkeys(retriever.router.systems))
        if BM25 in systems and f"{HYBRID}{BASE_EXPERT}" in systems and AUTO not in systems:
            systems.append(AUTO)
        self.systems = systems  # what a request may name instead of routing
        self._fixed = {system: RouterRetriever(retriever.encoder, FixedRouter([*systems], {"expert": system}),
                                               retriever.fusion) for system in systems}

    @classmethod
    def open(cls, config: ServiceConfig) -> SearchService:
        """Load the base model, the router's experts and router (``RouterRetriever.load``; the base model alone
        without a router directory) and open the index, as ``config`` says."""
        backend = make_backend(config.backend, config.uri)
        backend.version(config.index)  # a missing or damaged index fails here, before any model loads
        retriever = RouterRetriever.open(config.router, config.routing, model=config.model, device=config.device)
        device = config.device if backend.name == "faiss" else None  # a Milvus collection searches on its server
        live = LiveIndex(backend, config.index, retriever.encoder.info, retriever.lexical, device=device)
        return cls(config, retriever, live)

    def run(self, requests: list[SearchRequest]) -> list[Answer | Exception]:
        """Answer ``requests`` (one batch) from the current index snapshot: one search per system asked for (routed
        requests together; a ``k`` beyond ``FUSION_DEPTH`` searches apart, as fusion then looks deeper), each
        request's error its own."""
        snapshot = self.live.current
        answers: list[Answer | Exception | None] = [None] * len(requests)
        together: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):  # searched at the largest k of its group, then cut: the same hits
            deep = request.k if request.k > FUSION_DEPTH else 0  # while k stays within the hybrids' fusion depth
            together.setdefault((request.system, deep), []).append(i)
        for (system, _), members in together.items():
            try:
                found = self._search(system, [requests[i] for i in members], snapshot)
            except Exception as err:  # noqa: BLE001 - one request's fault must not fail the others
                if len(members) == 1 or isinstance(err, ConnectionError | TimeoutError):
                    found = [err] * len(members)  # the index is unreachable: every request alone would wait again
                else:
                    logger.warning("a batch of %d requests failed (%s); answering each alone", len(members), err)
                    found = [self._alone(system, requests[i], snapshot) for i in members]
            for i, answer in zip(members, found, strict=True):
                answers[i] = answer
        return answers

    def _alone(self, system: str | None, request: SearchRequest, snapshot: IndexSnapshot) -> Answer | Exception:
        try:
            return self._search(system, [request], snapshot)[0]
        except Exception as err:  # noqa: BLE001 - reported to its own request only
            return err

    def _search(self, system: str | None, requests: list[SearchRequest], snapshot: IndexSnapshot) -> list[Answer]:
        retriever = self.retriever if system is None else self._fixed[system]
        texts, groups, ids = [], [], []
        for n, request in enumerate(requests):
            texts += request.queries
            groups += [n] * len(request.queries)
            ids += [f"\x00{n}.{i}" for i in range(len(request.queries))]  # no document id is like these: no self-hits
        results = retriever.search(dict(zip(ids, texts, strict=True)), k=max(r.k for r in requests),
                                   index=snapshot.dense, lexical=snapshot.lexical,
                                   fields=any(r.fields for r in requests), groups=groups)
        answers, start = [], 0
        for request in requests:
            mine = results[start : start + len(request.queries)]
            start += len(request.queries)
            answers.append(Answer([_cut(result, f"q{i}", request).record(text) for i, (result, text)
                                   in enumerate(zip(mine, request.queries, strict=True), start=1)], snapshot.version))
        return answers

    def info(self) -> dict:
        """What ``GET /info`` shows: model, experts, router, systems, index, settings and package versions."""
        router, info = self.retriever.router, self.retriever.encoder.info
        return {"model": info.record(), "experts": [n for n in self.retriever.encoder.names if n != BASE_EXPERT],
                "router": {"directory": self.config.router, "routing": self.config.routing, "kind": router.name,
                           "route_on": "embeddings" if router.space.layer is None else f"prefix:{router.space.layer}",
                           "systems": list(router.systems)},
                "systems": self.systems,
                "index": {"backend": self.config.backend, **({"uri": self.config.uri} if self.config.uri else {}),
                          **self.live.current.describe(), "reloads": self.live.reloads,
                          "reload_error": self.live.last_error},
                "settings": self.config.describe(), "versions": versions(),
                "process": {"host": socket.gethostname(), "pid": os.getpid()}}  # which replica answered


def _cut(result: RoutedResult, query_id: str, request: SearchRequest) -> RoutedResult:
    """``result`` as the request asked for it: its own query id, its ``k`` hits, with or without fields."""
    return RoutedResult(query_id, result.system, result.confidence, result.hits[: request.k], result.unfamiliar,
                        result.documents[: request.k] if request.fields else ())
