"""The comparison report: every system's rows on every dataset, routing accuracy and confusion, as markdown
tables and a PNG (``experts.workflows.run_comparison`` produces the ``Comparison``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.runs import MULTITASK, ORACLES, ROUTED, EvalResult
from retriever.artifacts import atomic_file
from retriever.expert_encoder import BASE_EXPERT

__all__ = ["Comparison", "plot_confusion", "write_report"]

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
