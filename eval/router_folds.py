"""Compare routers on a router directory's routing data (training queries only, never test): mean nDCG@10 gain
over the base model on queries each router did not see, in-domain (two folds) and with each dataset left out
together with its expert (``retriever.routers.fold_gains``, the folds ``--fallback auto`` and ``--novelty auto``
are calibrated on); routers with reference vectors also with the novelty threshold calibrated there.

Usage: ``python eval/router_folds.py ROUTER_DIR [KIND ...] [--option NAME=VALUE ...]`` (default kinds: pilot
classifier dataset), for the datasets the router directory's saved routers were built from; ``--option`` passes
a fit option to every router named (e.g. ``--option clusters=4 --option seed=1`` for k-means pilots).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _option(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def routing_arguments(parser: argparse.ArgumentParser, default_kinds: list[str]):
    """Add ROUTER_DIR and KIND... to ``parser``, parse, and load the routing data the router directory's saved
    pilot was built from: ``(args, kinds, data)``."""
    from experts.routing import cached_routing_data
    from retriever.encoder import load_encoder
    from retriever.router_dir import RouterDirectory
    from retriever.routers import ROUTERS

    parser.add_argument("router_dir", type=Path)
    parser.add_argument("kinds", nargs="*", metavar="KIND", help=f"routers: {', '.join(ROUTERS)}")
    args = parser.parse_args()
    for kind in args.kinds:  # not argparse choices: with nargs='*' Python 3.11 rejects an empty list
        if kind not in ROUTERS:
            parser.error(f"unknown router {kind!r}; available: {', '.join(ROUTERS)}")
    info = json.loads((args.router_dir / "routers" / "pilot" / "routing.json").read_text())["info"]
    data = cached_routing_data(RouterDirectory(args.router_dir, load_encoder().info), info["datasets"])
    return args, args.kinds or default_kinds, data


def main() -> None:
    from retriever.routers import ROUTERS, SIMILARITIES, best_threshold, fold_gains, fold_score, novelty_kinds

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--option", type=_option, action="append", default=[], metavar="NAME=VALUE")
    args, kinds, data = routing_arguments(parser, ["pilot", "classifier", "dataset"])
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
