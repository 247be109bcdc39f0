"""The comparison report: every system's rows on every dataset, routing accuracy and confusion, as markdown
tables and a PNG (``experts.workflows.run_comparison`` produces the ``Comparison``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval.metrics import paired_bootstrap
from eval.runs import DEFAULT, MULTITASK, ORACLES, ROUTED, EvalResult
from retriever.encoding.encoder import BASE_EXPERT
from retriever.ranking.systems import BM25, HYBRID, dense_part, hybrid, is_lexical
from retriever.storage.files import atomic_file, check_output_file

SINGLE = (BASE_EXPERT, BM25, hybrid(BASE_EXPERT))  # the untrained single systems every router is held against

__all__ = ["Comparison", "check_plot_path", "confusion_title", "plot_confusion", "write_report"]

@dataclass
class Comparison:
    results: list[EvalResult]
    expert_datasets: list[str]
    eval_datasets: list[str]
    experts: dict[str, str]  # dataset -> expert
    seconds: dict[str, float]
    default: str | None = None  # the router the routing folds favoured (the "default" rows)
    fold_gains: dict[str, dict | None] = field(default_factory=dict)  # router -> its gain on the routing folds
    fusion: dict = field(default_factory=dict)  # how the hybrids were fused (method, calibrated weights)
    refused: dict[str, dict] = field(default_factory=dict)  # dataset -> self-check of its refused unlabelled expert

    def result(self, system: str, dataset: str) -> EvalResult | None:
        return next((r for r in self.results if r.system == system and r.dataset == dataset), None)

    def bootstrap(self, a: str, b: str | dict[str, str], datasets: list[str]) -> tuple[float, float, float]:
        """Paired bootstrap of system ``a`` minus ``b`` (a system, or one per dataset) over ``datasets``."""
        pairs = []
        for d in datasets:
            other = b if isinstance(b, str) else b[d]
            pairs.append((self.result(a, d).scores.per_query_ndcg_at_10,
                          self.result(other, d).scores.per_query_ndcg_at_10))
        return paired_bootstrap(pairs)

    def best_single(self, dataset: str) -> str:
        """The best of base, bm25 and hybrid:base on ``dataset`` (test): what a router must not fall below."""
        present = [s for s in SINGLE if self.result(s, dataset) is not None]
        return max(present, key=lambda s: self.result(s, dataset).scores.ndcg_at_10)

    def score(self, system: str, dataset: str) -> float | None:
        found = self.result(system, dataset)
        return None if found is None else found.scores.ndcg_at_10

    def systems(self) -> list[str]:
        return list(dict.fromkeys(r.system for r in self.results))

    def routing(self) -> dict:
        """Per routed system: accuracy (share of queries answered by a system built on their own dataset's
        expert: the expert or its hybrid) and confusion counts (dataset -> chosen system)."""
        out = {}
        for system in [*ROUTED, DEFAULT, *ORACLES]:
            confusion, right, total = {}, 0, 0
            for r in self.results:
                if r.system != system or r.chosen is None:
                    continue
                counts = Counter(r.chosen.values())
                confusion[r.dataset] = dict(sorted(counts.items()))
                own = self.experts.get(r.dataset)
                if own is not None:
                    right += sum(n for chosen, n in counts.items() if dense_part(chosen) == own)
                    total += sum(counts.values())
            if confusion:
                out[system] = {"accuracy": round(right / total, 4) if total else None, "confusion": confusion}
        return out


def _table(header: list[str], rows: list[list[str]]) -> str:
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def check_plot_path(path: str | Path) -> Path:
    """A path ``plot_confusion`` can write: a file (``check_output_file``) of a type matplotlib saves, by its
    extension."""
    from matplotlib.backend_bases import FigureCanvasBase

    types = FigureCanvasBase.get_supported_filetypes()
    suffix = Path(path).suffix.lower()
    if suffix[1:] not in types:
        raise ValueError(f"cannot plot to {path}: {f'{suffix!r} is not' if suffix else 'no extension names'} an "
                         f"image type matplotlib writes ({', '.join(f'.{t}' for t in sorted(types))})")
    return check_output_file(path)


def write_report(comparison: Comparison, markdown_path: Path | None = None, plot_path: Path | None = None) -> str:
    """Markdown: the paper-style table (nDCG@10 x100), no-expert datasets, expert matrix, routing. Optional plot
    (any type ``check_plot_path`` allows). Both paths are checked before either is written."""
    if markdown_path is not None:
        check_output_file(markdown_path)
    if plot_path is not None:
        check_plot_path(plot_path)
    c = comparison
    systems = c.systems()
    per_expert = [s for s in systems if s.startswith("expert:") or (s.startswith(HYBRID) and s not in SINGLE)]
    main_systems = [s for s in systems if s not in per_expert]
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
    experts = [s for s in systems if s in per_expert or s in (BASE_EXPERT, MULTITASK, *SINGLE)]
    rows = [[s, *[_fmt(c.score(s, d)) for d in c.eval_datasets]] for s in experts]
    parts.append("### Every expert and hybrid on every dataset: test nDCG@10 (x100)\n\n"
                 + _table(["system", *c.eval_datasets], rows))
    if c.default is not None and c.result(DEFAULT, c.eval_datasets[0]) is not None:
        parts.append(_default_section(c, in_domain, other))
    routing = c.routing()
    if routing:
        columns = sorted({e for r in routing.values() for counts in r["confusion"].values() for e in counts})
        acc_rows = [[s, "—" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%"] for s, r in routing.items()]
        parts.append("### Routing accuracy (test queries answered by their own dataset's expert or its hybrid)\n\n"
                     + _table(["system", "accuracy"], acc_rows))
        for system in ("pilot",) if "pilot" in routing else ():
            confusion = routing[system]["confusion"]
            rows = [[d, *[str(counts.get(e, 0)) for e in columns]] for d, counts in confusion.items()]
            parts.append(f"### {system}: dataset -> chosen system (test queries)\n\n"
                         + _table(["dataset", *columns], rows))
    if c.refused:
        parts.append("Refused by the self-check (no expert; nDCG@10 gain over the base on pseudo-queries from "
                     "documents it did not train on, 95% interval, and what its lower end must exceed): "
                     + ", ".join(f"{d} {_interval((r['gain'], *r['interval']))}, needs > {100 * r['margin']:+.2f}"
                                 for d, r in c.refused.items()))
    parts.append("Wall time (s): " + ", ".join(f"{k} {v}" for k, v in c.seconds.items()))
    text = "\n\n".join(parts) + "\n"
    if markdown_path is not None:
        with atomic_file(markdown_path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    if plot_path is not None and "pilot" in routing:
        confusion = routing["pilot"]["confusion"]
        plot_confusion(confusion, plot_path, confusion_title("pilot", confusion, c.default))
    return text


def _interval(diff: tuple[float, float, float]) -> str:
    observed, low, high = (100 * v for v in diff)
    return f"{observed:+.2f} [{low:+.2f}, {high:+.2f}]"


def _default_section(c: Comparison, in_domain: list[str], other: list[str]) -> str:
    """The default router (chosen on the routing folds), against every other router and the best untrained
    single system per dataset: paired-bootstrap 95% intervals on test, nDCG@10 x100."""
    lines = [f"### The default router: {c.default} (chosen on the routing folds)\n"]
    folds = [[kind, *[f"{100 * value:+.2f}" if isinstance(value := (gain or {}).get(k), int | float) else "—"
                      for k in ("in-domain", "left out", "mean")]] for kind, gain in c.fold_gains.items()]
    lines.append("Mean nDCG@10 gain over the base on the routing folds (training queries), x100:\n\n"
                 + _table(["router", "in-domain", "left out", "mean"], folds))
    rows = []
    for d in [*in_domain, *other]:
        best = c.best_single(d)
        rows.append([d, f"{best} {_fmt(c.score(best, d))}", _fmt(c.score(DEFAULT, d)),
                     _interval(c.bootstrap(DEFAULT, best, [d])), _interval(c.bootstrap(DEFAULT, BASE_EXPERT, [d]))])
    if in_domain:
        per_dataset = {d: c.best_single(d) for d in in_domain}
        average = float(np.mean([c.score(DEFAULT, d) for d in in_domain]))
        rows.append(["expert domains (avg)", "best per dataset", _fmt(average),
                     _interval(c.bootstrap(DEFAULT, per_dataset, in_domain)),
                     _interval(c.bootstrap(DEFAULT, BASE_EXPERT, in_domain))])
    lines.append("Default against the best of base, bm25 and hybrid:base on each dataset, and against the base "
                 "(paired bootstrap, 95%):\n\n" + _table(["dataset", "best single system", "default",
                                                          "default - best [95% CI]", "default - base [95% CI]"],
                                                         rows))
    if in_domain:
        rows = [[kind, _interval(c.bootstrap(DEFAULT, kind, in_domain))] for kind in ROUTED if kind != c.default]
        rows += [[s, _interval(c.bootstrap(DEFAULT, s, in_domain))] for s in SINGLE]
        lines.append("Default against every other router and single system, expert-domain average "
                     "(paired bootstrap, 95%):\n\n" + _table(["other", "default - other [95% CI]"], rows))
    return "\n\n".join(lines)


def confusion_title(system: str, confusion: dict[str, dict[str, int]], default: str | None = None) -> str:
    """What a routing-confusion figure shows: which router, over which systems, and what a cell is."""
    chosen = {e for counts in confusion.values() for e in counts}
    over = "dense experts, BM25 and hybrids" if any(is_lexical(e) for e in chosen) else "dense experts"
    role = " (the default router)" if system == default else ""
    return f"{system} router over {over}{role}:\nshare of each dataset's test queries sent to each system (%)"


def plot_confusion(confusion: dict[str, dict[str, int]], path: Path, title: str) -> list[str]:
    """The confusion (dataset -> chosen system -> queries) as row percentages, trimmed to its content. A system
    whose every cell would show 0 (under 0.5% of every dataset's queries) gets no column; the figure names the
    systems left out. Returns the systems shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(confusion)
    cols = sorted({e for counts in confusion.values() for e in counts})
    matrix = np.array([[confusion[r].get(e, 0) for e in cols] for r in rows], dtype=float)
    share = matrix / matrix.sum(axis=1, keepdims=True)
    visible = (np.round(100 * share) > 0).any(axis=0)
    visible = visible if visible.any() else np.ones_like(visible)
    left_out = [e for e, keep in zip(cols, visible, strict=True) if not keep]
    cols, share = [e for e, keep in zip(cols, visible, strict=True) if keep], share[:, visible]
    fig, ax = plt.subplots(figsize=(0.6 * len(cols) + 1, 0.45 * len(rows) + 0.6))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, f"{100 * share[i, j]:.0f}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=8)
    ax.set_xlabel("chosen system" + ("" if not left_out else "\n(not shown, under 0.5% of every dataset's "
                                     f"queries: {', '.join(left_out)})"), fontsize=9)
    ax.set_ylabel("test queries of dataset")
    ax.set_title(title, fontsize=10, loc="left")
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    return cols
