"""The router interface: base query vectors in, per-expert weights out; ``Routing``, ``RoutingData``, the registry.

A router class registers itself with ``@register_router`` under its ``name``; ``ROUTERS`` maps names to
classes, and everything that lists routers (the CLI's choices, the benchmark's systems) reads it. A built
router is saved as ``routing.json`` + ``.npy`` arrays (no pickle; sklearn is used only to fit) and read back
by ``load_router``.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

import numpy as np

from retriever.ranking.systems import AUTO, BASE, FusionSettings
from retriever.routers.settings import Calibration, FallbackRequests, RouterOptions, saved_options, split_options
from retriever.storage.artifacts import atomic_directory
from retriever.storage.files import (
    MODEL_SCHEMA,
    ArtifactError,
    checksum_files,
    library_version,
    load_npy,
    read_metadata,
    verify_checksums,
    write_json,
)

__all__ = [
    "AUTO", "BASE", "ROUTERS", "Router", "Routing", "RoutingData", "RoutingSpace", "best_expert", "best_systems",
    "buildable_kinds", "check_dim", "cosines", "unseen_rows",
    "load_router",
    "novelty_kinds", "register_router", "softmax",
]

FORMAT_VERSION = 1
KIND = "routerretriever-routing-model"
SCHEMA = {"files": dict, "router": str, "experts": list, "options": dict, "state?": dict, "info?": dict,
          "base_model?": MODEL_SCHEMA, "space?": dict}
SPACE_CENTER = "space_center"  # the saved array holding a prefix routing space's center
SOFTMAX_TEMPERATURE = 0.05  # turns cosine-similarity scores into weights, as the contrastive loss does


@dataclass(frozen=True)
class RoutingSpace:
    """What a router routes on. ``layer`` None: the base model's query embeddings (the paper's). ``layer`` L: the
    mean-pooled hidden states entering transformer layer L (the shared prefix that shared-prefix experts resume
    from, so routed search needs no second pass), minus ``center`` (the routing queries' mean: prefix states share
    a large common component) and L2-normalised. ``vectors`` turns raw pooled states into routing vectors."""

    layer: int | None = None
    center: np.ndarray | None = None

    def __post_init__(self):
        if self.layer is None:
            return
        if not isinstance(self.layer, int) or isinstance(self.layer, bool) or self.layer < 1:
            raise ValueError(f"a prefix routing space needs a layer >= 1, got {self.layer!r}")
        if self.center is None or self.center.ndim != 1 or not np.isfinite(self.center).all():
            shape = None if self.center is None else self.center.shape
            raise ValueError(f"a prefix routing space needs a finite 1-d center, got shape {shape}")

    def vectors(self, pooled: np.ndarray) -> np.ndarray:
        """Routing vectors of raw mean-pooled prefix states (base embeddings pass through unchanged)."""
        if self.layer is None:
            return pooled
        centered = np.asarray(pooled, dtype=np.float32) - self.center
        return centered / np.maximum(np.linalg.norm(centered, axis=1, keepdims=True), 1e-12)

    @classmethod
    def fitted(cls, layer: int, pooled: np.ndarray) -> RoutingSpace:
        """The space of layer ``layer`` centered on these routing queries' pooled states."""
        return cls(layer, np.asarray(pooled, dtype=np.float32).mean(axis=0))

    def describe(self) -> str:
        return "base embeddings" if self.layer is None else f"pooled states entering layer {self.layer}, centered"


@dataclass(frozen=True)
class Routing:
    """Per-query routing decisions: ``weights[i, j]`` is query i's weight for ``systems[j]`` (an expert or any
    other system, ``retriever.ranking.systems``); queries marked in ``fallback`` (below the router's confidence or
    novelty threshold) go to the ``default`` system (the base model unless calibrated otherwise)."""

    systems: list[str]
    weights: np.ndarray
    fallback: np.ndarray | None = None
    default: str = BASE

    @property
    def choice(self) -> list[str]:
        chosen = [self.systems[j] for j in self.weights.argmax(axis=1)]
        if self.fallback is None:
            return chosen
        return [self.default if back else expert for expert, back in zip(chosen, self.fallback, strict=True)]

    @property
    def confidence(self) -> np.ndarray:
        return self.weights.max(axis=1)

    @property
    def unfamiliar(self) -> np.ndarray:
        """Per query: whether it went to the default system (the router did not recognise it, or was unsure)."""
        return np.zeros(len(self.weights), bool) if self.fallback is None else np.asarray(self.fallback, dtype=bool)


