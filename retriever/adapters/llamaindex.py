"""The routed retriever as a LlamaIndex retriever (``llama_index.core.retrievers.BaseRetriever``):

    retriever = LlamaIndexRetriever("my-router", "my-index", k=5)
    nodes = retriever.retrieve("does vitamin D prevent fractures?")
    nodes[0].node.text, nodes[0].score, nodes[0].node.metadata["doc_id"], nodes[0].node.metadata["system"]

Each ``NodeWithScore`` holds a ``TextNode`` (id: the doc id; text: the document's) and the hit's score; the node's
metadata holds the doc id, score, title, the system that answered, the router's confidence, whether the query was
unfamiliar to it, and the document's own fields (``metadata``). Only the title and the document's own fields reach
an LLM or an embedding model (the routing keys are excluded).
"""

from __future__ import annotations

import os

from llama_index.core.callbacks import CallbackManager
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from retriever.adapters.routed import RoutedHit, RoutedIndex, routed_hits
from retriever.index.base import DenseIndex, LexicalSearch
from retriever.router_retriever import RouterRetriever

__all__ = ["LlamaIndexRetriever"]


class LlamaIndexRetriever(BaseRetriever):
    """Routed search over one index. ``router``, ``index`` and the keywords: as ``RoutedIndex.open`` (a router
    directory, a ``RouterRetriever`` or None for the base model; a FAISS directory, an opened index, or a Milvus
    collection name with ``uri``). ``k``: nodes per query."""

    def __init__(self, router: RouterRetriever | str | os.PathLike | None, index: DenseIndex | str | os.PathLike, *,
                 k: int = 10, routing: str = "default", model: str | None = None, device: str | None = None,
                 uri: str | None = None, lexical: LexicalSearch | str | os.PathLike | None = None,
                 callback_manager: CallbackManager | None = None, verbose: bool = False):
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.source = RoutedIndex.open(router, index, routing=routing, model=model, device=device, uri=uri,
                                       lexical=lexical)
        self.source.check_texts()
        self.k = k
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        (result,) = self.source.search([query_bundle.query_str], self.k)
        return [NodeWithScore(node=_node(hit), score=hit.metadata["score"])
                for hit in routed_hits(result, self.source.index.path)]


def _node(hit: RoutedHit) -> TextNode:
    """The hit as a node whose text an LLM sees with the title and the document's own fields (if any), not with
    the routing keys."""
    hidden = [*RoutedHit.ROUTING_KEYS, *([] if hit.metadata["metadata"] else ["metadata"])]
    return TextNode(id_=hit.metadata["doc_id"], text=hit.text, metadata=hit.metadata,
                    excluded_llm_metadata_keys=hidden, excluded_embed_metadata_keys=list(hidden))
