"""The search service (``retriever.service``, ``routerretriever serve``) on a real uvicorn server bound to a loopback
port, spoken to over HTTP with httpx: answers equal the library's, bad requests are one-line 4xx, concurrent
requests share routed batches (each answered as if alone), one failing request fails alone, and an index changed
by ``add``/``delete`` while clients search is swapped in whole, with no failed request. Ray Serve replicas run on
a small local Ray cluster."""

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from conftest import REPO

from retriever.index.lexical import lexical_path_for
from retriever.service.app import create_app
from retriever.service.config import ServiceConfig
from retriever.service.engine import SearchService
from retriever.service.live_index import LiveIndex
from retriever.storage.files import ArtifactError

QUERIES = ["what is known about solar panels", "whales in the ocean", "jazz music from new orleans",
           "roasted coffee seeds", "magma and lava", "memory safety ownership"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(app):
    """``app`` served by a real uvicorn server in a thread, on a free loopback port; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def copy_index(world, target):
    """A named copy of the toy world's index and its BM25 index (``add``/``delete`` may change it)."""
    source = world["indexes"]["toy"].path
    shutil.copytree(source, target)
    shutil.copytree(lexical_path_for(source), lexical_path_for(target))
    return target


@pytest.fixture(scope="module")
def config(lexical_world, tmp_path_factory):
    store = lexical_world["store"]
    index = copy_index(lexical_world, tmp_path_factory.mktemp("service") / "named")
    return ServiceConfig(index=str(index), router=str(store.root), model=str(store.base.id), reload_interval=0)


@pytest.fixture(scope="module")
def service(config):
    return SearchService.open(config)


@pytest.fixture(scope="module")
def url(service):
    with running(create_app(service)) as base:
        yield base


def alone(service, queries, k=10, system=None):
    """What the library answers for these queries in a call of their own."""
    retriever = service.retriever if system is None else service._fixed[system]
    snapshot = service.live.current
    return retriever.search(queries, k=k, index=snapshot.dense, lexical=snapshot.lexical)


def assert_answers(records, results):
    assert len(records) == len(results)
    for i, (record, result) in enumerate(zip(records, results, strict=True), start=1):
        assert record["query_id"] == f"q{i}" and record["system"] == result.system
        assert record["unfamiliar"] == result.unfamiliar and record["confidence"] == pytest.approx(result.confidence,
                                                                                                  abs=1e-4)
        assert [(h["doc_id"], pytest.approx(h["score"], abs=1e-5)) for h in record["hits"]] == result.hits


def test_search_health_and_info(service, url):
    body = httpx.post(f"{url}/search", json={"queries": QUERIES, "k": 5}).json()
    assert body["index_version"] == 1 and body["batch"]["queries"] == len(QUERIES)
    assert_answers(body["results"], alone(service, QUERIES, k=5))
    hit = body["results"][0]["hits"][0]
    assert set(hit) == {"doc_id", "score", "title", "text", "metadata"} and hit["text"]
    assert body["results"][0]["query"] == QUERIES[0]
    bare = httpx.post(f"{url}/search", json={"queries": QUERIES[:1], "fields": False, "system": "bm25"}).json()
    assert set(bare["results"][0]["hits"][0]) == {"doc_id", "score"} and bare["results"][0]["system"] == "bm25"
    assert_answers(bare["results"], alone(service, QUERIES[:1], system="bm25"))
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "index_version": 1}
    info = httpx.get(f"{url}/info").json()
    assert info["model"]["id"] == service.retriever.encoder.info.id and info["experts"] == ["other-expert",
                                                                                             "toy-expert"]
    assert info["router"]["kind"] == service.retriever.router.name and "auto:base" in info["systems"]
    assert info["index"]["documents"] == 20 and info["index"]["version"] == 1 and info["index"]["name"] == "named"
    assert {"routerretriever", "torch", "fastapi", "uvicorn", "pydantic"} <= set(info["versions"])
    assert info["batching"]["requests"] >= 2


BAD = [  # (body or raw bytes, status, the one-line reason)
    (b'{"queries": ["x"', 400, "malformed JSON"),
    (b"[1, 2]", 422, "valid dictionary"),
    ({"k": 3}, 422, "queries: Field required"),
    ({"queries": []}, 422, "queries: List should have at least 1 item"),
    ({"queries": "solar"}, 422, "queries: Input should be a valid list"),
    ({"queries": ["solar", "  "]}, 422, "queries: query 1 is empty"),
    ({"queries": ["x" * 10_001]}, 422, "query 0 has 10001 characters; at most 10000"),
    ({"queries": ["solar"] * 257}, 422, "at most 256 items"),
    ({"queries": ["solar"], "k": 0}, 422, "k: Input should be greater than or equal to 1, got 0"),
    ({"queries": ["solar"], "k": 101}, 422, "k: Input should be less than or equal to 100, got 101"),
    ({"queries": ["solar"], "k": "10"}, 422, "k: Input should be a valid integer"),
    ({"queries": ["solar"], "system": "sciface"}, 422, "unknown system 'sciface'; available: "),
    ({"queries": ["solar"], "index": "/etc"}, 422, "index: Extra inputs are not permitted"),
    (b'{"queries": ["a\\ud800b"]}', 422, "query 0 is not Unicode text"),
    (b'{"queries": ["' + b"x" * 16_000_000 + b'"]}', 413, "request body of"),
]


