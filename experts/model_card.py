"""Model cards (``README.md``) of exported models: what a model routes among, what its vectors are and how it was
measured, from the records the router directory keeps (``expert.json``, ``routing.json``)."""

from __future__ import annotations

from pathlib import Path

from retriever.encoding.expert_encoder import BASE
from retriever.ranking.systems import BM25, HYBRID, dense_part, is_auto
from retriever.routers.directory import RouterDirectory
from retriever.storage.files import library_version

__all__ = ["expert_card", "routed_card"]


def _front_matter(base_id: str) -> list[str]:
    hub = [f"base_model: {base_id}"] if base_id.count("/") == 1 and not base_id.startswith("/") else []
    return ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
            "tags: [sentence-transformers, routerretriever, feature-extraction]", *hub, "---", ""]


def _base_lines(base: dict) -> list[str]:
    return [f"- Base model: `{base['id']}` (dimension {base['dim']}, weight fingerprint `{base['fingerprint']}`): "
            "every document vector and the routing pass."]


def _score(value) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else "?"


def _expert_rows(store: RouterDirectory, names: list[str]) -> list[str]:
    rows = ["| expert | trained on | held-out nDCG@10 (base -> expert) | adapter sha256 |", "|---|---|---|---|"]
    for name in names:
        info = store.expert_info(name)
        metrics, training = info.get("metrics", {}), info.get("training", {})
        datasets = ", ".join(training.get("datasets", [])) or info.get("domain", "?")
        rows.append(f"| `{name}` | {datasets} | {_score(metrics.get('heldout_base_ndcg@10'))} -> "
                    f"{_score(metrics.get('heldout_ndcg@10'))} | `{info['files']['adapter_model.safetensors'][:12]}` |")
    return rows


def expert_card(store: RouterDirectory, name: str) -> str:
    """The card of ``experts export``: a query/document model, expert ``name`` on queries, the base on documents."""
    base = store.base_model
    lines = [*_front_matter(base["id"]), f"# RouterRetriever expert `{name}`", "",
             f"Exported by `routerretriever experts export` (routerretriever {library_version()}).", "",
             "A query/document model (sentence-transformers `Router`): `encode_query` runs the LoRA query expert "
             f"`{name}` (merged into a copy of the base), `encode_document` runs the base model, so documents are "
             "encoded as in the corpus index the expert was trained against. `encode` without a task is refused.", "",
             *_base_lines(base), "", *_expert_rows(store, [name]), "",
             "Held-out nDCG@10: the expert's held-out slice of its training queries, scored when it was trained "
             "(`expert.json` in the router directory).", "", "```python",
             "from sentence_transformers import SentenceTransformer", "",
             "model = SentenceTransformer(\"PATH\")",
             "queries, documents = model.encode_query([\"...\"]), model.encode_document([\"...\"])", "```", ""]
    return "\n".join(lines)


def _vector_rows(systems: list[str]) -> list[str]:
    rows = ["| routed system | `encode_query` returns |", "|---|---|"]
    for system in systems:
        if system == BASE:
            what = "the base vector"
        elif system == BM25:
            what = "the base vector (BM25 has no dense vector; the base's is what the shared index holds)"
        elif is_auto(system):
            expert = dense_part(system)
            whose = "base" if expert == BASE else f"`{expert}` expert's"
            what = f"the {whose} vector (`RouterRetriever` fuses it with BM25 or not, per call and query)"
        elif system.startswith(HYBRID):
            expert = system[len(HYBRID):]
            whose = "base" if expert == BASE else f"`{expert}` expert's"
            what = f"the {whose} vector (the dense part; the BM25 half is not in a vector)"
        else:
            what = f"the `{system}` expert's vector"
        rows.append(f"| `{system}` | {what} |")
    return rows


def _fallback(options: dict, default: str) -> str:
    """Where the router sends what it does not recognise, as its calibrated thresholds say."""
    rules = []
    similarity, confidence = options.get("min_similarity"), options.get("min_confidence")
    if isinstance(similarity, int | float) and similarity > 0:
        rules.append(f"less similar than {similarity:g} (cosine) to everything it was fitted on")
    if isinstance(confidence, int | float) and confidence > 0:
        rules.append(f"routed with confidence below {confidence:g}")
    return f"; queries {' or '.join(rules)} go to `{default}`" if rules else ""


def _measured(router) -> list[str]:
    gain, info = router.fold_gain or router.info.get("fold_gain"), router.info
    lines = ["## How it was measured", ""]
    if gain:
        lines.append("Gain in nDCG@10 over the base model on the routing folds (training queries only; "
                     "`build-router`): " + ", ".join(f"{key} {_score(value)}" for key, value in gain.items()) + ".")
    else:
        lines.append("The router records no routing-fold scores (it was fitted without them).")
    if info.get("datasets"):
        lines.append(f"Routed on the training queries of: {', '.join(info['datasets'])} "
                     f"(at most {info.get('max_queries', '?')} each).")
    lines += ["", f"The full record is `routing.json` under `routers/{router.name}/` of the module's router "
              "directory (options, calibrated thresholds, label counts); each expert's `expert.json` holds its "
              "training record. Test-split scores of the routed systems are in the project's BENCHMARKS.md, "
              "measured with `RouterRetriever` (dense, BM25 and hybrid rankings), not with this model alone.", ""]
    return lines


def routed_card(store: RouterDirectory, router, experts: list[str], folder: str) -> str:
    """The card of ``routerretriever export``: router ``router`` (a ``retriever.routers.Router``) of ``store`` over
    ``experts``, its module saved in ``folder``."""
    base = store.base_model
    options = dict(router.options)  # as saved in routing.json
    lines = [*_front_matter(base["id"]), f"# RouterRetriever routed model: router `{router.name}`", "",
             f"Exported by `routerretriever export` (routerretriever {library_version()}) from router directory "
             f"`{Path(store.root).name}`.", "",
             "## What it routes among", "", *_base_lines(base),
             f"- Router: `{router.name}`, on {router.space.describe()}{_fallback(options, router.default)}.",
             f"- Systems ({len(router.systems)}): {', '.join(f'`{s}`' for s in router.systems)}.", "",
             *(_expert_rows(store, experts) if experts else ["No experts: it routes among base and lexical systems."]),
             "", "## What the vectors are", "",
             "`encode_query` routes each query as `RouterRetriever` does (one base pass, the router, each query "
             "through its expert's layers) and returns the vector of the routed system's dense part; "
             "`encode_document` returns the base model's vector, as the shared corpus index holds. `encode` "
             "without a task is refused.", "", *_vector_rows(list(router.systems)), "",
             "Searching a dense index with these vectors gives `RouterRetriever`'s rankings for queries routed to a "
             "dense system; for `bm25`, hybrid and `auto:base` queries it gives the dense part's ranking only "
             "(`RouterRetriever.search` with the BM25 index gives the full one).", "", *_measured(router),
             "## Use", "", "```python", "from sentence_transformers import SentenceTransformer", "",
             "model = SentenceTransformer(\"PATH\", trust_remote_code=True)  # needs `routerretriever` installed",
             "queries, documents = model.encode_query([\"...\"]), model.encode_document([\"...\"])", "```", "",
             "`trust_remote_code=True` lets sentence-transformers import `retriever.adapters.st_model.RoutedEncoder` "
             "from the installed package; the directory holds no code. "
             "`retriever.adapters.load_routed_model(\"PATH\")` checks that first.", "",
             "## Integrity", "",
             f"`routerretriever-export.json` records the sha256 of every file; `{folder}` refuses to load when a file "
             "was changed, removed or added after export.", ""]
    return "\n".join(lines)