@dataclass(frozen=True)
class RoutingData:
    """Training queries for fitting a router. ``labels``: best system per query; ``datasets``: its source.
    ``systems``: what a router chooses among — dense experts, and with a lexical index ``bm25`` and
    ``hybrid:<expert>`` (``retriever.ranking.systems``); ``dataset_experts``: each dataset's own (dense) expert."""

    vectors: np.ndarray
    labels: list[str]
    datasets: list[str]
    dataset_experts: dict[str, str]  # dataset -> its own expert
    systems: list[str]  # every system the router may choose, "base" included
    scores: np.ndarray | None = None  # per-query nDCG@10 of each system (columns: systems), for calibration
    trained_on: np.ndarray | None = None  # same shape, bool: the system's expert was trained on that query
    dataset_systems: dict[str, str] | None = None  # dataset -> its best system on unseen queries (dataset router)
    fusion: FusionSettings | None = None  # how the hybrid columns were fused (saved beside the routers)
    space: RoutingSpace = RoutingSpace()  # what ``vectors`` are: base embeddings, or a prefix routing space
    auto_scores: np.ndarray | None = None  # per-query nDCG@10 of ``auto:base`` (unfamiliar queries' default)

    def __post_init__(self):
        if not (len(self.vectors) == len(self.labels) == len(self.datasets)):
            raise ValueError("vectors, labels and datasets must have the same length")
        if self.scores is not None and self.scores.shape != (len(self.vectors), len(self.systems)):
            raise ValueError(f"scores must have shape {(len(self.vectors), len(self.systems))}, "
                             f"got {self.scores.shape}")
        if self.trained_on is not None and (self.scores is None or self.trained_on.shape != self.scores.shape):
            raise ValueError("trained_on must come with scores and have their shape")
        if self.auto_scores is not None and (self.scores is None or self.auto_scores.shape != (len(self.vectors),)):
            raise ValueError("auto_scores must come with scores and have one value per query")
        unknown = sorted(set(self.labels) - set(self.systems))
        if unknown:
            raise ValueError(f"labels name systems the router does not know: {', '.join(unknown)}")

    def system_scores(self, system: str) -> np.ndarray:
        """Per-query nDCG@10 of ``system``: a column of ``scores``, or ``auto_scores`` for ``auto:base``."""
        if system == AUTO and self.auto_scores is not None:
            return self.auto_scores
        if system not in self.systems:
            raise ValueError(f"no scores of system {system!r}; scored: {', '.join(self.systems)}")
        return self.scores[:, self.systems.index(system)]


