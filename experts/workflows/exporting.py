"""``export``: a router directory's router and the experts it routes to as one sentence-transformers model directory
(``experts.export.export_routed``; ``experts export`` writes one expert, ``expert_store.export_expert_model``)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["export_routed_model"]


def export_routed_model(router_dir: str | os.PathLike, output: str | os.PathLike, routing: str = "default",
                        overwrite: bool = False, model: str | None = None) -> Path:
    """``export``: router ``routing`` of ``router_dir`` (``default``: the directory's default router) and its experts
    as one sentence-transformers model at ``output`` (``retriever.adapters.st_model.RoutedEncoder``): queries are
    routed as ``RouterRetriever`` routes them, documents encoded by the base model. Nothing is written when the router
    directory is damaged or an expert is missing; ``overwrite`` replaces only an earlier export."""
    from experts.export import export_routed

    return export_routed(router_dir, output, routing, model=model, overwrite=overwrite)
