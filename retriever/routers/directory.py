"""``RouterDirectory``: the one owner of a router directory's layout. Every path below it is built here.

::

    <router>/router.json                 kind, format version, library version, base model id/fingerprint/dim,
                                         default router (after build-router)
    <router>/experts/<name>/adapter_model.safetensors   peft LoRA adapter (query side)
    <router>/experts/<name>/adapter_config.json
    <router>/experts/<name>/expert.json  name, domain, base model, training-data fingerprint, hyper-parameters,
                                         training time, held-out scores, sha256 of each file
    <router>/routers/<kind>/routing.json + *.npy      a built router (``retriever.routers``), with the base model
    <router>/systems.json                how hybrid systems are fused: method and calibrated weights
    <router>/routing-data/<dataset>/     cached routing scores of training queries (``experts.routing``); each
                                         JSON record carries format version, library version and base model

The set of experts is the set of ``experts/<name>/expert.json`` files: nothing else lists them, so adding or
removing one touches only its own directory. Each expert and router is written atomically. Names (experts,
router kinds, datasets) pass ``retriever.storage.files.safe_name`` before they become a path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from retriever.encoding.encoder import ModelInfo
from retriever.encoding.expert_encoder import BASE_EXPERT, MultiExpertEncoder
from retriever.encoding.lora import lora_factors
from retriever.ranking.systems import BM25, FusionSettings
from retriever.routers import Router, load_router
from retriever.storage.artifacts import atomic_directory, remove_stale_temporaries
from retriever.storage.files import (
    MODEL_SCHEMA,
    ArtifactError,
    check_finite,
    check_parents,
    checksum_files,
    library_version,
    read_json,
    read_metadata,
    safe_name,
    verify_checksums,
    write_json,
)

__all__ = ["EXPERT_FILES", "RouterDirectory", "validate_name"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
ROUTER_KIND = "routerretriever-router"
EXPERT_KIND = "routerretriever-expert"
SYSTEMS_KIND = "routerretriever-systems"
EXPERT_FILES = ("adapter_model.safetensors", "adapter_config.json")
EXPERT_SCHEMA = {"files": dict, "base_model": MODEL_SCHEMA, "domain?": str, "training?": dict, "metrics?": dict}


def validate_name(name: str) -> str:
    """An expert name (``retriever.storage.files.safe_name``), never the reserved ``base``."""
    safe_name(name, "expert")
    if name in (BASE_EXPERT, BM25):
        what = "the base model" if name == BASE_EXPERT else "the BM25 system"
        raise ValueError(f"invalid expert name {name!r}: reserved for {what}")
    return name


def _listing(folder: Path, metadata: str) -> list[str]:
    """Names of ``folder``'s artifact directories (those holding ``metadata``), never hidden ones."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / metadata).is_file())


def _read_adapter(path: Path, name: str) -> dict:
    """The LoRA factors of expert ``name`` in directory ``path`` (peft's files;
    ``retriever.encoding.lora.lora_factors``), every weight checked to be finite."""
    from safetensors.torch import load_file

    config = read_json(path / "adapter_config.json")
    weights = path / "adapter_model.safetensors"
    try:
        state = load_file(weights)
    except Exception as err:  # safetensors raises its own SafetensorError for damaged files
        raise ArtifactError(f"{weights} is not a readable safetensors file: {err}") from None
    for key, tensor in state.items():
        check_finite(tensor.detach().float().numpy(), f"{weights} (tensor {key})")
    try:
        return lora_factors(state, config)
    except ValueError as err:
        raise ArtifactError(f"expert {name!r} in {path}: {err}") from None


def _check_new_root(root: Path) -> None:
    """A new router directory is created only where nothing is: a missing or empty directory (another process
    creating the same router may have left its ``router.json`` temporary there), never inside another artifact or
    a folder of the user's, which a later command could then replace or delete whole."""
    check_parents(root)
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a directory; refusing to create a router directory there")
    held = [p.name for p in root.iterdir() if not re.fullmatch(r"\.router\.tmp-\d+\.json", p.name)] \
        if root.is_dir() else []
    if held:
        raise FileExistsError(f"{root} is not a router directory (no router.json) and is not empty (it holds "
                              f"{', '.join(sorted(held)[:3])}{', ...' if len(held) > 3 else ''}); refusing to "
                              "create a router directory in it")