@pytest.mark.parametrize("body, status, reason", BAD, ids=[f"{b[1]}-{b[2][:20]}" for b in BAD])
def test_bad_requests_are_one_line_4xx(url, body, status, reason):
    kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) \
        else {"json": body}
    response = httpx.post(f"{url}/search", **kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and reason in detail, detail
    assert httpx.post(f"{url}/search", json={"queries": ["solar"]}).status_code == 200  # still serving


async def _concurrently(url, bodies):
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(*(client.post("/search", json=b) for b in bodies))


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer(config, service):
    slow = SearchService(config.replace(max_wait_ms=300), service.retriever, service.live)
    bodies = [{"queries": QUERIES[i % 6 : i % 6 + 1 + i % 3], "k": 3 + i % 4} for i in range(12)]
    bodies[5]["system"] = "base"
    bodies[7] = {"queries": documents(service), "k": 5, "system": "auto:base"}  # switches its own call to the hybrid
    bodies[8]["system"] = bodies[9]["system"] = "auto:base"  # alone, never: merged with it, still not
    with running(create_app(slow)) as base:
        responses = asyncio.run(_concurrently(base, bodies))
        info = httpx.get(f"{base}/info").json()["batching"]
    assert all(r.status_code == 200 for r in responses)
    shared = [r.json()["batch"]["requests"] for r in responses]
    assert max(shared) > 1 and info["merged"] >= 1 and info["largest"] > 1 and info["requests"] == 12
    for body, response in zip(bodies, responses, strict=True):  # merged, yet what a call of their own gives
        assert_answers(response.json()["results"], alone(service, body["queries"], body["k"], body.get("system")))


def documents(service) -> list[str]:
    """The toy corpus's texts: as queries, the base and BM25 agree on their first document."""
    store = service.live.current.dense.store
    return [doc["text"] for doc in store.get(service.live.current.dense.doc_ids).values()]


def test_merged_calls_decide_auto_base_per_group(service, monkeypatch):
    """``auto:base`` fuses with BM25 where a call's unfamiliar queries agree with the base often enough (counting
    ten queries of prior disagreement): 20 agreeing queries switch their call to the hybrid, one query alone never
    does, and merged with them it keeps its own call's answer. (The toy encoder's cosines are all near 0.95, so
    every query would look undecided: the per-query gate is off here, tested in test_lexical.)"""
    monkeypatch.setattr("retriever.ranking.unfamiliar.UNDECIDED_GAP", 0.0)
    snapshot, auto = service.live.current, service._fixed["auto:base"]
    many, one = documents(service), ["whales in the ocean"]
    merged = auto.search(many + one, k=5, index=snapshot.dense, lexical=snapshot.lexical,
                         groups=[0] * len(many) + [1])
    assert {r.system for r in merged[:-1]} == {"hybrid:base"} and merged[-1].system == "base"
    expected = alone(service, one, 5, "auto:base")[0]
    assert [d for d, _ in merged[-1].hits] == [d for d, _ in expected.hits]
    assert [s for _, s in merged[-1].hits] == pytest.approx([s for _, s in expected.hits], abs=1e-5)
    pooled = auto.search(many + one, k=5, index=snapshot.dense, lexical=snapshot.lexical)
    assert pooled[-1].system == "hybrid:base"  # one call: the lone query goes where the others take it
    with pytest.raises(ValueError, match="groups must give one label per query: 1 labels for 6 queries"):
        service.retriever.search(QUERIES, index=snapshot.dense, lexical=snapshot.lexical, groups=[0])


class Faulty:
    """The service's retriever, except that a query containing ``boom`` raises and one containing ``slow`` waits:
    the one failure no valid request causes on its own, injected."""

    def __init__(self, retriever):
        self.retriever = retriever

    def __getattr__(self, name):
        return getattr(self.retriever, name)

    def search(self, queries, **kwargs):
        texts = list(queries.values())
        if any("slow" in t for t in texts):
            time.sleep(0.5)
        if any("boom" in t for t in texts):
            raise RuntimeError("the encoder fell over\non two lines")
        return self.retriever.search(queries, **kwargs)


def test_a_failing_request_fails_alone_and_a_full_queue_is_503(config, service):
    faulty = SearchService(config.replace(max_wait_ms=300, max_queue=4), Faulty(service.retriever), service.live)
    bodies = [{"queries": [QUERIES[0]]}, {"queries": ["boom", QUERIES[1]]}, {"queries": [QUERIES[2]]}]
    with running(create_app(faulty)) as base:
        good, bad, other = asyncio.run(_concurrently(base, bodies))
        assert bad.status_code == 500 and bad.json() == {"detail": "search failed: the encoder fell over on two lines"}
        assert good.status_code == other.status_code == 200
        assert good.json()["batch"]["requests"] == 3  # they shared the batch that failed, and were answered again
        assert_answers(good.json()["results"], alone(service, [QUERIES[0]]))
        assert httpx.get(f"{base}/info").json()["batching"]["failed"] == 1
    one_at_a_time = SearchService(config.replace(max_batch=1, max_queue=4), Faulty(service.retriever), service.live)
    with running(create_app(one_at_a_time)) as base:  # while the slow one runs, four wait, the rest are refused
        crowd = asyncio.run(_concurrently(base, [{"queries": ["slow"]}] + [{"queries": ["solar"]}] * 12))
        assert {r.status_code for r in crowd} == {200, 503}
        refused = next(r for r in crowd if r.status_code == 503)
        assert refused.json()["detail"] == "the service is at capacity (4 requests waiting); retry later"
        assert httpx.get(f"{base}/health").status_code == 200


NEW_DOCS = [{"_id": "new-glacier", "title": "Glaciers", "text": "Glaciers are slow rivers of ice that carve valleys."},
            {"_id": "new-violin", "title": "Violins", "text": "A violin has four strings tuned in perfect fifths."}]


def _traffic(base, body, stop, log):
    """Search until ``stop``; every response's (status, body) into ``log``."""
    with httpx.Client(base_url=base, timeout=30) as client:
        while not stop.is_set():
            response = client.post("/search", json=body)
            log.append((response.status_code, response.json()))


def _whole(version, body) -> bool:
    """Whether a response shows one version of the index: the documents it was changed by (added in version 2,
    ``whale-1`` deleted in 3) appear exactly as that version has them, each hit with its stored text."""
    ids = {h["doc_id"] for r in body["results"] for h in r["hits"]}
    texts = all(h.get("text") for r in body["results"] for h in r["hits"])
    new, whale = {d["_id"] for d in NEW_DOCS} & ids, "whale-1" in ids
    return texts and (not new if version == 1 else True) and (not whale if version >= 3 else True)


def test_index_changed_during_traffic_is_swapped_in_whole(lexical_world, service, tmp_path):
    from experts.workflows.collections import add_documents, delete_documents
    from retriever.index.backends import FaissBackend

    index = copy_index(lexical_world, tmp_path / "live")
    config = ServiceConfig(index=str(index), router=service.config.router, model=service.config.model,
                           reload_interval=0.1)
    live = LiveIndex(FaissBackend(), str(index), service.retriever.encoder.info, True)
    corpus = tmp_path / "new.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in NEW_DOCS), encoding="utf-8")
    stop, logs = threading.Event(), ([], [], [])
    bodies = ({"queries": ["glaciers of ice", "violin strings"], "k": 25, "system": "bm25"},
              {"queries": ["blue whales", "glaciers carve valleys"], "k": 25, "system": "base"},
              {"queries": QUERIES, "k": 25})
    with running(create_app(SearchService(config, service.retriever, live))) as base:
        clients = [threading.Thread(target=_traffic, args=(base, body, stop, log))
                   for body, log in zip(bodies, logs, strict=True)]
        for client in clients:
            client.start()
        for version, change in ((2, lambda: add_documents(index, corpus, model=config.model)),
                                (3, lambda: delete_documents(index, ["whale-1"]))):
            time.sleep(0.5)
            assert change().dense.meta["version"] == version  # the library's add/delete, as the CLI runs them
            deadline = time.monotonic() + 20
            while httpx.get(f"{base}/health").json()["index_version"] < version:
                assert time.monotonic() < deadline, "the service did not pick up the new version"
                time.sleep(0.05)
        time.sleep(0.5)
        stop.set()
        for client in clients:
            client.join(30)
        assert httpx.post(f"{base}/reload").json() == {"reloaded": False, "index_version": 3, "documents": 21,
                                                       "error": None}
        found = httpx.post(f"{base}/search", json={"queries": ["glaciers of ice"], "system": "bm25"}).json()
        everything = httpx.post(f"{base}/search", json={"queries": ["whales"], "k": 100, "system": "base"}).json()
    for log in logs:
        assert log and all(status == 200 for status, _ in log), [b for s, b in log if s != 200][:3]
        versions = [body["index_version"] for _, body in log]
        assert versions == sorted(versions) and versions[0] == 1 and versions[-1] == 3
        assert all(_whole(body["index_version"], body) for _, body in log)
    top = found["results"][0]["hits"][0]
    assert top["doc_id"] == "new-glacier" and top["text"] == NEW_DOCS[0]["text"]
    ids = [h["doc_id"] for h in everything["results"][0]["hits"]]
    assert len(ids) == 21 and "whale-1" not in ids and {"new-glacier", "new-violin"} <= set(ids)


def test_cli_serves_over_http(config):
    port = free_port()
    command = [sys.executable, "cli.py", "serve", "--router", config.router, "--index", config.index, "--model",
               config.model, "--port", str(port), "--max-wait-ms", "1"]
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read()
            assert time.monotonic() < deadline, "the server did not start"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            time.sleep(0.2)
        body = httpx.post(f"http://127.0.0.1:{port}/search", json={"queries": ["solar panels"], "k": 2}).json()
        assert len(body["results"][0]["hits"]) == 2
        assert httpx.post(f"http://127.0.0.1:{port}/search", json={"queries": [""]}).status_code == 422
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=20)
    assert out.splitlines()[0] == f"serving {config.index} (version 1, 20 documents) on http://127.0.0.1:{port}"


