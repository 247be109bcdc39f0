"""What every script here shares: the data and cache options (the CLI's defaults), opening datasets with their
cached indexes, and the routing data of a router directory. Scripts import only the packages' public API."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with ``--data-dir`` and ``--cache-dir``, defaulting as the CLI does
    (``$ROUTERRETRIEVER_DATA_DIR``; ``$ROUTERRETRIEVER_CACHE_DIR``, else ``~/.cache/routerretriever``)."""
    from retriever import default_cache_dir

    result = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    result.add_argument("--data-dir", help="BEIR datasets [default: $ROUTERRETRIEVER_DATA_DIR]")
    result.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                        help="index cache [default: %(default)s]")
    return result


def open_indexed(args, names, encoder) -> tuple[dict, dict]:
    """``({name: dataset}, {name: cached corpus index})`` for ``names``, indexing what is not cached yet."""
    from eval import open_dataset
    from retriever import ensure_index

    opened = {name: open_dataset(args.data_dir, name) for name in names}
    return opened, {name: ensure_index(ds, encoder, args.cache_dir) for name, ds in opened.items()}


def cached(path: Path | None, compute) -> dict:
    """The JSON object kept in ``path`` (``--cache``), or ``compute()``'s, written there when ``path`` is given."""
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    data = compute()
    if path is not None:
        path.write_text(json.dumps(data))
    return data


def synchronizer(device: str | None):
    """A function that waits for ``device``'s queued kernels (a no-op off CUDA), for honest clock readings."""
    if device is None or not str(device).startswith("cuda"):
        return lambda: None
    import torch

    return lambda: torch.cuda.synchronize(device)


def fit_option(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` with a JSON value (a plain string otherwise), for ``--option``."""
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
    from experts import cached_routing_data
    from retriever import ROUTERS, RouterDirectory, load_encoder

    parser.add_argument("router_dir", type=Path)
    parser.add_argument("kinds", nargs="*", metavar="KIND", help=f"routers: {', '.join(ROUTERS)}")
    args = parser.parse_args()
    for kind in args.kinds:  # not argparse choices: with nargs='*' Python 3.11 rejects an empty list
        if kind not in ROUTERS:
            parser.error(f"unknown router {kind!r}; available: {', '.join(ROUTERS)}")
    store = RouterDirectory(args.router_dir, load_encoder().info)
    data = cached_routing_data(store, store.load_router("pilot").info["datasets"])
    return args, args.kinds or default_kinds, data


def left_out_summary(rows: list[dict]) -> dict:
    """What a leave-one-domain-out script prints after its rows (each with ``left_out``, ``routed``, ``base``,
    ``bm25``, ``hybrid:base`` and ``minus_base`` = [diff, low, high]): the means, the worst case against the base,
    and the datasets significantly below it."""
    import numpy as np

    return {"left_out_datasets": len(rows),
            **{f"mean_{s}": round(float(np.mean([r[s] for r in rows])), 2) for s in ("routed", "base", "bm25",
                                                                                     "hybrid:base")},
            "worst_minus_base": min((r["minus_base"][0], r["left_out"]) for r in rows),
            "significantly_below_base": [r["left_out"] for r in rows if r["minus_base"][2] < 0]}