class RouterDirectory:
    """A router directory: its experts (all on one base model), its built routers and its routing-data caches."""

    def __init__(self, root: str | Path, base: ModelInfo, create: bool = False):
        self.root = Path(root)
        self.base = base
        meta_path = self.root / "router.json"
        if not meta_path.exists():
            if not create:
                raise ArtifactError(f"not a router directory: {meta_path} does not exist")
            _check_new_root(self.root)
            self.root.mkdir(parents=True, exist_ok=True)
            write_json(meta_path, {
                "kind": ROUTER_KIND, "format_version": FORMAT_VERSION, "library_version": library_version(),
                "base_model": base.record(),
            })
        meta = read_metadata(meta_path, ROUTER_KIND, FORMAT_VERSION, {"base_model": MODEL_SCHEMA})
        self._check_base(meta["base_model"], f"router {self.root}")
        self.meta = meta

    def _check_base(self, built: dict, what: str) -> None:
        if not self.base.built(built):
            raise ArtifactError(
                f"{what} was built on base model {built['id']!r} (dim {built['dim']}, fingerprint "
                f"{built['fingerprint'][:12]}), but the loaded base model is {self.base.id!r} (dim "
                f"{self.base.dim}, fingerprint {self.base.fingerprint[:12]})"
            )

    @property
    def experts_dir(self) -> Path:
        return self.root / "experts"

    @property
    def routers_dir(self) -> Path:
        return self.root / "routers"

    def router_path(self, kind: str) -> Path:
        """Where the built router ``kind`` lives (``routers/<kind>/``)."""
        return self.routers_dir / safe_name(kind, "router")

    def built_routers(self) -> list[str]:
        """Router kinds built here (hidden temporaries of a write in progress or killed are not routers)."""
        return _listing(self.routers_dir, "routing.json")

    @property
    def base_model(self) -> dict:
        """The base model as every artifact of this directory records it."""
        return self.base.record()

    def save_router(self, router: Router, info: dict) -> Path:
        """Save a fitted ``retriever.routers.Router`` as ``routers/<its name>/``."""
        return router.save(self.router_path(router.name), info, self.base_model)

    def load_router(self, kind: str) -> Router:
        """The built router ``kind``; a clear error naming the built ones if there is none."""
        path = self.router_path(kind)
        if not (path / "routing.json").is_file():
            raise ValueError(f"router {kind!r} is not built in {self.root} (built: "
                             f"{', '.join(self.built_routers()) or 'none'}); run build-router first")
        router = load_router(path)
        if router.base_model is not None:
            self._check_base(router.base_model, f"router {path}")
        return router

    def default_router(self) -> str:
        """The router the routing folds favoured when the routers were last built (``pilot`` where none was
        recorded, as before routers over systems existed)."""
        kind = self.meta.get("default_router", "pilot")
        if not isinstance(kind, str) or kind not in self.built_routers():
            raise ValueError(f"the default router {kind!r} of {self.root} is not built (built: "
                             f"{', '.join(self.built_routers()) or 'none'}); run build-router")
        return kind

    def set_default_router(self, kind: str) -> None:
        """Record ``kind`` (a built router) as the one ``--system default`` / ``--routing default`` means."""
        self.router_path(kind)
        self.meta = {**self.meta, "default_router": kind}
        write_json(self.root / "router.json", self.meta)

    @property
    def systems_path(self) -> Path:
        return self.root / "systems.json"

    def save_fusion(self, systems: FusionSettings) -> None:
        """Record how this directory's hybrid systems are fused (method, calibrated weights)."""
        write_json(self.systems_path, {"kind": SYSTEMS_KIND, "format_version": FORMAT_VERSION,
                                       "library_version": library_version(), "base_model": self.base_model,
                                       **systems.to_json()})

    def load_fusion(self) -> FusionSettings:
        """The hybrids' fusion as calibrated by the last build-router; uncalibrated (weight ``DEFAULT_WEIGHT``, 0.6)
        if none was."""
        if not self.systems_path.is_file():
            return FusionSettings()
        meta = read_metadata(self.systems_path, SYSTEMS_KIND, FORMAT_VERSION,
                             {"base_model": MODEL_SCHEMA, "fusion": str, "weights": dict})
        self._check_base(meta["base_model"], f"systems {self.systems_path}")
        try:
            return FusionSettings(meta["fusion"], meta["weights"])
        except ValueError as err:
            raise ArtifactError(f"{self.systems_path}: {err}") from None

    def write_record(self, path: Path, record: dict) -> None:
        """Write a routing-data JSON record under this directory, stamped with format and library version and the
        base model (so a cache read by another library or base model is recognisably foreign)."""
        write_json(path, {"format_version": FORMAT_VERSION, "library_version": library_version(),
                          "base_model": self.base_model, **record})

    def routing_data_path(self, dataset: str, pseudo: bool = False) -> Path:
        """Where the routing scores of ``dataset``'s training queries are cached (``routing-data/<dataset>/``), or
        with ``pseudo`` those of its pseudo-queries (``routing-data/<dataset>/pseudo/``: a router fitted without its
        judgments never replaces the judged cache another router refits from)."""
        folder = self.root / "routing-data" / safe_name(dataset, "dataset")
        return folder / "pseudo" if pseudo else folder

    def expert_names(self) -> list[str]:
        """The experts: ``experts/<name>/expert.json`` (hidden temporaries and trash are not experts)."""
        return _listing(self.experts_dir, "expert.json")

    def expert_path(self, name: str) -> Path:
        path = self.experts_dir / validate_name(name)
        if not (path / "expert.json").is_file():
            raise ValueError(f"unknown expert {name!r}; available: {', '.join(self.expert_names()) or 'none'}")
        return path

    def domain_experts(self) -> dict[str, str]:
        """``{dataset: expert}`` for experts trained on exactly one dataset (multi-task experts are not routed)."""
        mapping = {}
        for name in self.expert_names():
            datasets = self.expert_info(name).get("training", {}).get("datasets", [])
            if isinstance(datasets, list) and len(datasets) == 1 and isinstance(datasets[0], str):
                mapping.setdefault(datasets[0], name)
        return mapping

    def candidates(self) -> list[str]:
        """The dense systems routers and oracles choose among: ``base`` and every domain expert (one named like
        the BM25 system, allowed before it existed, is left out with a warning)."""
        experts = sorted(set(self.domain_experts().values()))
        if BM25 in experts:
            logger.warning("expert %r in %s has the BM25 system's name and is not routed; rename it", BM25, self.root)
        return [BASE_EXPERT, *[e for e in experts if e != BM25]]

    def expert_info(self, name: str) -> dict:
        path = self.expert_path(name) / "expert.json"
        meta = read_metadata(path, EXPERT_KIND, FORMAT_VERSION, EXPERT_SCHEMA)
        if set(meta["files"]) != set(EXPERT_FILES):
            raise ArtifactError(f"{path}: 'files' must list the checksums of {', '.join(EXPERT_FILES)}")
        return meta

    def matches_base(self, name: str) -> bool:
        """Whether expert ``name`` was trained on this store's base model (``experts list`` flags those not)."""
        return self.base.built(self.expert_info(name)["base_model"])

    def save_expert(self, name: str, write: Callable[[Path], None], meta: dict, overwrite: bool = False) -> Path:
        """Write an expert: ``write(tmpdir)`` puts the adapter files there; ``meta`` goes into expert.json."""
        validate_name(name)
        target = self.experts_dir / name
        with atomic_directory(target, ("expert.json", EXPERT_KIND), overwrite=overwrite) as tmp:
            write(tmp)
            missing = [f for f in EXPERT_FILES if not (tmp / f).is_file()]
            if missing:
                raise ArtifactError(f"expert {name!r}: adapter files missing after writing: {', '.join(missing)}")
            _read_adapter(tmp, name)  # what is saved loads: a LoRA adapter, every weight finite
            write_json(tmp / "expert.json", {
                "kind": EXPERT_KIND, "format_version": FORMAT_VERSION, "library_version": library_version(),
                "name": name, "base_model": self.base_model,
                **meta, "files": checksum_files(tmp, list(EXPERT_FILES)),
            })
        return target

    @contextlib.contextmanager
    def changing_expert(self, name: str) -> Iterator[None]:
        """Change expert ``name`` as one transaction. Inside the block its current version (if any) is set aside,
        so the directory has no expert ``name`` unless the block saves a new one; the block then refits the
        routers. If the block fails, the experts are as they were (what it saved is deleted, the old version put
        back); if it succeeds, the old version is deleted. A kill inside the block is mended by the next change
        of ``name`` (``retriever.storage.artifacts.remove_stale_temporaries`` puts the old version back)."""
        target = self.experts_dir / validate_name(name)
        for old in self.experts_dir.glob(".*.removing-*"):  # what a removal killed by an earlier version left
            shutil.rmtree(old, ignore_errors=True)
        remove_stale_temporaries(target)
        aside = None
        if target.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{name}.old-{os.getpid()}-", dir=self.experts_dir))
            target.rename(aside / "artifact")  # atomic: the expert disappears at once, never half-deleted
        try:
            yield
        except BaseException:
            if target.exists():
                failed = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-{os.getpid()}-", dir=self.experts_dir))
                target.rename(failed / "artifact")
                shutil.rmtree(failed, ignore_errors=True)
            if aside is not None:
                (aside / "artifact").rename(target)
            raise
        finally:
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)

    def remove_expert(self, name: str) -> None:
        """Delete expert ``name`` (the routers that name it are left as they are: ``experts.workflows.remove_expert``
        removes it and refits them as one change)."""
        self.expert_path(name)
        with self.changing_expert(name):
            pass

    def load_factors(self, name: str) -> dict:
        path = self.expert_path(name)
        info = self.expert_info(name)
        self._check_base(info["base_model"], f"expert {name!r}")
        verify_checksums(path, info["files"])
        return _read_adapter(path, name)

    def load_into(self, encoder: MultiExpertEncoder, names: list[str] | None = None) -> MultiExpertEncoder:
        for name in self.expert_names() if names is None else names:
            encoder.add(name, self.load_factors(name))
        return encoder