def test_cli_refuses_before_loading_anything(config, tmp_path):
    from click.testing import CliRunner

    import cli

    result = CliRunner().invoke(cli.main, ["serve", "--index", config.index, "--routing", "pilot"])
    assert result.exit_code == 2 and "--routing chooses a router of --router DIR" in result.output
    result = CliRunner().invoke(cli.main, ["serve", "--index", str(tmp_path / "nothing"), "--router", config.router])
    assert result.exit_code == 1 and result.output.startswith("Error: not a ") and "nothing" in result.output
    result = CliRunner().invoke(cli.main, ["serve", "--index", "c", "--backend", "milvus", "--uri",
                                           str(tmp_path / "m.db"), "--replicas", "2"])
    assert result.exit_code == 2 and "a Milvus Lite file" in result.output


async def _replica_ids(base, n):
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        return {r.json()["process"]["pid"] for r in await asyncio.gather(*(client.get("/info") for _ in range(n)))}


def test_ray_serve_replicas_answer_like_the_library(config, service):
    ray = pytest.importorskip("ray")
    from ray import serve

    from retriever.service.ray_serve import deploy

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        port = free_port()
        deploy(config, replicas=2, port=port)
        base = f"http://127.0.0.1:{port}"
        body = httpx.post(f"{base}/search", json={"queries": QUERIES, "k": 5}, timeout=60).json()
        assert_answers(body["results"], alone(service, QUERIES, k=5))
        assert httpx.post(f"{base}/search", json={"queries": QUERIES, "k": 0}).status_code == 422
        replicas = set()
        for _ in range(10):  # bursts of concurrent requests, which Serve's proxy spreads over both replicas
            if len(replicas) == 2:
                break
            replicas |= asyncio.run(_replica_ids(base, 16))
        assert len(replicas) == 2
    finally:
        serve.shutdown()
        ray.shutdown()