def softmax(scores: np.ndarray, temperature: float = SOFTMAX_TEMPERATURE) -> np.ndarray:
    z = scores / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Router(ABC):
    """Routes base query vectors to experts. Subclasses set ``name`` and ``Options`` (their ``RouterOptions``) and
    implement ``_fit``/``_route``/``arrays``/``from_arrays``.

    Its settings are three frozen dataclasses (``retriever.routers.settings``): ``settings`` (the kind's options),
    ``requests`` (the fallbacks asked for) and ``calibration`` (the thresholds and default system chosen from
    them); ``options`` is the read-only mapping of the three as ``routing.json`` saves them."""

    name: ClassVar[str]
    Options: ClassVar[type[RouterOptions]] = RouterOptions
    fitted: ClassVar[bool] = True  # fitted from routing data (False: a fixed choice)
    order: ClassVar[int] = 50  # where it is listed (CLI choices, benchmark tables): lower first

    def __init__(self, systems: list[str], options: RouterOptions | Mapping, *, space: RoutingSpace = RoutingSpace(),
                 requests: FallbackRequests | None = None, calibration: Calibration | None = None):
        """``options``: the kind's ``Options``, or a mapping as saved (the kind's options, and the requests and
        calibrated values where ``requests`` and ``calibration`` are not given)."""
        self.systems = list(systems)
        if isinstance(options, RouterOptions):
            settings, saved_requests, saved_calibration = options, FallbackRequests(), Calibration()
        else:
            settings, saved_requests, saved_calibration = split_options(self.Options, options)
        if not isinstance(settings, self.Options):
            raise TypeError(f"the {self.name} router takes {self.Options.__name__}, got {type(settings).__name__}")
        self.settings = settings
        self.requests = saved_requests if requests is None else requests
        self.calibration = saved_calibration if calibration is None else calibration
        self.space = space  # what its input vectors are (``RoutingSpace``), as fitted and saved
        self.info: dict = {}  # what it was built from (datasets, sample size), as saved with it
        self.base_model: dict | None = None  # the base model whose query vectors it routes, as saved with it
        self.fusion: FusionSettings | None = None  # how the hybrids it may choose are fused, as saved with it

    @property
    def options(self) -> Mapping:
        """Read-only: the router's options, requests and calibrated values as ``routing.json`` saves them."""
        return MappingProxyType(saved_options(self.settings, self.requests, self.calibration))

    @property
    def fold_gain(self) -> dict | None:
        """Its gain over the base on the routing folds, when fitted with scores (``Calibration.fold_gain``)."""
        return self.calibration.fold_gain

    def recalibrated(self, **changes) -> Router:
        """A copy of this router with these ``Calibration`` fields changed (``min_similarity=...``, ...)."""
        router = copy.copy(self)
        router.calibration = replace(self.calibration, **changes)
        return router

    @classmethod
    def fit(cls, data: RoutingData, *, requests: FallbackRequests | None = None,
            calibration: Calibration | None = None, **options) -> Router:
        """The router fitted on ``data`` with the kind's ``options`` (``Options``' fields), routing in
        ``data.space``; ``requests`` and ``calibration`` as ``fit_router`` chose them (none: no fallback)."""
        return cls._fit(data, cls.Options(**options), space=data.space, requests=requests, calibration=calibration)

    @classmethod
    @abstractmethod
    def _fit(cls, data: RoutingData, options: RouterOptions, **context) -> Router:
        """Fit on ``data``; ``context`` (space, requests, calibration) goes to the constructor unchanged."""

    @abstractmethod
    def _route(self, vectors: np.ndarray) -> Routing: ...

    def similarity(self, vectors: np.ndarray) -> np.ndarray | None:
        """Each query's highest cosine similarity to the router's reference vectors (its pilots, its stored
        training queries), or None for a router that keeps none: how far a query is from every known domain."""
        return None

    def route(self, vectors: np.ndarray) -> Routing:
        """Route routing vectors; a query below the fitted ``min_confidence``, or less similar than
        ``min_similarity`` to everything the router was fitted on, goes to the router's ``default`` system
        (``auto:base`` for routers over lexical systems, else ``base``): ``Routing.unfamiliar`` marks it."""
        routing = self._route(vectors)
        confidence = self.calibration.min_confidence or 0.0
        similarity = self.calibration.min_similarity or 0.0
        if self.default not in (*self.systems, AUTO) or not (confidence > 0 or similarity > 0):
            return routing
        back = routing.confidence < confidence
        if similarity > 0:
            back |= self.similarity(vectors) < similarity
        return Routing(routing.systems, routing.weights, back, self.default)

    @property
    def default(self) -> str:
        """The system a query falls back to (``Calibration.default``: ``auto:base`` where the router may choose BM25
        and hybrids, else the base; with ``unfamiliar="calibrated"`` the one of base and hybrid:base the folds
        favour)."""
        return self.calibration.default or BASE

    @abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The router's state as named arrays (saved as ``<name>.npy``)."""

    @classmethod
    @abstractmethod
    def from_arrays(cls, systems: list[str], options: Mapping, arrays: dict[str, np.ndarray], extra: dict,
                    **context) -> Router:
        """The router saved as ``options`` (the saved mapping), ``arrays`` and ``extra``; ``context`` (its space)
        goes to the constructor unchanged."""

    def extra(self) -> dict:
        """JSON-able state besides arrays."""
        return {}

    def save(self, path: str | Path, info: dict | None = None, base_model: dict | None = None) -> Path:
        """Write ``routing.json`` and the arrays; ``info`` says what it was built from, ``base_model`` (id,
        fingerprint, dim) which base model's query vectors it routes."""
        path = Path(path)
        with atomic_directory(path, ("routing.json", KIND)) as tmp:
            files = []
            arrays = self.arrays()
            if self.space.layer is not None:
                arrays = {**arrays, SPACE_CENTER: self.space.center}
            for key, array in arrays.items():
                np.save(tmp / f"{key}.npy", np.ascontiguousarray(array), allow_pickle=False)
                files.append(f"{key}.npy")
            write_json(tmp / "routing.json", {
                "kind": KIND, "format_version": FORMAT_VERSION, "library_version": library_version(),
                **({"base_model": base_model} if base_model else {}), "router": self.name, "experts": self.systems,
                "options": dict(self.options), "state": self.extra(), "info": info or {},
                **({"space": {"layer": self.space.layer}} if self.space.layer is not None else {}),
                "files": checksum_files(tmp, files),
            })
        return path


