"""The command line's shared parts: the group class that turns user errors into one line, option callbacks, and
the options several ``cli.py`` commands take (kept apart so that ``cli.py`` holds only the commands)."""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from pathlib import Path

import click

from eval.data import DATA_DIR_ENV
from experts.config import ROUTE_ON
from retriever.index import BACKENDS, IndexType
from retriever.index.collection import FORMATS
from retriever.storage.cache import CACHE_DIR_ENV, default_cache_dir
from retriever.storage.files import check_output_file


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record comes (click's test runner swaps it per invocation)."""

    routerretriever_cli = True

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it
        pass


def configure_output(verbose: int, quiet: bool) -> None:
    """The command line's logging (WARNING, ``-v`` INFO, ``-vv`` DEBUG; the handler carries the level, so a library
    that sets its own logger to DEBUG stays quiet) and, with ``quiet``, no library deprecation warnings (peft
    asks transformers for a deprecated attribute: a FutureWarning addressed to peft's developers, not users).
    Replaces the handler an earlier call in this process installed."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "routerretriever_cli", False)]:
        root.removeHandler(old)
    handler = _StderrHandler()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    if quiet:
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # per-model "Loading weights" bars are noise in a CLI


class VerbosityCommand(click.Command):
    """A command (or group) that takes ``-v``/``-q`` itself, so they work after the subcommand as before it (the
    ``-v`` counts add up); the command about to run configures the output (``configure_output``), so ``--help``
    loads nothing. ``obj["progress"]``: whether to show progress bars."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params += [click.Option(["-v", "--verbose"], count=True, help="More log output (-vv for debug)."),
                        click.Option(["-q", "--quiet"], is_flag=True,
                                     help="No progress bars, no library deprecation warnings.")]

    def invoke(self, ctx):
        obj, verbose, quiet = ctx.ensure_object(dict), ctx.params.pop("verbose", 0), ctx.params.pop("quiet", False)
        obj["verbose"] = obj.get("verbose", 0) + verbose
        obj["quiet"] = obj.get("quiet", False) or quiet
        obj["progress"] = not obj["quiet"]
        if not isinstance(self, click.Group):
            configure_output(obj["verbose"], obj["quiet"])
        return super().invoke(ctx)


class UserErrorGroup(VerbosityCommand, click.Group):
    """Turns the library's user-facing errors into one-line messages and a non-zero exit; its commands and
    subgroups take ``-v``/``-q`` too."""

    command_class = VerbosityCommand
    group_class = type  # a subgroup is a UserErrorGroup

    def invoke(self, ctx):
        from retriever.storage.files import ArtifactError

        try:
            return super().invoke(ctx)
        except (ArtifactError, ValueError, OSError) as err:  # OSError: a file the user named cannot be read/written
            raise click.ClickException(str(err)) from None


def checked(check, parsed: bool = False):
    """A click callback that runs ``check(value)`` on an option's value, so an output that cannot be written (or a
    value ``check`` refuses) fails before any work, naming the option (``-``, standard output, passes);
    ``parsed``: the option's value is what ``check`` returns."""

    def callback(ctx, param, value):
        if value is not None and str(value) != "-":
            try:
                checked = check(value)
            except (OSError, ValueError) as err:
                raise click.BadParameter(str(err)) from None
            return checked if parsed else value
        return value

    return callback


def checked_systems(ctx, param, values):
    """``--system`` values that name no system are a usage error (exit 2) naming the value and the valid ones."""
    from eval.runs import parse_system

    for value in values:
        try:
            parse_system(value)
        except ValueError as err:
            raise click.BadParameter(str(err), ctx, param) from None
    return values


def usage(check, *args) -> None:
    """Run a workflow's option check; what it refuses is a usage error (exit 2, with the usage line)."""
    try:
        check(*args)
    except ValueError as err:
        raise click.UsageError(str(err)) from None


def output_json_option(**kwargs):
    return click.option("--output-json", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
                        callback=checked(check_output_file), **kwargs)


data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar=DATA_DIR_ENV,
                               help=f"Directory of BEIR-layout datasets [env: {DATA_DIR_ENV}].")


def _options(*options):  # several click options as one decorator, in the order given
    return lambda func: functools.reduce(lambda f, option: option(f), reversed(options), func)


