"""The paper-style comparison: train what is missing, build the routers, evaluate every system everywhere.

``run_comparison`` reuses every saved artifact (indexes in the cache, experts and routing scores in the router
directory), so a second run only evaluates. It returns the rows plus routing accuracy and confusion, which
``write_report`` turns into markdown tables and a PNG.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.benchmark import MULTITASK, ORACLES, ROUTED, EvalResult, SplitRun
from eval.data import open_dataset
from experts.pairs import anchor_texts
from experts.routing import build_router, expert_key, routing_data
from experts.store import ExpertStore
from experts.train import TrainConfig, train_expert
from retriever.artifacts import atomic_file, check_fields, read_json
from retriever.experts import BASE_EXPERT, MultiExpertEncoder
from retriever.index import IndexConfig, ensure_index
from retriever.routers import load_router

__all__ = ["DEFAULT_OVERRIDES", "Comparison", "load_overrides", "run_comparison", "write_report"]

logger = logging.getLogger(__name__)


@dataclass
class Comparison:
    results: list[EvalResult]
    expert_datasets: list[str]
    eval_datasets: list[str]
    experts: dict[str, str]  # dataset -> expert
    seconds: dict[str, float]

    def score(self, system: str, dataset: str) -> float | None:
        for r in self.results:
            if r.system == system and r.dataset == dataset:
                return r.scores.ndcg_at_10
        return None

    def systems(self) -> list[str]:
        return list(dict.fromkeys(r.system for r in self.results))

    def routing(self) -> dict:
        """Per routed system: accuracy (share routed to the query's own dataset expert) and confusion counts."""
        out = {}
        for system in [*ROUTED, *ORACLES]:
            confusion, right, total = {}, 0, 0
            for r in self.results:
                if r.system != system or r.chosen is None:
                    continue
                counts = Counter(r.chosen.values())
                confusion[r.dataset] = dict(sorted(counts.items()))
                own = self.experts.get(r.dataset)
                if own is not None:
                    right += counts.get(own, 0)
                    total += sum(counts.values())
            if confusion:
                out[system] = {"accuracy": round(right / total, 4) if total else None, "confusion": confusion}
        return out


DEFAULT_OVERRIDES = Path(__file__).resolve().parent.parent / "experts" / "training_overrides.json"


def load_overrides(path: Path | None) -> dict[str, dict]:
    """Per-dataset ``TrainConfig`` fields from a JSON file (``{"datasets": {name: {field: value}}}``)."""
    if path is None:
        return {}
    data = read_json(Path(path), "training overrides file")
    check_fields(data, {"datasets?": dict}, str(path))
    overrides = data.get("datasets", {})
    for name, fields in overrides.items():
        if not isinstance(fields, dict):
            raise ValueError(f"{path}: overrides for {name!r} must be an object, got {fields!r}")
        try:
            TrainConfig.from_fields(fields)  # an unknown field or a bad value fails here, naming it
        except ValueError as err:
            raise ValueError(f"{path}: overrides for {name!r}: {err}") from None
    return overrides


def run_comparison(data_dir, router_dir, cache_dir, expert_datasets: list[str], eval_datasets: list[str],
                   model: str | None = None, overrides: dict[str, dict] | None = None, max_queries: int = 500,
                   multitask: bool = True, index_type: str = "flat", progress: bool = False) -> Comparison:
    from retriever.encoder import load_encoder

    started = time.perf_counter()
    seconds: dict[str, float] = {}
    opened = {name: open_dataset(data_dir, name) for name in dict.fromkeys([*expert_datasets, *eval_datasets])}
    for name in eval_datasets:
        opened[name].qrels("test")
    encoder = MultiExpertEncoder(load_encoder(model))
    store = ExpertStore(router_dir, encoder.info, create=True)
    indexes = {}
    for name, ds in opened.items():
        t = time.perf_counter()
        indexes[name] = ensure_index(ds, encoder.base, cache_dir, IndexConfig(index_type=index_type),
                                     progress=progress)
        seconds[f"index:{name}"] = round(time.perf_counter() - t, 1)

    overrides = overrides or {}
    for name in expert_datasets:
        if name not in store.names():
            config = TrainConfig(**overrides.get(name, {}))
            others = [opened[other] for other in expert_datasets if other != name]
            if not others:  # a single expert dataset: no other domain to anchor on
                config = dataclasses.replace(config, anchor_weight=0.0, anchor_documents=0)
            anchors = anchor_texts(others, documents=config.anchor_documents) if config.anchor_weight > 0 else []
            trained = train_expert([(opened[name], indexes[name])], encoder.base, config, anchors=anchors,
                                   progress=progress)
            store.save(name, trained.write, trained.meta())
            seconds[f"train:{name}"] = round(trained.seconds, 1)
    if multitask and MULTITASK not in store.names():
        sources = [(opened[name], indexes[name]) for name in expert_datasets]
        trained = train_expert(sources, encoder.base, TrainConfig(**overrides.get(MULTITASK, {})), progress=progress)
        store.save(MULTITASK, trained.write, trained.meta())
        seconds[f"train:{MULTITASK}"] = round(trained.seconds, 1)
    store.load_into(encoder)

    t = time.perf_counter()
    sources = [(opened[name], indexes[name]) for name in expert_datasets]
    data = routing_data(sources, encoder, store, max_queries=max_queries, progress=progress)
    info = {"datasets": list(expert_datasets), "max_queries": max_queries, "seed": 0}
    routers = {kind: load_router(build_router(store, kind, data, info)) for kind in ROUTED}
    seconds["build-routers"] = round(time.perf_counter() - t, 1)

    own = store.domain_experts()
    candidates = store.candidates()
    systems = [BASE_EXPERT, *([MULTITASK] if MULTITASK in store.names() else []), *ROUTED, *ORACLES,
               *[f"expert:{own[d]}" for d in expert_datasets if d in own]]
    keys = {name: expert_key(store, name) for name in encoder.names}
    results = []
    t = time.perf_counter()
    for name in eval_datasets:
        run = SplitRun(opened[name], "test", encoder, indexes[name], routers, candidates,
                       vector_cache=Path(cache_dir) / "query-vectors", expert_keys=keys)
        results += [run.run(system) for system in systems]
    seconds["evaluate"] = round(time.perf_counter() - t, 1)
    seconds["total"] = round(time.perf_counter() - started, 1)
    return Comparison(results, list(expert_datasets), list(eval_datasets), own, seconds)


def _table(header: list[str], rows: list[list[str]]) -> str:
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def write_report(comparison: Comparison, markdown_path: Path | None = None, plot_path: Path | None = None) -> str:
    """Markdown: the paper-style table (nDCG@10 x100), no-expert datasets, expert matrix, routing. Optional PNG."""
    c = comparison
    systems = c.systems()
    main_systems = [s for s in systems if not s.startswith("expert:")]
    in_domain = [d for d in c.eval_datasets if d in c.expert_datasets]
    other = [d for d in c.eval_datasets if d not in c.expert_datasets]
    parts = []
    if in_domain:
        rows = []
        for s in main_systems:
            values = [c.score(s, d) for d in in_domain]
            avg = float(np.mean(values)) if all(v is not None for v in values) else None
            rows.append([s, *map(_fmt, values), _fmt(avg)])
        parts.append("### Test nDCG@10 (x100) on the expert domains\n\n" + _table(["system", *in_domain, "avg"], rows))
    if other:
        rows = [[s, *[_fmt(c.score(s, d)) for d in other]] for s in main_systems]
        parts.append("### Test nDCG@10 (x100) on datasets with no expert\n\n" + _table(["system", *other], rows))
    experts = [s for s in systems if s.startswith("expert:") or s in (BASE_EXPERT, MULTITASK)]
    rows = [[s, *[_fmt(c.score(s, d)) for d in c.eval_datasets]] for s in experts]
    parts.append("### Every expert on every dataset: test nDCG@10 (x100)\n\n"
                 + _table(["system", *c.eval_datasets], rows))
    routing = c.routing()
    if routing:
        columns = sorted({e for r in routing.values() for counts in r["confusion"].values() for e in counts})
        acc_rows = [[s, "—" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%"] for s, r in routing.items()]
        parts.append("### Routing accuracy (test queries sent to their own dataset's expert)\n\n"
                     + _table(["system", "accuracy"], acc_rows))
        for system in ("pilot",) if "pilot" in routing else ():
            confusion = routing[system]["confusion"]
            rows = [[d, *[str(counts.get(e, 0)) for e in columns]] for d, counts in confusion.items()]
            parts.append(f"### {system}: dataset -> chosen expert (test queries)\n\n"
                         + _table(["dataset", *columns], rows))
    parts.append("Wall time (s): " + ", ".join(f"{k} {v}" for k, v in c.seconds.items()))
    text = "\n\n".join(parts) + "\n"
    if markdown_path is not None:
        with atomic_file(markdown_path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    if plot_path is not None and "pilot" in routing:
        plot_confusion(routing["pilot"]["confusion"], plot_path, "pilot router: dataset -> chosen expert")
    return text


def plot_confusion(confusion: dict[str, dict[str, int]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(confusion)
    cols = sorted({e for counts in confusion.values() for e in counts})
    matrix = np.array([[confusion[r].get(e, 0) for e in cols] for r in rows], dtype=float)
    share = matrix / matrix.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 3, 0.6 * len(rows) + 2))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, f"{100 * share[i, j]:.0f}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=8)
    ax.set_xlabel("chosen expert")
    ax.set_ylabel("test queries of dataset")
    ax.set_title(title + " (% of queries)")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
