"""``routerretriever`` command line: a thin click layer over the library's public API."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cli_options import (
    UserErrorGroup,
    backend_options,
    checked,
    checked_systems,
    corpus_options,
    data_dir_option,
    index_option,
    model_options,
    output_json_option,
    route_on_option,
    router_option,
    serve_options,
    usage,
)
from eval.report import check_plot_path
from eval.runs import SYSTEMS
from experts.config import Negatives, TrainConfig
from retriever.encoding.encoder import PRECISIONS
from retriever.ranking.systems import FUSIONS
from retriever.routers import UNFAMILIAR_POLICIES, buildable_kinds, novelty_kinds
from retriever.routers.pilot import PilotRouter
from retriever.routers.settings import parse_threshold
from retriever.storage.files import check_output_dir, check_output_file


@click.group(cls=UserErrorGroup)  # -v/-q: on the group and on every command (cli_options.VerbosityCommand)
@click.version_option(package_name="routerretriever", prog_name="routerretriever")
def main() -> None:
    """Route search queries to domain-expert embedding models over one shared FAISS index."""


@main.command()
@data_dir_option
@click.option("--dataset", help="Dataset name under the data directory (or --corpus).")
@corpus_options(required=False)
@model_options
@backend_options
@click.option("--output", help="FAISS: this directory instead of the cache (BM25: OUTPUT-bm25). Milvus: the "
                               "collection name [default: one per dataset and model].")
@click.option("--overwrite", is_flag=True, help="Replace an existing index at --output.")
@click.option("--no-lexical", is_flag=True, help="Skip the BM25 index (bm25 and hybrid systems need it).")
@click.option("--encoder", "encoder_kind", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Encode the corpus in this process, or on Ray actors (one model per worker).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Ray: encoder actors.")
@click.option("--ray-address", help="Ray: the cluster to join (ray://head:10001, auto) [default: a local one].")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Ray: GPUs per encoder actor (0: CPU).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="Corpus encoding: fp32, or bf16/fp16 under autocast (the fast GPU path; README).")
@click.option("--device", help="Local encoding on this torch device [default: sentence-transformers' choice].")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Local encoding: texts per encoder batch (a GPU takes 256 or more) [default: 32].")
@click.pass_obj
def index(obj, data_dir, dataset, corpus, model, cache_dir, index_type, backend, output, overwrite, no_lexical,
          encoder_kind, workers, ray_address, gpus_per_worker, precision, device, batch_size, **fields):
    """Encode a dataset's corpus or your collection file: a dense index, a BM25 index and the documents' text."""
    from experts.workflows.indexing import check_encoder_options, check_source_options, index_dataset

    usage(check_source_options, dataset, corpus, output, backend.name)
    usage(check_encoder_options, encoder_kind, ray_address, gpus_per_worker, device, batch_size)
    built, lexical, config, encoder_id = index_dataset(
        data_dir, dataset, model, index_type, backend, cache_dir, output, overwrite, lexical=not no_lexical,
        encoder_kind=encoder_kind, workers=workers, ray_address=ray_address, gpus_per_worker=gpus_per_worker,
        precision=precision, device=device, batch_size=batch_size, progress=obj["progress"], corpus=corpus, **fields)
    click.echo(f"{built.path}\t{len(built)} documents\t{config.index_type.value}\t{encoder_id}")
    if lexical is not None:
        click.echo(f"{lexical.path}\t{len(lexical)} documents\tbm25 (k1 {lexical.config.k1}, b {lexical.config.b})")


@main.command()
@index_option()
@backend_options
@click.option("--lexical", "lexical_dir", type=click.Path(file_okay=False, path_type=Path),
              help="The BM25 index for bm25/hybrid systems [default: the one `index` wrote beside --index].")
@click.option("--query", "query_texts", multiple=True, help="A query (repeatable).")
@click.option("--queries", "queries_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Queries: BEIR queries.jsonl, or plain text with one query per line.")
@click.option("--router", "router_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Route each query to a system of this router directory (default: base model only).")
@click.option("--routing", default="default", show_default=True,
              help=f"The router of --router: {', '.join(buildable_kinds())}, or default (the folds' best).")
@click.option("--model", default="all-MiniLM-L6-v2", show_default=True, help="Base model (must match the index).")
@click.option("-k", "--top-k", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.option("--device", help="Encode and search on this torch device (e.g. cuda; README) [default: FAISS on CPU].")
@click.option("--fields/--no-fields", default=True, show_default=True,
              help="Each hit's title, text and metadata (--no-fields: ids and scores only, no store lookup).")
def search(index_dir, backend, lexical_dir, query_texts, queries_file, router_dir, routing, model, top_k, as_json,
           device, fields):
    """Search an index: with the base model, or routed over a router's systems (experts, BM25, hybrids)."""
    from experts.workflows.searching import check_search_options, result_record, search_index

    usage(check_search_options, router_dir, routing, backend.name, lexical_dir)
    queries, hits = search_index(index_dir, query_texts, queries_file, backend, lexical_dir, router_dir, routing, model,
                                 top_k, device, fields)
    for hit in hits:
        if as_json:
            click.echo(json.dumps(result_record(hit, queries[hit.query_id]), allow_nan=False))
            continue
        click.echo(f"{hit.query_id} [{hit.system} ({hit.mode}), confidence {hit.confidence:.2f}"
                   f"{', unfamiliar' if hit.unfamiliar else ''}]: {queries[hit.query_id]}")
        for rank, record in enumerate(result_record(hit, queries[hit.query_id])["hits"], start=1):
            shown = " ".join(f"{record.get('title', '')} {record.get('text', '')}".split())[:100]
            click.echo(f"  {rank:>3}  {record['score']:.4f}  {record['doc_id']}" + (f"  {shown}" if shown else ""))


