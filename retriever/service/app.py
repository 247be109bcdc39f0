"""The HTTP face of a ``SearchService``: a FastAPI app (``create_app``) and a uvicorn server for it (``serve_http``).

- ``POST /search`` ``{"queries": [...], "k": 10, "system": null, "fields": true}``: per query, the system that
  answered, the router's confidence, whether the query was unfamiliar to the router, and the hits (id, score,
  title, text, metadata); ``index_version`` (every result of one response comes from one version) and ``batch``
  (the routed batch the request shared: id, requests, queries). Requests are merged into batches
  (``retriever.service.batching``).
- ``GET /health``: 200 ``{"status": "ok", ...}`` while the batcher runs, 503 otherwise.
- ``GET /info``: base model, experts, router, systems, index (path, name, documents, version), settings, batch
  counters, package versions.
- ``POST /reload``: check the index's version now and swap a newer one in (also done every ``reload_interval``).

A bad request gets a 4xx and one line, ``{"detail": "..."}``: 400 malformed JSON, 413 a body over the limit, 422 a
request the model refuses (empty or over-long query, too many queries, ``k`` out of range, unknown system, unknown
field), 503 when ``max_queue`` requests wait already. A search that fails is a 500 (503: the index's server cannot
be reached) for that request alone. Written without ``from __future__ import annotations``: FastAPI reads the
request model from the endpoint's annotation, a class made per app.
"""

import asyncio
import contextlib
import logging

from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from retriever.service.batching import Batcher, QueueFull
from retriever.service.engine import SearchRequest, SearchService
from retriever.service.models import SearchResponse, error_line, request_model
from retriever.storage.files import library_version

__all__ = ["create_app", "serve_http"]

logger = logging.getLogger(__name__)

JSON_CHARS = 6  # the most bytes one query character takes in a JSON body (``\\uXXXX``)


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 before it is read whole (a declared
    Content-Length at once, a streamed body as soon as it passes the limit)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": self._reason(int(declared))}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # FastAPI passes an HTTPException raised while reading the body on
                raise HTTPException(413, self._reason(seen))
            return message

        return await self.app(scope, limited, send)

    def _reason(self, size: int) -> str:
        return f"request body of {size} bytes or more; at most {self.max_bytes}"


async def _watch(service: SearchService, interval: float) -> None:
    """Check the index's version every ``interval`` seconds (in a thread: opening a version reads files)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        try:
            await loop.run_in_executor(None, service.live.refresh)
        except Exception:  # noqa: BLE001 - the watcher outlives a failed check; the next one tries again
            logger.exception("checking %s for a new version failed", service.config.index)


def create_app(service: SearchService) -> FastAPI:
    """The app serving ``service``: its batcher and index watcher start and stop with the app's lifespan."""
    config = service.config
    body_model = request_model(config.max_queries, config.max_query_chars, config.max_k, service.systems)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.batcher = Batcher(service, config.max_batch, config.max_wait_ms, config.max_queue)
        app.state.batcher.start()
        watcher = asyncio.create_task(_watch(service, config.reload_interval)) if config.reload_interval else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            await app.state.batcher.stop()

    app = FastAPI(title="RouterRetriever search", version=library_version(), lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=config.max_queries * (config.max_query_chars * JSON_CHARS + 16) + 4096)

    @app.exception_handler(RequestValidationError)
    async def refused(request, exc: RequestValidationError):
        errors = exc.errors()
        status = 400 if errors and errors[0].get("type") == "json_invalid" else 422
        return JSONResponse({"detail": error_line(errors)}, status_code=status)

    @app.post("/search", response_model=SearchResponse)
    async def search(body: body_model) -> Response:
        request = SearchRequest(tuple(body.queries), body.k, body.system, body.fields)
        try:
            content, _ = await app.state.batcher.submit(request)
        except QueueFull as err:
            raise HTTPException(503, str(err)) from None
        except ConnectionError as err:
            raise HTTPException(503, f"search failed: {_line(err)}") from None
        except Exception as err:  # noqa: BLE001 - this request's own failure, one line; the service goes on
            logger.warning("a search request failed: %r", err)
            raise HTTPException(500, f"search failed: {_line(err)}") from None
        return Response(content, media_type="application/json")

    @app.get("/health")
    async def health():
        if not app.state.batcher.running:
            return JSONResponse({"detail": "the batcher has stopped"}, status_code=503)
        return {"status": "ok", "index_version": service.live.current.version}

    @app.get("/info")
    async def info():
        return {**service.info(), "batching": {**app.state.batcher.stats.describe(),
                                               "waiting": app.state.batcher.waiting}}

    @app.post("/reload")
    async def reload():
        changed = await asyncio.get_running_loop().run_in_executor(None, service.live.refresh)
        current = service.live.current
        return {"reloaded": changed, "index_version": current.version, "documents": len(current.dense),
                "error": service.live.last_error}

    return app


def _line(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]


def serve_http(service: SearchService, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning"
               ) -> None:
    """Serve ``service`` (``SearchService.open``: opened before anything listens, so a bad path fails first) with
    uvicorn on ``host:port`` until interrupted."""
    import uvicorn

    uvicorn.run(create_app(service), host=host, port=port, log_level=log_level, access_log=False)
