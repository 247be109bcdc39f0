"""Probe: is the base model decided on a corpus? Label-free signals of the base's own score distribution, per
dataset, beside what fusing BM25 gains there (issue #24's next step: the agreement BM25 needs before it is trusted
rises with the base's quality, which no label-free signal estimated so far).

For each dataset's routing sample of *training* queries (at most 500, seed 0; never test): the base's top 100
cosine scores per query, and their mean top-1 score, the gaps top-1 minus top-2 and minus top-10, ``breadth`` (how
many documents score within 0.05 of the top one) and NQC (their standard deviation over their mean); beside them,
from ``probe_lexical_trust.py``'s cache (``--lexical-cache``, unstressed rows), the base's, BM25's and the hybrid's
(dense weight 0.6) nDCG@10 and the mean top agreement. Then a per-query gate on the base's decisiveness: fuse
(weight 0.6) only the queries whose top-1 minus top-10 gap (``retriever.ranking.unfamiliar.base_gap``, on the
rankings search returns: ArguAna's self-hits removed) is below ``--gate`` (each value given), else the base; its gain
over the base per dataset and stress level of ``probe_lexical_trust.py`` (BM25 made unhelpful), applied as
``auto:base`` does (only where the stressed BM25 is not trusted), and the worst cost on the stresses as severe as
issue #24's held-back corpus A (where the ungated hybrid loses 4-9 points); and each dataset's and stress level's
agreement over the queries at or above the gate only (``decided_agreement``). Prints one JSON line per dataset, then
one per gate value. Usage::

    python benchmarks/probe_base_decisiveness.py --lexical-cache /work/probe-lexical.json
"""

from __future__ import annotations

import json
from pathlib import Path

import common
import numpy as np
from probe_lexical_trust import DATASETS


def main() -> None:
    from experts import routing_sample
    from retriever import load_encoder, search
    from retriever.ranking.unfamiliar import PRIOR_QUERIES, base_gap, trusts_lexical

    parser = common.parser(__doc__)
    parser.add_argument("--lexical-cache", type=Path, required=True, help="probe_lexical_trust.py's --cache file")
    parser.add_argument("--gate", type=float, action="append", default=None,
                        help="gap thresholds of the per-query gate (repeatable) [default: 0.06-0.12]")
    args = parser.parse_args()
    args.gate = args.gate or [0.06, 0.07, 0.08, 0.10, 0.12]
    rows = json.loads(args.lexical_cache.read_text())["rows"]
    encoder = load_encoder()
    opened, indexes = common.open_indexed(args, DATASETS, encoder)
    gaps = {}
    for name in DATASETS:
        qids, texts, _ = routing_sample(opened[name], indexes[name])  # the same queries, in the same order, as the rows
        ranked = search(indexes[name], encoder.encode(texts), qids, k=100)
        scores = np.array([list(ranked[q].values()) for q in qids])
        gaps[name] = np.array([base_gap(ranked[q]) for q in qids])
        mine = np.array([r["scores"] for r in rows if r["dataset"] == name and r["stress"] == "none"])
        agreement = [r["agreement"] or 0.0 for r in rows if r["dataset"] == name and r["stress"] == "none"]
        print(json.dumps({
            "dataset": name, "queries": len(texts), "base": round(100 * mine[:, -1].mean(), 1),
            "bm25": round(100 * mine[:, 0].mean(), 1),
            "hybrid_gain": round(100 * (mine[:, 6].mean() - mine[:, -1].mean()), 2),
            "agreement": round(float(np.mean(agreement)), 3), "top1": round(float(scores[:, 0].mean()), 3),
            "gap_1_2": round(float((scores[:, 0] - scores[:, 1]).mean()), 3),
            "gap_1_10": round(float((scores[:, 0] - scores[:, 9]).mean()), 3),
            "breadth": round(float((scores >= scores[:, :1] - 0.05).sum(axis=1).mean()), 1),
            "nqc": round(float((scores.std(axis=1) / np.abs(scores.mean(axis=1))).mean()), 3)}), flush=True)
    stresses = list(dict.fromkeys(r["stress"] for r in rows))
    for gate in args.gate:
        gains, severe, decided = {}, [], {}
        for name in DATASETS:
            for stress in stresses:
                picked = [r for r in rows if r["dataset"] == name and r["stress"] == stress]
                mine = np.array([r["scores"] for r in picked])
                trusted = trusts_lexical(r["agreement"] for r in picked)
                gated = mine[:, 6] if trusted else np.where(gaps[name] < gate, mine[:, 6], mine[:, -1])
                gains[f"{name}/{stress}"] = gain = round(100 * (gated.mean() - mine[:, -1].mean()), 2)
                # agreement over the decided queries only, with the same prior as trusts_lexical (not adopted: §18)
                kept = [r["agreement"] for r, gap in zip(picked, gaps[name], strict=True)
                        if gap >= gate and r["agreement"] is not None]
                decided[f"{name}/{stress}"] = round(sum(kept) / (len(kept) + PRIOR_QUERIES), 3)
                hybrid_loss = 100 * (mine[:, -1].mean() - mine[:, 6].mean())
                if stress != "none" and not trusted and 4 <= hybrid_loss <= 9 and name != "aila2019-statutes":
                    severe.append((gain, f"{name}/{stress}"))
        print(json.dumps({"gate": gate, "gain_over_base": gains, "worst_like_corpus_a": min(severe, default=None),
                          "decided_agreement": decided}), flush=True)


if __name__ == "__main__":
    main()