@main.command()
@index_option("")
@corpus_options(required=True)
@click.option("--replace", is_flag=True, help="Replace documents whose id the index holds (default: refuse them).")
@click.option("--model", help="Base model [default: the one that built the index].")
@backend_options
@click.pass_obj
def add(obj, index_dir, corpus, model, backend, **fields):
    """Add documents to an index, encoding only them (dense, BM25 and document store: one new version)."""
    from experts.workflows.collections import add_documents

    click.echo("\n".join(add_documents(index_dir, corpus, backend=backend, model=model, progress=obj["progress"],
                                     **fields).lines("added")))


@main.command()
@index_option("")
@click.option("--id", "ids", multiple=True, help="A document id to delete (repeatable).")
@click.option("--ids-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="One id per line.")
@backend_options
def delete(index_dir, ids, ids_file, backend):
    """Delete documents from an index (dense, BM25 and document store: one new version)."""
    from experts.workflows.collections import delete_documents

    click.echo("\n".join(delete_documents(index_dir, ids, ids_file, backend=backend).lines("deleted")))


@main.command()
@router_option(required=False)
@index_option()
@backend_options
@serve_options
def serve(router_dir, index_dir, backend, **options):
    """Serve searches over HTTP: POST /search (concurrent requests merged into routed batches), GET /health,
    GET /info, POST /reload; one process, or Ray Serve replicas (README "Serving")."""
    from experts.workflows.serving import check_serve_options, serve_index

    usage(check_serve_options, router_dir, options["routing"], backend, options["ray_address"], options["replicas"])
    serve_index(index_dir, backend, router_dir, announce=click.echo, **options)


@main.command("train-expert")
@data_dir_option
@click.option("--dataset", help="Dataset whose training split teaches the expert (--unlabelled: its corpus alone).")
@click.option("--index", "index_dir", metavar="DIR|COLLECTION", help="With --unlabelled, instead of --dataset: a "
              "named index (your collection: FAISS, the directory `index --corpus FILE --output DIR` wrote; Milvus, "
              "the collection): pseudo-queries from the documents it holds.")
@click.option("--split", default="train", show_default=True, help="Training split (never test).")
@router_option(required=True)
@click.option("--name", required=True, help="Expert name: letters, digits, '.', '-' and '_'.")
@click.option("--overwrite", is_flag=True, help="Replace an existing expert of this name.")
@model_options
@click.option("--epochs", type=click.IntRange(min=1), help="Maximum epochs (default: TrainConfig.epochs).")
@click.option("--learning-rate", type=float)
@click.option("--batch-size", type=click.IntRange(min=1))
@click.option("--temperature", type=float)
@click.option("--negatives", type=click.Choice([n.value for n in Negatives]),
              help="Softmax over the whole corpus (default), hard negatives, or in-batch only.")
@click.option("--seed", type=int)
@click.option("--lora-layers", type=click.IntRange(min=0),
              help="LoRA on the top N transformer layers only (routed search reuses the base pass below them); "
                   "0: every layer [default: 3, TrainConfig.lora_layers].")
@click.option("--anchor-weight", type=click.FloatRange(min=0),
              help="Keep the expert close to the base on other domains' queries (see --anchor-dataset).")
@click.option("--anchor-dataset", "anchor_datasets", multiple=True, metavar="NAME",
              help="Dataset whose training queries are anchors (repeatable; needs an anchor weight > 0).")
@click.option("--config", "config_json", metavar="JSON", callback=checked(TrainConfig.parse_fields, parsed=True),
              help='Any other TrainConfig fields as a JSON object, e.g. \'{"max_steps": 300, "base_dropout": false}\' '
                   "(see experts/training_overrides.json); the options above take precedence.")
@click.option("--unlabelled", is_flag=True, help="No relevance judgments: train on pseudo-queries drawn from the "
              "corpus (or --queries labelled by hybrid:base), kept only if it beats the base significantly on "
              "pseudo-queries of other documents (the self-check).")
@click.option("--queries", "queries_file", type=click.Path(dir_okay=False),
              help="With --unlabelled: unjudged queries (.jsonl or one per line), labelled where hybrid:base changes "
                   "the base's first document (needs --force: BENCHMARKS.md §13).")
@click.option("--pseudo-queries", type=click.IntRange(min=2), help="With --unlabelled: how many to draw from the "
              "corpus [default: 1000].")
@click.option("--force", is_flag=True, help="With --unlabelled: save the expert even if it fails the self-check.")
@backend_options
@click.pass_obj
def train_expert(obj, data_dir, dataset, index_dir, split, router_dir, name, overwrite, model, cache_dir, index_type,
                 anchor_datasets, config_json, backend, unlabelled, queries_file, pseudo_queries, force, **hyper):
    """Train a LoRA query expert on one dataset (or, --unlabelled, a corpus alone) into a router directory."""
    from experts.workflows import add_expert, add_unlabelled_expert, check_unlabelled_options

    config = TrainConfig.from_fields({**(config_json or {}), **{k: v for k, v in hyper.items() if v is not None}})
    usage(check_unlabelled_options, unlabelled, split, queries_file, pseudo_queries, force, dataset, index_dir)
    if unlabelled:
        path, trained, check, refitted = add_unlabelled_expert(
            router_dir, name, config, data_dir=data_dir, dataset=dataset, index=index_dir, queries=queries_file,
            pseudo_queries=pseudo_queries, anchor_datasets=anchor_datasets, force=force, cache_dir=cache_dir,
            model=model, index_type=index_type, overwrite=overwrite, progress=obj["progress"], backend=backend)
        low, high = check["interval"]
        click.echo(f"trained on {trained.train_queries + trained.heldout_queries} pseudo-queries; self-check: "
                   f"{check['check_queries']} of other documents, nDCG@10 {check['base_ndcg@10']:.4f} -> "
                   f"{check['expert_ndcg@10']:.4f} ({check['gain']:+.4f}, 95% [{low:+.4f}, {high:+.4f}], needs "
                   f"> {check['margin']:+.4f})" + ("" if check["passed"] else ": FAILED, saved because of --force"))
    else:
        path, trained, refitted = add_expert(router_dir, data_dir, cache_dir, dataset, name, config, split,
                                             anchor_datasets, model=model, index_type=index_type, overwrite=overwrite,
                                             progress=obj["progress"], backend=backend)
    if refitted:
        click.echo(f"refitted routers: {', '.join(refitted)}")
    click.echo(f"{path}\tbest epoch {trained.best_epoch}\theld-out nDCG@10 {trained.heldout_base_ndcg_at_10:.4f} -> "
               f"{trained.heldout_ndcg_at_10:.4f}\t{trained.seconds:.0f}s")


@main.group()
def experts():
    """List, remove and export the experts of a router directory."""


@experts.command("list")
@router_option(required=True)
@click.option("--model", default="all-MiniLM-L6-v2", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of the experts' records instead.")
def experts_list(router_dir, model, as_json):
    """One line per expert: name, domain, held-out nDCG@10 (base -> expert), training time."""
    from experts.workflows.expert_store import describe_experts, expert_records

    records = expert_records(router_dir, model)
    for line in [json.dumps(records, indent=2)] if as_json else describe_experts(records):
        click.echo(line)


@experts.command("remove")
@router_option(required=True)
@click.argument("name")
@click.option("--model", default="all-MiniLM-L6-v2", show_default=True)
def experts_remove(router_dir, name, model):
    """Remove one expert and refit the routers without it (if they cannot be, nothing is removed); the other
    experts are untouched."""
    from experts.workflows import remove_expert

    refitted = remove_expert(router_dir, name, model)
    click.echo(f"removed {name}" + (f"; refitted routers: {', '.join(refitted)}" if refitted else ""))


@experts.command("export")
@router_option(required=True)
@click.argument("name")
@click.option("--output", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True)
@click.option("--model", default="all-MiniLM-L6-v2", show_default=True)
def experts_export(router_dir, name, output, overwrite, model):
    """Write the expert as a sentence-transformers query/document model: encode_query runs the expert (LoRA merged),
    encode_document the base model."""
    from experts.workflows.expert_store import export_expert_model

    click.echo(str(export_expert_model(router_dir, name, output, overwrite=overwrite, model=model)))


@main.command("export")
@router_option(required=True)
@click.option("--output", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--routing", default="default", show_default=True, help="The built router to export.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export at --output.")
@click.option("--model", default="all-MiniLM-L6-v2", show_default=True)
def export_routed(router_dir, output, routing, overwrite, model):
    """Write the routed model (router + its experts) as one sentence-transformers model: encode_query routes each
    query to its expert, encode_document runs the base model (load with trust_remote_code=True; README)."""
    from experts.workflows.exporting import export_routed_model

    click.echo(str(export_routed_model(router_dir, output, routing, overwrite=overwrite, model=model)))


@main.command()
@data_dir_option
@click.option("--dataset", "datasets", multiple=True, help="Dataset name (repeatable).")
@click.option("--index", "index_dir", help="Instead of --dataset: a named index, judged by --queries and --qrels.")
@click.option("--queries", type=click.Path(path_type=Path), help="With --index: BEIR queries JSONL.")
@click.option("--qrels", type=click.Path(path_type=Path), help="With --index: BEIR qrels TSV.")
@click.option("--split", default="test", show_default=True)
@click.option("--system", "systems", multiple=True, default=("base",), show_default=True, callback=checked_systems,
              help=f"{', '.join(SYSTEMS)} (repeatable: every system given is evaluated, sharing query vectors; "
                   "auto:base is where routers send unfamiliar queries; all but base, bm25, hybrid:base and "
                   "auto:base need --router).")
@router_option(required=False)
@model_options
@backend_options
@output_json_option(help='Write {"results": [...], "default_system": ...} with one row per dataset and system '
                         "(-: standard output, and the table goes to standard error).")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), callback=checked(check_output_dir),
              help="Write a TREC run file <dataset>.<split>.<system>.trec per dataset and system here.")
@click.option("--json", "as_json", is_flag=True, help="Print the results JSON (as --output-json -) instead of a table.")
@click.pass_obj
def evaluate(obj, data_dir, datasets, index_dir, queries, qrels, split, systems, router_dir, model, cache_dir,
             index_type, backend, output_json, run_dir, as_json):
    """Evaluate systems on datasets' test queries (nDCG@10, Recall@100, MAP@100, MRR@10)."""
    from eval.runs import format_table
    from experts.workflows.evaluation import check_evaluate_options, evaluate_index, evaluate_systems

    usage(check_evaluate_options, datasets, index_dir, queries, qrels)
    if as_json and output_json is not None:
        raise click.UsageError("--json prints the results JSON to standard output; --output-json writes it to a file")
    output_json = "-" if as_json else output_json
    rows, _ = evaluate_index(index_dir, queries, qrels, systems, split, router_dir, model, run_dir, backend,
                             output_json) if index_dir else evaluate_systems(
        data_dir, datasets, systems, split, router_dir, model, cache_dir, index_type, run_dir,
        progress=obj["progress"], backend=backend, output_json=output_json)
    if not as_json:
        click.echo(format_table(rows), err=str(output_json) == "-")


@main.command("build-router")
@data_dir_option
@router_option(required=True)
@click.option("--dataset", "datasets", multiple=True,
              help="Training datasets whose train queries label the router (repeatable).")
@click.option("--unlabelled-dataset", "unlabelled", multiple=True,
              help="Datasets without judgments (a corpus is enough): systems are scored on --max-queries "
                   "pseudo-queries drawn from its documents, each labelled with its document (repeatable; "
                   "BENCHMARKS.md §13).")
@click.option("--unlabelled-index", "unlabelled_indexes", multiple=True, metavar="DIR|COLLECTION",
              help="A named index without judgments (your collection: FAISS, the directory `index --corpus FILE "
                   "--output DIR` wrote; Milvus, the collection): as --unlabelled-dataset, from the documents it "
                   "holds; named after the directory or collection (repeatable).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(buildable_kinds()), default=("pilot",),
              show_default=True, help="Router(s) to build (repeatable).")
@click.option("--max-queries", default=500, show_default=True, type=click.IntRange(min=1),
              help="Training queries sampled per dataset for expert scoring (and pseudo-queries drawn per "
                   "--unlabelled-dataset).")
@click.option("--aggregate", type=click.Choice(PilotRouter.AGGREGATES), default="density",
              show_default=True, help="pilot: kernel density of an expert's pilots (by group size), their mean "
                                      "similarity weighted by group size, the plain mean (the paper), or max.")
@click.option("--clusters", default=1, show_default=True, type=click.IntRange(min=1),
              help="pilot: k-means centroids per (dataset, best expert) group.")
@click.option("--fallback", default="none", show_default=True, callback=checked(parse_threshold, parsed=True),
              help="Send a query to the default system (see --unfamiliar) when the router's "
                   "confidence is below a threshold: 'none' (always the top expert, as published), 'auto' (the "
                   "threshold that helps most on held-out training queries), or a number in [0, 1).")
@click.option("--novelty", callback=checked(parse_threshold, parsed=True),
              help=f"{', '.join(novelty_kinds())}: send a query to the default system when its similarity to the "
                   "nearest pilot (stored query) is below a threshold, i.e. it is unlike every training domain: "
                   "'auto' (the threshold that helps most on held-out training queries; the default), 'none', "
                   "or a number in [0, 1).")
@click.option("--unfamiliar", type=click.Choice(UNFAMILIAR_POLICIES), default="auto", show_default=True,
              help="The default system, where queries the router does not recognise go: auto = auto:base, which "
                   "fuses BM25 with the base only where, over the call's unfamiliar queries, BM25 agrees with the "
                   "base (no labels; DESIGN.md); calibrated = base or hybrid:base, whichever the routing folds "
                   "favour (one global choice, as before 2026-12-04).")
@click.option("--no-lexical", is_flag=True, help="Route among dense experts only (no bm25 or hybrid systems).")
@click.option("--fusion", type=click.Choice(FUSIONS), default="convex", show_default=True,
              help="How hybrids fuse a dense and the BM25 ranking: convex (weight calibrated per expert on its "
                   "training queries) or rrf (reciprocal rank).")
@route_on_option
@model_options
@backend_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: the routers built and the default.")
@click.pass_obj
def build_router(obj, data_dir, router_dir, datasets, unlabelled, unlabelled_indexes, kinds, max_queries, aggregate,
                 clusters, fallback, novelty, unfamiliar, no_lexical, fusion, route_on, model, cache_dir, index_type,
                 backend, as_json):
    """Score every system on training queries, label each by its best system, and fit routers."""
    from experts.workflows import build_routers

    built, default = build_routers(router_dir, data_dir, cache_dir, datasets, kinds, max_queries, fallback=fallback,
                                   pilot_options={"aggregate": aggregate, "clusters": clusters}, novelty=novelty,
                                   unfamiliar=unfamiliar, model=model, index_type=index_type, lexical=not no_lexical,
                                   fusion=fusion, progress=obj["progress"], backend=backend, route_on=route_on,
                                   unlabelled=unlabelled, unlabelled_indexes=unlabelled_indexes)
    if as_json:
        keys = ("path", "kind", "labelled_queries", "systems", "routes_on")
        return click.echo(json.dumps({"routers": [dict(zip(keys, (str(r[0]), *r[1:]), strict=True)) for r in built],
                                      "default_router": default}, indent=2))
    for path, kind, labelled, systems, routes_on in built:
        click.echo(f"{path}\t{kind}\t{labelled} labelled queries\tsystems: {', '.join(systems)}\t"
                   f"routes on: {routes_on}")
    click.echo(f"default router (best on the routing folds): {default}")


@main.command()
@data_dir_option
@router_option(required=True)
@click.option("--expert-dataset", "expert_datasets", multiple=True,
              help="Datasets that get an expert (repeatable; default: scifact, nfcorpus, arguana-native, "
                   "feedbackqa, perspectrum, pubmedqa-l, squad).")
@click.option("--eval-dataset", "eval_datasets", multiple=True,
              help="Datasets evaluated on test (repeatable; default: the expert datasets + aila2019-statutes).")
@click.option("--max-queries", default=500, show_default=True, type=click.IntRange(min=1))
@click.option("--no-multitask", is_flag=True, help="Skip the multitask baseline expert.")
@click.option("--unlabelled", is_flag=True,
              help="Not one judgment before the final scores: experts from pseudo-queries of their corpus, kept only "
                   "if they pass the self-check; routers fitted on pseudo-queries; no multitask expert (use a new "
                   "router directory; BENCHMARKS.md §13).")
@click.option("--train-overrides", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="JSON of per-dataset training settings [default: experts/training_overrides.json].")
@output_json_option(required=True, help="Write every row, the routing confusion and timings here (-: standard "
                                        "output, and the tables go to standard error).")
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), callback=checked(check_output_file),
              help="Also write the tables here.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), callback=checked(check_plot_path),
              help="The pilot router's dataset -> expert confusion as an image (.png, .pdf, .svg, ...).")
@route_on_option
@model_options
@backend_options
@click.pass_obj
def benchmark(obj, data_dir, router_dir, expert_datasets, eval_datasets, max_queries, no_multitask, unlabelled,
              train_overrides, output_json, markdown, plot, route_on, model, cache_dir, index_type, backend):
    """Train missing experts, build routers, evaluate every system on every dataset, write tables and JSON."""
    from experts.workflows.benchmark import run_benchmark

    _, report = run_benchmark(data_dir, router_dir, cache_dir, expert_datasets, eval_datasets, output_json=output_json,
                              markdown=markdown, plot=plot, train_overrides=train_overrides, model=model,
                              max_queries=max_queries, multitask=not no_multitask, index_type=index_type,
                              progress=obj["progress"], backend=backend, route_on=route_on, unlabelled=unlabelled)
    click.echo(report, err=str(output_json) == "-")


if __name__ == "__main__":
    sys.exit(main())
