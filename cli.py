"""``routerretriever`` command line: a thin click layer over the library's public API."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path

import click

DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "routerretriever"
CACHE_DIR_ENV = "ROUTERRETRIEVER_CACHE_DIR"
DATA_DIR_ENV = "ROUTERRETRIEVER_DATA_DIR"  # eval.data.DATA_DIR_ENV; repeated so --help needs no heavy import
INDEX_TYPES = ("flat", "hnsw", "ivf")  # retriever.index.IndexType, checked in tests


class UserErrorGroup(click.Group):
    """Turns the library's user-facing errors into one-line messages and a non-zero exit."""

    def invoke(self, ctx):
        from retriever.artifacts import ArtifactError

        try:
            return super().invoke(ctx)
        except (ArtifactError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
            raise click.ClickException(str(err)) from None


def data_dir_option(func):
    return click.option(
        "--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar=DATA_DIR_ENV,
        help=f"Directory of BEIR-layout datasets [env: {DATA_DIR_ENV}].",
    )(func)


def model_options(func):
    @click.option("--model", default="all-MiniLM-L6-v2", show_default=True,
                  help="Base model: the packaged name or a local sentence-transformers directory.")
    @click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar=CACHE_DIR_ENV,
                  default=DEFAULT_CACHE_DIR, show_default=True,
                  help=f"Where corpus indexes are cached [env: {CACHE_DIR_ENV}].")
    @click.option("--index-type", type=click.Choice(INDEX_TYPES), default="flat", show_default=True,
                  help="flat = exact inner product; hnsw and ivf are approximate.")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


@click.group(cls=UserErrorGroup)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Route search queries to domain-expert embedding models over one shared FAISS index."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = {"progress": not quiet}
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # per-model "Loading weights" bars are noise in a CLI


@main.command()
@data_dir_option
@click.option("--dataset", required=True, help="Dataset name under the data directory.")
@model_options
@click.option("--output", type=click.Path(file_okay=False, path_type=Path),
              help="Write the index here instead of the cache.")
@click.option("--overwrite", is_flag=True, help="Replace an existing index at --output.")
@click.pass_obj
def index(obj, data_dir, dataset, model, cache_dir, index_type, output, overwrite):
    """Encode a dataset's corpus with the base model and save a FAISS index."""
    from eval.data import open_dataset
    from retriever.artifacts import sha256_file
    from retriever.encoder import load_encoder
    from retriever.index import IndexConfig, build_index, ensure_index

    ds = open_dataset(data_dir, dataset)
    config = IndexConfig(index_type=index_type)
    if output is not None and output.exists() and not overwrite:
        raise click.UsageError(f"{output} already exists; pass --overwrite to replace it")
    encoder = load_encoder(model)
    if output is None:
        built = ensure_index(ds, encoder, cache_dir, config, progress=obj["progress"])
    else:
        source = {"dataset": ds.name, "corpus": str(ds.corpus_path), "corpus_sha256": sha256_file(ds.corpus_path)}
        built = build_index(ds, encoder, output, config, progress=obj["progress"], source=source)
    click.echo(f"{built.path}\t{len(built)} documents\t{config.index_type.value}\t{encoder.info.id}")


