"""The expert workflows: ``train-expert`` (train one, save it, refit the routers already built), ``experts remove``
(remove one and refit without it), ``experts list`` and ``experts export``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from eval.data import Dataset, open_dataset
from experts.pairs import anchor_texts
from experts.routing import refit_sources, refresh_routers
from experts.train import TrainConfig, TrainedExpert, heldout_split, train_expert
from experts.workflows.common import opener, reopen_named_index
from retriever.encoding.encoder import Encoder, load_encoder
from retriever.encoding.expert_encoder import MultiExpertEncoder
from retriever.index.backends import FaissBackend, IndexBackend
from retriever.index.base import IndexConfig
from retriever.index.faiss_index import CorpusIndex
from retriever.routers.directory import RouterDirectory, validate_name

__all__ = ["add_expert", "check_anchors", "check_new", "check_refit_data", "describe_experts", "expert_records",
           "export_expert_model", "remove_expert", "save_and_refit", "train_anchored", "train_and_save"]


def _check_training_request(name: str, dataset: Dataset, split: str, config: TrainConfig,
                            anchor_sets: Sequence[Dataset]) -> None:
    validate_name(name)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (TrainConfig.from_fields takes a dict), got {config!r}")
    if split == "test":
        raise ValueError("experts are never trained on the test split")
    heldout_split(dataset, sorted(dataset.doc_ids()), split, config)  # an unknown split, too few queries fail here
    check_anchors(dataset.name, config, anchor_sets)


def check_anchors(own: str, config: TrainConfig, anchor_sets: Sequence[Dataset]) -> None:
    """Anchor datasets go with an anchor weight > 0, and never include the expert's own dataset ``own``."""
    if bool(anchor_sets) != (config.anchor_weight > 0):
        raise ValueError(f"an anchor weight > 0 (got {config.anchor_weight}) and anchor datasets (--anchor-dataset) "
                         "go together")
    if own in {other.name for other in anchor_sets}:
        raise ValueError(f"anchor dataset {own!r} is the expert's own dataset")


def check_new(store: RouterDirectory, name: str, overwrite: bool) -> None:
    """Refuse to replace expert ``name`` without ``overwrite``, before any corpus is encoded."""
    if name in store.expert_names() and not overwrite:
        raise FileExistsError(f"expert {name!r} already exists in {store.root}; pass --overwrite to replace it")


def train_and_save(store: RouterDirectory, name: str, dataset: Dataset, index: CorpusIndex, encoder: Encoder,
                   config: TrainConfig, split: str = "train", anchor_sets: Sequence[Dataset] = (),
                   overwrite: bool = False, progress: bool = False) -> TrainedExpert:
    """Train expert ``name`` on ``dataset``'s ``split`` against ``index`` (anchored on ``anchor_sets``' texts when
    ``config.anchor_weight > 0``) and save it into the router directory."""
    _check_training_request(name, dataset, split, config, anchor_sets)
    check_new(store, name, overwrite)
    trained = train_anchored(dataset, index, encoder, config, split, anchor_sets, progress)
    store.save_expert(name, trained.write, trained.meta(), overwrite=overwrite)
    return trained


def train_anchored(dataset, index, encoder, config, split, anchor_sets, progress) -> TrainedExpert:
    """Train (in memory) once the request is checked, anchored on ``anchor_sets``' texts (``check_anchors``)."""
    anchors = anchor_texts(anchor_sets, documents=config.anchor_documents) if anchor_sets else []
    return train_expert([(dataset, index)], encoder, config, split, anchors=anchors, progress=progress)


def add_expert(router_dir: str | os.PathLike, data_dir, cache_dir, dataset: str, name: str, config: TrainConfig,
               split: str = "train", anchor_datasets: Sequence[str] = (), model: str | None = None,
               index_type: str = "flat", overwrite: bool = False, progress: bool = False,
               backend: IndexBackend | None = None) -> tuple[Path, TrainedExpert, list[str]]:
    """``train-expert``: train one expert, then save it and refit the routers already built in the router
    directory so they can choose it (nothing else is retrained), as one change (``RouterDirectory.
    changing_expert``): if the routers cannot be refitted, the experts are as they were. Everything the refit
    reads (the routers' datasets under ``data_dir``) is checked before training. Returns ``(expert path,
    trained, refitted routers)``."""
    ds = open_dataset(data_dir, dataset)
    anchor_sets = [open_dataset(data_dir, other) for other in dict.fromkeys(anchor_datasets)]  # unknown names fail
    _check_training_request(name, ds, split, config, anchor_sets)  # before any model loads
    index_config = IndexConfig(index_type=index_type)
    encoder = load_encoder(model)
    store = RouterDirectory(router_dir, encoder.info, create=True)
    check_new(store, name, overwrite)  # before any corpus is encoded
    backend = backend or FaissBackend(cache_dir)
    check_refit_data(store, data_dir, backend)
    index, _ = backend.ensure(ds, encoder, index_config, progress=progress)
    trained = train_anchored(ds, index, encoder, config, split, anchor_sets, progress)
    refitted = save_and_refit(store, name, trained, trained.meta(), data_dir, backend, encoder, index_type, progress)
    return store.expert_path(name), trained, refitted


