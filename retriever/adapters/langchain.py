"""The routed retriever as a LangChain retriever (``langchain_core.retrievers.BaseRetriever``):

    retriever = LangChainRetriever(router="my-router", index="my-index", k=5)
    docs = retriever.invoke("does vitamin D prevent fractures?")
    docs[0].page_content, docs[0].metadata["doc_id"], docs[0].metadata["system"], docs[0].metadata["score"]

Each ``Document`` holds a hit's text; its metadata the doc id, score, title, the system that answered, the router's
confidence, whether the query was unfamiliar to it, and the document's own fields (``metadata``). ``batch`` runs
one routed search per query (LangChain's threads), ``ainvoke`` in an executor.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr

from retriever.adapters.routed import RoutedIndex, routed_hits

__all__ = ["LangChainRetriever"]


class LangChainRetriever(BaseRetriever):
    """Routed search over one index. ``router``, ``index``, ``routing``, ``model``, ``device``, ``uri``,
    ``lexical``: as ``RoutedIndex.open`` (a router directory, a ``RouterRetriever`` or None for the base model; a
    FAISS directory, an opened index, or a Milvus collection name with ``uri``), loaded once when the retriever is
    made. ``k``: documents per query."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    router: Any = None
    index: Any
    k: int = Field(default=10, gt=0, strict=True)
    routing: str = "default"
    model: str | None = None
    device: str | None = None
    uri: str | None = None
    lexical: Any = None
    _source: RoutedIndex = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        self._source = RoutedIndex.open(self.router, self.index, routing=self.routing, model=self.model,
                                        device=self.device, uri=self.uri, lexical=self.lexical)
        self._source.check_texts()

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        (result,) = self._source.search([query], self.k)
        return [Document(id=hit.metadata["doc_id"], page_content=hit.text, metadata=hit.metadata)
                for hit in routed_hits(result, self._source.index.path)]
