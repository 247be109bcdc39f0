"""The search service, above the ``RouterRetriever`` facade (its web stack is the ``serve`` extra; Ray Serve's is
the ``ray`` extra). ``routerretriever serve`` runs it; README "Serving" shows the endpoints.

- ``config``     — ``ServiceConfig``: what is served (router, index, backend, model, device) and how (batching,
                   request limits, reload interval); plain data, so it travels to Ray Serve replicas.
- ``models``     — the pydantic request model (made per service: its limits and systems) and response models; the
                   one-line reason a refused request gets.
- ``live_index`` — ``LiveIndex``: the index's current version as one ``IndexSnapshot`` (dense, BM25, document
                   store), replaced whole when ``add``/``delete`` swap in a newer version.
- ``engine``     — ``SearchService``: opens router and index, answers a merged batch with one
                   ``RouterRetriever.search`` per system asked for, each request's failure its own; ``GET /info``.
- ``batching``   — ``Batcher``: dynamic batching (bounded queue, most queries per batch, a wait of a few ms) in a
                   worker thread, off the event loop.
- ``app``        — ``create_app``: the FastAPI app (``/search``, ``/health``, ``/info``, ``/reload``) and
                   ``serve_http`` (uvicorn).
- ``ray_serve``  — the same app as a Ray Serve deployment of N replicas (``deploy``, ``serve_ray``).

Tested in ``tests/test_service.py`` (a real server on a loopback port, httpx; Ray Serve on a local cluster).
"""

from retriever.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "ServiceConfig": "retriever.service.config",
    "LiveIndex": "retriever.service.live_index",
    "IndexSnapshot": "retriever.service.live_index",
    "SearchService": "retriever.service.engine",
    "Batcher": "retriever.service.batching",
    "create_app": "retriever.service.app",
    "serve_http": "retriever.service.app",
})
