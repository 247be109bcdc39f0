"""Compare routers on a router directory's routing data (training queries only, never test): mean nDCG@10 gain
over the base model on queries each router did not see, in-domain (two folds) and with each dataset left out
together with its expert (``retriever.routers.fold_gains``, the folds ``--fallback auto`` and ``--novelty auto``
are calibrated on); routers with reference vectors also with the novelty threshold calibrated there.

Usage: ``python eval/router_folds.py ROUTER_DIR [KIND ...]`` (default kinds: pilot classifier dataset), for
the datasets the router directory's saved routers were built from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    from experts.routing import cached_routing_data
    from experts.store import ExpertStore
    from retriever.encoder import load_encoder
    from retriever.routers import ROUTERS, SIMILARITIES, best_threshold, fold_gains, fold_score, novelty_kinds

    if len(sys.argv) < 2:
        sys.exit(__doc__)
    root = Path(sys.argv[1])
    kinds = sys.argv[2:] or ["pilot", "classifier", "dataset"]
    info = json.loads((root / "routers" / "pilot" / "routing.json").read_text())["info"]
    data = cached_routing_data(ExpertStore(root, load_encoder().info), info["datasets"])
    for kind in kinds:
        parts = fold_gains(ROUTERS[kind], data, {})
        print(json.dumps({"router": kind, **{f"{setting} gain x100": round(100 * fold_score(parts, setting), 2)
                                             for setting in parts}}), flush=True)
        if kind in novelty_kinds():  # with the novelty fallback that build_router calibrates by default
            t = best_threshold(parts, "similarity", SIMILARITIES)
            print(json.dumps({"router": kind, "novelty": t, **{
                f"{setting} gain x100": round(100 * fold_score(parts, setting, t, "similarity"), 2)
                for setting in parts}}), flush=True)


if __name__ == "__main__":
    main()