def _read_queries(path: Path) -> dict[str, str]:
    from eval.data import load_queries

    if path.suffix == ".jsonl":
        return load_queries(path)
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return {f"q{i}": line for i, line in enumerate((line for line in lines if line), start=1)}


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="An index directory written by `routerretriever index`.")
@click.option("--query", "query_texts", multiple=True, help="A query (repeatable).")
@click.option("--queries", "queries_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Queries: BEIR queries.jsonl, or plain text with one query per line.")
@click.option("--model", default="all-MiniLM-L6-v2", show_default=True, help="Base model (must match the index).")
@click.option("-k", "--top-k", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def search(index_dir, query_texts, queries_file, model, top_k, as_json):
    """Search an index with the base model."""
    from retriever.encoder import load_encoder
    from retriever.index import CorpusIndex
    from retriever.search import search as run_search

    queries = {f"q{i}": text for i, text in enumerate(query_texts, start=1)}
    if queries_file is not None:
        queries.update(_read_queries(queries_file))
    if not queries:
        raise click.UsageError("give at least one --query or a --queries file")
    encoder = load_encoder(model)
    corpus_index = CorpusIndex.load(index_dir, encoder.info)
    query_ids = list(queries)
    results = run_search(corpus_index, encoder.encode([queries[q] for q in query_ids]), query_ids, k=top_k)
    for query_id in query_ids:
        hits = list(results[query_id].items())
        if as_json:
            click.echo(json.dumps({"query_id": query_id, "query": queries[query_id],
                                   "hits": [{"doc_id": d, "score": s} for d, s in hits]}))
            continue
        click.echo(f"{query_id}: {queries[query_id]}")
        for rank, (doc_id, score) in enumerate(hits, start=1):
            click.echo(f"  {rank:>3}  {score:.4f}  {doc_id}")


def router_option(required: bool):
    return click.option("--router", type=click.Path(file_okay=False, path_type=Path), required=required,
                        help="Router directory (holds experts/<name>/ and router.json).")


def _load_experts(model, router, names=None, create=False):
    """The base model plus the named experts of ``router`` (all of them when ``names`` is None)."""
    from experts.store import ExpertStore
    from retriever.encoder import load_encoder
    from retriever.experts import MultiExpertEncoder

    encoder = MultiExpertEncoder(load_encoder(model))
    if router is not None and names != []:
        ExpertStore(router, encoder.info, create=create).load_into(encoder, names)
    return encoder


@main.command("train-expert")
@data_dir_option
@click.option("--dataset", required=True, help="Dataset whose training split teaches the expert.")
@click.option("--split", default="train", show_default=True, help="Training split (never test).")
@router_option(required=True)
@click.option("--name", required=True, help="Expert name: lowercase letters, digits, '-' and '_'.")
@click.option("--overwrite", is_flag=True, help="Replace an existing expert of this name.")
@model_options
@click.option("--epochs", type=click.IntRange(min=1), help="Maximum epochs (default: TrainConfig.epochs).")
@click.option("--learning-rate", type=float)
@click.option("--batch-size", type=click.IntRange(min=1))
@click.option("--temperature", type=float)
@click.option("--negatives", type=click.Choice(("corpus", "hard", "in-batch")),
              help="Softmax over the whole corpus (default), hard negatives, or in-batch only.")
@click.option("--seed", type=int)
@click.pass_obj
def train_expert(obj, data_dir, dataset, split, router, name, overwrite, model, cache_dir, index_type, **hyper):
    """Train a LoRA query expert on one dataset and save it into a router directory."""
    from eval.data import open_dataset
    from experts.store import ExpertStore, validate_name
    from experts.train import TrainConfig
    from experts.train import train_expert as train
    from retriever.encoder import load_encoder
    from retriever.index import IndexConfig, ensure_index

    validate_name(name)
    ds = open_dataset(data_dir, dataset)
    ds.qrels(split)
    if split == "test":
        raise click.UsageError("experts are never trained on the test split")
    encoder = load_encoder(model)
    store = ExpertStore(router, encoder.info, create=True)
    if name in store.names() and not overwrite:
        raise click.UsageError(f"expert {name!r} already exists in {router}; pass --overwrite to replace it")
    config = TrainConfig(**{key: value for key, value in hyper.items() if value is not None})
    index = ensure_index(ds, encoder, cache_dir, IndexConfig(index_type=index_type), progress=obj["progress"])
    trained = train([(ds, index)], encoder, config, split, progress=obj["progress"])
    path = store.save(name, trained.write, trained.meta(), overwrite=overwrite)
    click.echo(f"{path}\tbest epoch {trained.best_epoch}\theld-out nDCG@10 {trained.heldout_base_ndcg_at_10:.4f} -> "
               f"{trained.heldout_ndcg_at_10:.4f}\t{trained.seconds:.0f}s")


@main.group()
def experts():
    """List, remove and export the experts of a router directory."""


@experts.command("list")
@router_option(required=True)
@click.option("--model", default="all-MiniLM-L6-v2", show_default=True)
def experts_list(router, model):
    """One line per expert: name, domain, held-out nDCG@10 (base -> expert), training time."""
    from experts.store import ExpertStore
    from retriever.encoder import load_encoder

    store = ExpertStore(router, load_encoder(model).info)
    for name in store.names():
        info = store.info(name)
        metrics, training = info.get("metrics", {}), info.get("training", {})
        click.echo(f"{name}\t{info.get('domain', '?')}\theld-out nDCG@10 {metrics.get('heldout_base_ndcg@10', 0):.4f}"
                   f" -> {metrics.get('heldout_ndcg@10', 0):.4f}\t{training.get('seconds', '?')}s")


@experts.command("remove")
@router_option(required=True)
@click.argument("name")
@click.option("--model", default="all-MiniLM-L6-v2", show_default=True)
def experts_remove(router, name, model):
    """Remove one expert; the others are untouched."""
    from experts.store import ExpertStore
    from retriever.encoder import load_encoder

    ExpertStore(router, load_encoder(model).info).remove(name)
    click.echo(f"removed {name}")


@experts.command("export")
@router_option(required=True)
@click.argument("name")
@click.option("--output", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True)
@click.option("--model", default="all-MiniLM-L6-v2", show_default=True)
def experts_export(router, name, output, overwrite, model):
    """Write the expert as a plain sentence-transformers model (LoRA merged) for query encoding."""
    from experts.export import export_expert
    from experts.store import ExpertStore
    from retriever.encoder import load_encoder

    base = load_encoder(model)
    export_expert(ExpertStore(router, base.info), name, base, output, overwrite=overwrite)
    click.echo(str(output))



@main.command()
@data_dir_option
@click.option("--dataset", "datasets", multiple=True, required=True, help="Dataset name (repeatable).")
@click.option("--split", default="test", show_default=True)
@click.option("--system", default="base", show_default=True,
              help="What answers the queries: base, or expert:NAME (needs --router).")
@router_option(required=False)
@model_options
@click.option("--output-json", type=click.Path(dir_okay=False, path_type=Path),
              help='Write {"results": [...]} with one row per dataset.')
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write a TREC run file <dataset>.<split>.<system>.trec per dataset here.")
@click.pass_obj
def evaluate(obj, data_dir, datasets, split, system, router, model, cache_dir, index_type, output_json, run_dir):
    """Evaluate a system on datasets' test queries (nDCG@10, Recall@100, MAP@100, MRR@10)."""
    from eval.benchmark import evaluate_system, format_table, parse_system, write_results_json
    from eval.data import open_dataset
    from eval.metrics import write_trec_run
    from retriever.index import IndexConfig

    expert = parse_system(system)
    if expert != "base" and router is None:
        raise click.UsageError(f"--system {system} needs --router DIR (the router directory holding the expert)")
    opened = [open_dataset(data_dir, name) for name in datasets]  # fail fast, before any model loads
    for ds in opened:
        ds.qrels(split)
    encoder = _load_experts(model, router, [] if expert == "base" else [expert])
    config = IndexConfig(index_type=index_type)
    rows = []
    for ds in opened:
        result = evaluate_system(ds, split, system, encoder, cache_dir, config, progress=obj["progress"])
        rows.append(result)
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            tag = system.replace(":", "-")
            write_trec_run(result.results, run_dir / f"{ds.name}.{split}.{tag}.trec", tag=tag)
    click.echo(format_table(rows))
    if output_json is not None:
        write_results_json(rows, output_json)


if __name__ == "__main__":
    sys.exit(main())