def check_refit_data(store: RouterDirectory, data_dir, backend: IndexBackend) -> None:
    """Refuse, before any training, a new expert the routers already built could not be refitted with: each
    dataset they were built on must be readable with its training judgments (its corpus, if they were fitted on
    its pseudo-queries), and each named index they were built on must still open through ``backend`` as recorded."""
    for (other, _), (judged, index) in refit_sources(store).items():
        try:
            if index is not None:
                reopen_named_index(backend, other, index)
                continue
            ds = open_dataset(data_dir, other, judged=judged)
            if judged:
                ds.qrels("train")
        except (ValueError, OSError) as err:
            what = f"index {index['target']}" if index is not None else f"dataset {other!r}"
            raise ValueError(f"the routers in {store.root} were built on {what}, which adding an expert refits them "
                             f"on: {err}") from None


def save_and_refit(store: RouterDirectory, name: str, trained: TrainedExpert, meta: dict, data_dir,
                   backend: IndexBackend, encoder: Encoder, index_type: str, progress: bool) -> list[str]:
    """Save a trained expert and refit the routers already built so they can choose it, as one change
    (``RouterDirectory.changing_expert``): if the routers cannot be refitted, the experts are as they were.
    Returns the refitted routers."""
    with store.changing_expert(name):
        store.save_expert(name, trained.write, meta)
        refitted = []
        if store.built_routers():  # fold the new expert into the routers already built
            routed = store.load_into(MultiExpertEncoder(encoder))
            refitted = refresh_routers(store, routed, opener(data_dir, backend, encoder, index_type, progress),
                                       progress=progress)
    return refitted


def remove_expert(router_dir: str | os.PathLike, name: str, model: str | None = None) -> list[str]:
    """``experts remove``: remove expert ``name`` and refit the routers built in the router directory without it,
    as one change: if they cannot be refitted (their cached routing data is missing or damaged, say), nothing is
    removed. Returns the refitted routers."""
    store = RouterDirectory(router_dir, load_encoder(model).info)
    store.expert_path(name)  # an unknown name fails here, naming the experts
    try:
        with store.changing_expert(name):
            return refresh_routers(store)
    except ValueError as err:
        raise ValueError(f"expert {name!r} was not removed: the routers in {store.root} cannot be refitted without "
                         f"it: {err}") from None


def expert_records(router_dir: str | os.PathLike, model: str | None = None) -> list[dict]:
    """``experts list --json``: per expert, its name, domain, held-out nDCG@10 of the base and of the expert (None
    where not recorded), training seconds, the base model it was trained on and whether that is the loaded one."""
    store = RouterDirectory(router_dir, load_encoder(model).info)
    records = []
    for name in store.expert_names():
        info = store.expert_info(name)
        metrics, training = info.get("metrics", {}), info.get("training", {})
        records.append({"name": name, "domain": info.get("domain"),
                        **{key: metrics.get(key) for key in ("heldout_base_ndcg@10", "heldout_ndcg@10")},
                        "seconds": training.get("seconds"), "base_model": info["base_model"],
                        "matches_base": store.matches_base(name), "loaded_base": store.base.id})
    return records


def describe_experts(records: list[dict]) -> list[str]:
    """``experts list``: one line per expert record (``expert_records``): name, domain, held-out nDCG@10 (base ->
    expert), training time, and a warning where it was trained on another base model."""
    lines = []
    for record in records:
        scores = [record[key] for key in ("heldout_base_ndcg@10", "heldout_ndcg@10")]
        held_out = " -> ".join(f"{v:.4f}" if isinstance(v, int | float) else "?" for v in scores)
        base = record["base_model"]
        mismatch = "" if record["matches_base"] else (
            f"\tBASE MODEL MISMATCH: trained on {base['id']!r} (fingerprint {base['fingerprint'][:12]}), not the "
            f"loaded {record['loaded_base']!r}")
        lines.append(f"{record['name']}\t{record['domain'] or '?'}\theld-out nDCG@10 {held_out}\t"
                     f"{'?' if record['seconds'] is None else record['seconds']}s" + mismatch)
    return lines


def export_expert_model(router_dir: str | os.PathLike, name: str, output: str | os.PathLike,
                        overwrite: bool = False, model: str | None = None) -> Path:
    """``experts export``: expert ``name`` as a plain sentence-transformers model (LoRA merged) at ``output``."""
    from experts.export import export_expert

    base = load_encoder(model)
    export_expert(RouterDirectory(router_dir, base.info), name, base, output, overwrite=overwrite)
    return Path(output)