model_options = _options(
    click.option("--model", default="all-MiniLM-L6-v2", show_default=True,
                 help="Base model: the packaged name or a local sentence-transformers directory."),
    click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar=CACHE_DIR_ENV,
                 default=default_cache_dir, show_default="~/.cache/routerretriever",
                 help=f"Where corpus indexes are cached [env: {CACHE_DIR_ENV}]."),
    click.option("--index-type", type=click.Choice([t.value for t in IndexType]), default="flat", show_default=True,
                 help="flat = exact inner product; hnsw and ivf are approximate."))


route_on_option = click.option(
    "--route-on", type=click.Choice(ROUTE_ON), default="embeddings", show_default=True,
    help="What routers route on: embeddings (the base model's query embeddings, the paper's) or prefix (the hidden "
         "states entering the experts' first adapted layer: routed search in one encoder pass; README).")


def index_option(cache: str = " (or a cache entry)"):
    return click.option("--index", "index_dir", required=True, help=f"FAISS: a directory `index --output` wrote"
                        f"{cache}. Milvus: the collection name `index` printed.")


def backend_options(func):
    """``--backend``/``--uri``, handed to the command as ``backend`` (an ``IndexBackend``; FAISS caches under
    ``--cache-dir``)."""

    @click.option("--backend", "backend_name", type=click.Choice(BACKENDS), default="faiss", show_default=True,
                  help="Where corpus indexes live: FAISS directories, or a Milvus collection per corpus.")
    @click.option("--uri", help="Milvus: a .db file (Milvus Lite) or a server, e.g. http://localhost:19530.")
    @functools.wraps(func)
    def wrapper(*args, backend_name, uri, **kwargs):
        from retriever.index.backends import make_backend

        kwargs["backend"] = make_backend(backend_name, uri, kwargs.get("cache_dir"))
        return func(*args, **kwargs)

    return wrapper


def corpus_options(required: bool):
    """``--corpus FILE`` and the fields and format its rows are read with (``retriever.index.collection``)."""
    return _options(click.option("--corpus", required=required, type=click.Path(exists=True, dir_okay=False,
                                                                                 path_type=Path),
                                 help="Your documents: JSONL, CSV, TSV or Parquet (gz too); other fields: metadata."),
                    *(click.option(f"--{name}-field", default=default, show_default=True)
                      for name, default in (("id", "_id"), ("title", "title"), ("text", "text"))),
                    click.option("--format", type=click.Choice(FORMATS), help="[default: from the file's name]"))


def router_option(required: bool):
    return click.option("--router", "router_dir", type=click.Path(file_okay=False, path_type=Path), required=required,
                        help="Router directory (holds experts/<name>/ and router.json).")


def serve_options(func):
    """``serve``'s router, model, address, batching, limits and Ray Serve options (defaults: ``ServiceConfig``'s)."""
    from retriever.service.config import ServiceConfig as Config

    def positive(name, default, text):
        return click.option(name, type=click.IntRange(min=1), default=default, show_default=True, help=text)

    return _options(
        click.option("--routing", default="default", show_default=True, help="The router of --router to serve."),
        click.option("--model", help="Base model [default: the packaged all-MiniLM-L6-v2]; must match the index."),
        click.option("--device", help="Encode queries (and search a FAISS flat index) on this torch device (cuda)."),
        click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on."),
        click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True),
        positive("--max-batch", Config.max_batch, "Batching: most queries merged into one routed batch."),
        click.option("--max-wait-ms", type=click.FloatRange(0, 10_000), default=Config.max_wait_ms, show_default=True,
                     help="Batching: longest a request waits for others to join its batch."),
        positive("--max-queue", Config.max_queue, "Most requests waiting; more are refused (503)."),
        positive("--max-queries", Config.max_queries, "Most queries in one request."),
        positive("--max-query-chars", Config.max_query_chars, "Most characters in one query."),
        positive("--max-k", Config.max_k, "Largest k a request may ask for."),
        click.option("--reload-interval", type=click.FloatRange(0, 86_400), default=Config.reload_interval,
                     show_default=True, help="Seconds between checks of the index's version (0: POST /reload only)."),
        click.option("--replicas", type=click.IntRange(min=1), help="Serve N replicas on Ray Serve [default: no Ray]."),
        click.option("--ray-address", help="Ray Serve: the cluster to join (auto, ray://head:10001) [default: a "
                                           "local one]."))(func)