def test_a_milvus_collection_is_reopened_when_its_version_grows(service, data_dir, tmp_path):
    """The other backend: the version lives in the collection's metadata (Milvus Lite here)."""
    pytest.importorskip("pymilvus")
    from eval.data import open_dataset
    from retriever.index.backends import MilvusBackend
    from retriever.index.base import Document
    from retriever.index.lexical import LexicalConfig
    from retriever.index.milvus_build import build_milvus_index

    encoder = service.retriever.encoder.base
    backend = MilvusBackend(str(tmp_path / "m.db"))
    build_milvus_index(open_dataset(data_dir, "toy"), encoder, backend.uri, "toy", lexical=LexicalConfig())
    live = LiveIndex(backend, "toy", encoder.info, True)
    built = backend.version("toy")  # as the collection records it (a Milvus build records 0, FAISS 1)
    assert live.current.version == built and not live.refresh()
    backend.add("toy", [Document(d["_id"], d["title"], d["text"]) for d in NEW_DOCS], encoder)
    old = live.current
    assert backend.version("toy") == built + 1 and live.refresh() and live.current.version == built + 1
    assert len(old.dense) == 20 and len(live.current.dense) == 22  # the old snapshot is as it was
    hits = service._fixed["bm25"].search(["glaciers of ice"], k=1, index=live.current.dense,
                                         lexical=live.current.lexical)
    assert hits[0].hits[0][0] == "new-glacier" and hits[0].documents[0]["text"] == NEW_DOCS[0]["text"]
    with pytest.raises(ArtifactError, match="no index collection 'nothing'"):
        backend.version("nothing")