def cosines(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine similarity of each (unit) base query vector to each (unit) reference vector: ``[queries, refs]``."""
    return check_dim(vectors, reference.shape[1]) @ reference.T


def check_dim(vectors: np.ndarray, dim: int) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"router expects base query vectors of shape (n, {dim}), got {vectors.shape}")
    return vectors



ROUTERS: dict[str, type[Router]] = {}


def register_router(cls: type[Router]) -> type[Router]:
    """Class decorator: make router ``cls`` available under ``cls.name``."""
    if cls.name in ROUTERS:
        raise ValueError(f"router {cls.name!r} is registered twice")
    listed = sorted([*ROUTERS.values(), cls], key=lambda router: router.order)  # whatever the import order
    ROUTERS.clear()
    ROUTERS.update((router.name, router) for router in listed)
    return cls


def buildable_kinds() -> list[str]:
    """Routers fitted from routing data (``build-router --kind``): every registered one but ``fixed``."""
    return [name for name, cls in ROUTERS.items() if cls.fitted]


def novelty_kinds() -> list[str]:
    """Routers that keep reference vectors, so ``novelty`` can send queries unlike all of them to the base."""
    return [name for name, cls in ROUTERS.items() if cls.similarity is not Router.similarity]


MIN_UNSEEN = 20  # judge a dataset's systems on queries no expert trained on, where there are at least this many


def unseen_rows(trained: np.ndarray | None, rows: int) -> np.ndarray:
    """Rows no expert was trained on (``trained``: one flag per row), where at least ``MIN_UNSEEN`` are; else all."""
    unseen = np.ones(rows, bool) if trained is None else ~trained
    return unseen if unseen.sum() >= MIN_UNSEEN else np.ones(rows, bool)


def best_systems(datasets: list[str], systems: list[str], scores: np.ndarray, trained_on: np.ndarray | None,
                 own: dict[str, str]) -> dict[str, str]:
    """Each dataset's best system by mean nDCG@10 on its queries no expert trained on (the dataset router's choice
    and the tie-break of labels); ties: its own expert, the base, list order."""
    best, names = {}, np.array(datasets)
    for d in dict.fromkeys(datasets):
        rows = np.flatnonzero(names == d)
        unseen = unseen_rows(None if trained_on is None else trained_on[rows].any(axis=1), len(rows))
        best[d] = best_expert(scores[rows][unseen].mean(axis=0), systems, own.get(d))
    return best


def best_expert(scores: np.ndarray, experts: list[str], own: str | list[str | None] | None) -> str:
    """The best-scoring expert (system) of one query; ties go to ``own`` (its dataset's own expert, or a list of
    preferred ones in order: the dataset's best system, then its own expert), then ``base``, then list order."""
    preferred = own if isinstance(own, list) else [own]
    preference = [p for p in dict.fromkeys([*preferred, BASE, *experts]) if p in experts]
    return next(e for e in preference if scores[experts.index(e)] == scores.max())



def load_router(path: str | Path) -> Router:
    path = Path(path)
    meta = read_metadata(path / "routing.json", KIND, FORMAT_VERSION, SCHEMA)
    cls = ROUTERS.get(meta["router"])
    if cls is None:
        raise ArtifactError(f"unknown router {meta['router']!r} in {path}; available: {', '.join(ROUTERS)}")
    if not meta["experts"] or not all(isinstance(e, str) for e in meta["experts"]):
        raise ArtifactError(f"{path / 'routing.json'}: 'experts' must be a non-empty list of names")
    verify_checksums(path, meta["files"])
    arrays = {Path(name).stem: load_npy(path / name) for name in meta["files"]}
    try:
        space = RoutingSpace()
        if "space" in meta:
            if meta["space"].get("layer") is None:
                raise ValueError(f"'space' names no layer: {meta['space']!r}")
            space = RoutingSpace(meta["space"]["layer"], arrays.pop(SPACE_CENTER))
        router = cls.from_arrays(meta["experts"], meta["options"], arrays, meta.get("state", {}), space=space)
        dims = [a.shape[1] for a in arrays.values() if a.ndim == 2]
        dim = dims[0] if dims else 1
        if space.layer is not None and space.center.shape != (dim,):
            raise ValueError(f"its routing space's center has shape {space.center.shape}, its vectors {dim} values")
        router.route(space.vectors(np.ones((1, dim), dtype=np.float32)))  # options and arrays fit together
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        raise ArtifactError(f"router {path} is damaged: {type(err).__name__} {err}") from None
    router.info = meta.get("info", {})
    router.base_model = meta.get("base_model")
    try:  # the hybrids' fusion its labels were made with (routers over systems)
        saved = router.info.get("systems")  # the record's name in routing.json
        router.fusion = FusionSettings(**saved) if isinstance(saved, dict) else None
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"{path / 'routing.json'}: bad 'systems' record: {err}") from None
    return router

