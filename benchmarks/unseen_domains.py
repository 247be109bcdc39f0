"""A domain with no expert, on training queries: each dataset left out together with its expert (and every system
using it), the saved router's kind refitted on the rest with its saved fit options, and its saved novelty
threshold and default system applied to the left-out queries (``retriever.routers.fold_gains``' "left out"
setting; never test queries). Prints the mean nDCG@10 gain over the base per left-out dataset (x100), with and
without the novelty fallback, and the share of queries it sent to the default system.

Usage: ``python benchmarks/unseen_domains.py ROUTER_DIR [--router NAME]`` (default: the directory's default router)
"""

from __future__ import annotations

import json

import common
import numpy as np

NOT_FIT_OPTIONS = ("fallback", "min_confidence", "novelty", "min_similarity", "default")


def main() -> None:
    from experts import cached_routing_data
    from retriever import ROUTERS, RouterDirectory, fold_gains, load_encoder

    parser = common.parser(__doc__)
    parser.add_argument("router_dir")
    parser.add_argument("--router", help="a built router [default: the directory's default]")
    args = parser.parse_args()
    store = RouterDirectory(args.router_dir, load_encoder().info)
    saved = store.load_router(args.router or store.default_router())
    info = saved.info
    data = cached_routing_data(store, info["datasets"], info.get("lexical_keys"), info.get("fusion", "convex"))
    options = {k: v for k, v in saved.options.items() if k not in NOT_FIT_OPTIONS}
    confidence, similarity, gain, names, rows = fold_gains(ROUTERS[saved.name], data, options)["left out"]
    default = saved.options.get("default", "base")
    back = (similarity < saved.options.get("min_similarity", 0.0)) | \
        (confidence < saved.options.get("min_confidence", 0.0))
    fallen = data.scores[rows, data.experts.index(default)] - data.scores[rows, data.experts.index("base")]
    kept = np.where(back, fallen, gain)
    for name in np.unique(names):
        mine = names == name
        print(json.dumps({"left_out": str(name), "router": saved.name, "queries": int(mine.sum()),
                          "gain_x100": round(100 * float(kept[mine].mean()), 2),
                          "gain_x100_without_fallback": round(100 * float(gain[mine].mean()), 2),
                          "to_default": default, "share_to_default": round(float(back[mine].mean()), 3)}))


if __name__ == "__main__":
    main()
