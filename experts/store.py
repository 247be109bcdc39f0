"""The expert store inside a router directory.

::

    <router>/router.json                 kind, format version, library version, base model id/fingerprint/dim
    <router>/experts/<name>/adapter_model.safetensors   peft LoRA adapter (query side)
    <router>/experts/<name>/adapter_config.json
    <router>/experts/<name>/expert.json  name, domain, base model, training-data fingerprint, hyper-parameters,
                                         training time, held-out scores, sha256 of each file

The set of experts is the set of ``experts/<name>/expert.json`` files: nothing else lists them, so adding or
removing one touches only its own directory. Each expert is written atomically.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from retriever.artifacts import (
    ArtifactError,
    atomic_directory,
    checksum_files,
    library_version,
    read_metadata,
    verify_checksums,
    write_json,
)
from retriever.encoder import ModelInfo
from retriever.experts import BASE_EXPERT, MultiExpertEncoder
from retriever.lora import lora_factors

__all__ = ["EXPERT_FILES", "ExpertStore", "validate_name"]

FORMAT_VERSION = 1
ROUTER_KIND = "routerretriever-router"
EXPERT_KIND = "routerretriever-expert"
EXPERT_FILES = ("adapter_model.safetensors", "adapter_config.json")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid expert name {name!r}: use 1-64 lowercase letters, digits, '-' or '_', starting with a "
            "letter or digit (no paths)"
        )
    if name == BASE_EXPERT:
        raise ValueError(f"invalid expert name {name!r}: reserved for the base model")
    return name


class ExpertStore:
    """Experts of one router directory, all on the same base model."""

    def __init__(self, root: str | Path, base: ModelInfo, create: bool = False):
        self.root = Path(root)
        self.base = base
        meta_path = self.root / "router.json"
        if not meta_path.exists():
            if not create:
                raise ArtifactError(f"not a router directory: {meta_path} does not exist")
            self.root.mkdir(parents=True, exist_ok=True)
            write_json(meta_path, {
                "kind": ROUTER_KIND, "format_version": FORMAT_VERSION, "library_version": library_version(),
                "base_model": {"id": base.id, "fingerprint": base.fingerprint, "dim": base.dim},
            })
        meta = read_metadata(meta_path, ROUTER_KIND, FORMAT_VERSION)
        self._check_base(meta["base_model"], f"router {self.root}")
        self.meta = meta

    def _check_base(self, built: dict, what: str) -> None:
        if built["fingerprint"] != self.base.fingerprint or int(built["dim"]) != self.base.dim:
            raise ArtifactError(
                f"{what} was built on base model {built['id']!r} (dim {built['dim']}, fingerprint "
                f"{built['fingerprint'][:12]}), but the loaded base model is {self.base.id!r} (dim "
                f"{self.base.dim}, fingerprint {self.base.fingerprint[:12]})"
            )

    @property
    def experts_dir(self) -> Path:
        return self.root / "experts"

    def names(self) -> list[str]:
        if not self.experts_dir.is_dir():
            return []
        return sorted(p.name for p in self.experts_dir.iterdir() if (p / "expert.json").is_file())

    def path(self, name: str) -> Path:
        path = self.experts_dir / name
        if not (path / "expert.json").is_file():
            raise ValueError(f"unknown expert {name!r}; available: {', '.join(self.names()) or 'none'}")
        return path

    def info(self, name: str) -> dict:
        return read_metadata(self.path(name) / "expert.json", EXPERT_KIND, FORMAT_VERSION)

    def save(self, name: str, write: Callable[[Path], None], meta: dict, overwrite: bool = False) -> Path:
        """Write an expert: ``write(tmpdir)`` puts the adapter files there; ``meta`` goes into expert.json."""
        validate_name(name)
        target = self.experts_dir / name
        if target.exists() and not overwrite:
            raise FileExistsError(f"expert {name!r} already exists in {self.root}; pass --overwrite to replace it")
        with atomic_directory(target) as tmp:
            write(tmp)
            missing = [f for f in EXPERT_FILES if not (tmp / f).is_file()]
            if missing:
                raise ArtifactError(f"expert {name!r}: adapter files missing after writing: {', '.join(missing)}")
            write_json(tmp / "expert.json", {
                "kind": EXPERT_KIND, "format_version": FORMAT_VERSION, "name": name,
                "base_model": {"id": self.base.id, "fingerprint": self.base.fingerprint, "dim": self.base.dim},
                **meta, "files": checksum_files(tmp, list(EXPERT_FILES)),
            })
        return target

    def remove(self, name: str) -> None:
        path = self.path(name)
        trash = path.with_name(f".{name}.removing")
        path.rename(trash)  # atomic: the expert disappears at once, never half-deleted
        shutil.rmtree(trash)

    def load_factors(self, name: str) -> dict:
        from safetensors.torch import load_file

        path = self.path(name)
        info = self.info(name)
        self._check_base(info["base_model"], f"expert {name!r}")
        verify_checksums(path, info["files"])
        config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
        return lora_factors(load_file(path / "adapter_model.safetensors"), config)

    def load_into(self, encoder: MultiExpertEncoder, names: list[str] | None = None) -> MultiExpertEncoder:
        for name in self.names() if names is None else names:
            encoder.add(name, self.load_factors(name))
        return encoder
