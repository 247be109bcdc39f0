"""Dynamic batching (text-embeddings-inference's shape): a bounded queue of requests, merged into routed batches of
at most ``max_batch`` queries after a wait of at most ``max_wait_ms``, run in a worker thread, split back.

One asyncio task (``Batcher.run``) takes the first waiting request, then keeps taking requests until the batch
holds ``max_batch`` queries or ``max_wait_ms`` has passed since it took the first (a request that would overflow
the batch starts the next one; a request larger than ``max_batch`` is a batch of its own). The batch runs in a
single worker thread (``SearchService.run`` and the JSON encoding of each answer), so the event loop keeps
accepting requests meanwhile: under load they queue and the next batch is as large as ``max_batch`` allows. At
most ``max_queue`` requests wait; more are refused at once (``QueueFull``), not queued without bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from retriever.service.engine import Answer, SearchRequest, SearchService

__all__ = ["BatchStats", "Batcher", "QueueFull"]

logger = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The service has ``max_queue`` requests waiting already."""


@dataclass
class BatchStats:
    """Counters ``GET /info`` shows (changed by the batcher task only)."""

    batches: int = 0
    requests: int = 0
    queries: int = 0
    merged: int = 0  # batches that held more than one request
    largest: int = 0  # most requests in one batch
    failed: int = 0  # requests answered with an error

    def describe(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Waiting:
    request: SearchRequest
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


class Batcher:
    """Merges concurrent ``submit`` calls into batches for ``service`` (see the module docstring)."""

    def __init__(self, service: SearchService, max_batch: int, max_wait_ms: float, max_queue: int):
        self.service, self.max_batch, self.max_wait, self.max_queue = service, max_batch, max_wait_ms / 1000, max_queue
        self.stats = BatchStats()
        self._waiting: deque[_Waiting] = deque()
        self._arrived = asyncio.Event()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search-batch")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="search-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._worker.shutdown(wait=True, cancel_futures=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def submit(self, request: SearchRequest) -> tuple[bytes, Answer]:
        """Queue ``request`` and wait for its answer: ``(the response body as JSON, the Answer)``; its own error
        is raised here. ``QueueFull`` when ``max_queue`` requests are waiting."""
        if len(self._waiting) >= self.max_queue:
            raise QueueFull(f"the service is at capacity ({self.max_queue} requests waiting); retry later")
        waiting = _Waiting(request, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._arrived.set()
        return await waiting.future

    async def _arrival(self, timeout: float | None = None) -> bool:
        """Wait until a request arrives (at most ``timeout`` seconds); whether one did."""
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _collect(self) -> list[_Waiting]:
        """The next batch: the first waiting request, and those that join it within ``max_wait``."""
        while not self._waiting:
            await self._arrival()
        first = self._waiting.popleft()
        batch, size = [first], len(first.request.queries)
        deadline = time.perf_counter() + self.max_wait
        while size < self.max_batch:
            if not self._waiting:
                left = deadline - time.perf_counter()
                if left <= 0 or not await self._arrival(left):
                    break
                continue
            if size + len(self._waiting[0].request.queries) > self.max_batch:
                break  # it starts the next batch
            batch.append(self._waiting.popleft())
            size += len(batch[-1].request.queries)
        return batch

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        number = 0
        while True:
            batch = await self._collect()
            batch = [w for w in batch if not w.future.done()]  # a client that went away is not searched for
            if not batch:
                continue
            number += 1
            info = {"id": number, "requests": len(batch), "queries": sum(len(w.request.queries) for w in batch)}
            try:
                outcomes = await loop.run_in_executor(self._worker, self._answer, [w.request for w in batch], info)
            except Exception as err:  # noqa: BLE001 - the batcher outlives any batch
                outcomes = [err] * len(batch)
            self._count(batch, outcomes, info)
            for waiting, outcome in zip(batch, outcomes, strict=True):
                if waiting.future.done():
                    continue
                if isinstance(outcome, Exception):
                    waiting.future.set_exception(outcome)
                else:
                    waiting.future.set_result(outcome)

    def _answer(self, requests: list[SearchRequest], info: dict) -> list[tuple[bytes, Answer] | Exception]:
        """In the worker thread: the batch's answers, each with its response body already encoded."""
        return [a if isinstance(a, Exception) else _encoded(a, info) for a in self.service.run(requests)]

    def _count(self, batch: list[_Waiting], outcomes: list, info: dict) -> None:
        stats = self.stats
        stats.batches += 1
        stats.requests += len(batch)
        stats.queries += info["queries"]
        stats.merged += len(batch) > 1
        stats.largest = max(stats.largest, len(batch))
        stats.failed += sum(isinstance(o, Exception) for o in outcomes)


def _encoded(answer: Answer, info: dict) -> tuple[bytes, Answer] | Exception:
    """One answer's response body, or the error encoding it raised (that request's alone)."""
    try:
        return json.dumps({"results": answer.records, "index_version": answer.index_version, "batch": info},
                          allow_nan=False, ensure_ascii=False).encode("utf-8"), answer
    except (TypeError, ValueError) as err:
        return err
