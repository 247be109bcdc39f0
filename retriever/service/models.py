"""The service's request and response models (pydantic), and the one-line reason a refused request gets.

The request model is made per service (``request_model``): its limits (queries per request, characters per query,
``k``) and the systems a request may name come from the ``ServiceConfig`` and the loaded router. Unknown fields are
refused, so a request cannot name a path, an index or a router: the service searches only what it was started on.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

__all__ = ["Hit", "QueryResult", "SearchResponse", "error_line", "request_model"]

EXPERT_PREFIX = "expert:"  # ``expert:NAME`` (as ``evaluate --system`` spells it) names the system ``NAME``


def request_model(max_queries: int, max_query_chars: int, max_k: int, systems: Sequence[str]) -> type[BaseModel]:
    """The ``POST /search`` body this service takes: ``{"queries": [...], "k": 10, "system": null, "fields": true}``."""
    systems = tuple(systems)

    class SearchBody(BaseModel):
        """``queries``: the texts to search for (each answered in order); ``k``: hits per query; ``system``: answer
        every query with this system instead of routing (one of ``GET /info``'s ``systems``); ``fields``: each hit's
        title, text and metadata (false: ids and scores only)."""

        model_config = ConfigDict(extra="forbid")

        queries: list[StrictStr] = Field(min_length=1, max_length=max_queries)
        k: StrictInt = Field(10, ge=1, le=max_k)
        system: StrictStr | None = None
        fields: StrictBool = True

        @field_validator("queries")
        @classmethod
        def _texts(cls, queries: list[str]) -> list[str]:
            for i, text in enumerate(queries):
                if not text.strip():
                    raise ValueError(f"query {i} is empty: every query needs text to search for")
                if len(text) > max_query_chars:
                    raise ValueError(f"query {i} has {len(text)} characters; at most {max_query_chars}")
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as err:
                    raise ValueError(f"query {i} is not Unicode text (a lone surrogate at character {err.start})"
                                     ) from None
            return queries

        @field_validator("system")
        @classmethod
        def _system(cls, system: str | None) -> str | None:
            if system is None:
                return None
            name = system[len(EXPERT_PREFIX):] if system.startswith(EXPERT_PREFIX) else system
            if name not in systems:
                raise ValueError(f"unknown system {system[:80]!r}; available: {', '.join(systems)}")
            return name

    return SearchBody


class Hit(BaseModel):
    doc_id: str
    score: float
    title: str | None = None  # title, text and metadata: where the index stores its documents (and fields is true)
    text: str | None = None
    metadata: dict | None = None


class QueryResult(BaseModel):
    """One query's answer (``RoutedResult.record``, as ``routerretriever search --json`` prints it)."""

    query_id: str  # q1, q2, ... in the request's order
    query: str
    system: str  # what answered: base, an expert's name, bm25 or hybrid:<expert>
    expert: str | None
    mode: str  # dense, lexical or hybrid
    confidence: float  # the router's
    unfamiliar: bool  # the router did not recognise the query; system is what its default chose
    hits: list[Hit]


class SearchResponse(BaseModel):
    results: list[QueryResult]
    index_version: int  # the one version of the index every result of this response comes from
    batch: dict  # {"id", "requests", "queries"}: the routed batch this request shared


def error_line(errors: Sequence[dict]) -> str:
    """pydantic's (or FastAPI's) validation errors as one line: the first error's place, reason and value."""
    if not errors:
        return "invalid request"
    error = errors[0]
    if error.get("type") == "json_invalid":
        context = error.get("ctx", {}).get("error", "")
        return f"malformed JSON: {context}".rstrip(": ")
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    value = error.get("input")
    shown = f", got {value!r}"[:100] if isinstance(value, int | float | bool) or (
        isinstance(value, str) and error.get("type") != "value_error") else ""
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"invalid request: {where + ': ' if where else ''}{message}{shown}{more}"
