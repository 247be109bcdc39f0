"""Compare routers on a router directory's routing data (training queries only, never test): mean nDCG@10 gain
over the base model on queries each router did not see, in-domain (two folds) and with each dataset left out
together with its expert (``retriever.routers.fold_gains``, the folds ``--fallback auto`` and ``--novelty auto``
are calibrated on); routers with reference vectors also with the novelty threshold calibrated there.

Usage: ``python benchmarks/router_folds.py ROUTER_DIR [KIND ...] [--option NAME=VALUE ...]`` (default kinds: pilot
classifier dataset), for the datasets the router directory's saved routers were built from; ``--option`` passes
a fit option to every router named (e.g. ``--option clusters=4 --option seed=1`` for k-means pilots).
"""

from __future__ import annotations

import argparse
import json

import common


def main() -> None:
    from retriever import ROUTERS, SIMILARITIES, best_threshold, fold_gains, fold_score, novelty_kinds

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--option", type=common.fit_option, action="append", default=[], metavar="NAME=VALUE")
    args, kinds, data = common.routing_arguments(parser, ["pilot", "classifier", "dataset"])
    options = dict(args.option)
    for kind in kinds:
        parts = fold_gains(ROUTERS[kind], data, options)
        gains = {f"{setting} gain x100": round(100 * fold_score(parts, setting), 2) for setting in parts}
        print(json.dumps({"router": kind, **options, **gains}), flush=True)
        if kind in novelty_kinds():  # with the novelty fallback that build_router calibrates by default
            t = best_threshold(parts, "similarity", SIMILARITIES)
            print(json.dumps({"router": kind, **options, "novelty": t, **{
                f"{setting} gain x100": round(100 * fold_score(parts, setting, t, "similarity"), 2)
                for setting in parts}}), flush=True)


if __name__ == "__main__":
    main()
