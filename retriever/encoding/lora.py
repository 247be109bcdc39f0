"""Routed LoRA layers: many query experts on one frozen base model, chosen per call, thread-safe.

Each targeted ``nn.Linear`` of the base transformer is wrapped once by ``RoutedLoRALinear``, which holds the
low-rank factors of every loaded expert. Which expert a forward pass uses comes from a ``ContextVar``: each
thread (and asyncio task) has its own value, so two callers encoding with different experts at the same time
never see each other's choice. With no expert active the layer is exactly the base layer.

The factors come from peft adapters (``adapter_model.safetensors`` + ``adapter_config.json``) and the forward
matches peft's LoRA in eval mode: ``base(x) + (x A^T) B^T * alpha / r``. ``tests/test_experts.py`` checks it
against peft's own merged model.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import threading
from collections.abc import Iterator

import torch
from torch import nn

__all__ = [
    "RoutedLoRALinear", "RowExperts", "active_expert", "active_rows", "adapted_layers", "attach_adapter",
    "detach_adapter", "lora_factors",
]

# the active expert: a name (every row of the batch), None (the base model), or RowExperts (one expert per row)
_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("routerretriever_expert", default=None)
_LOCK = threading.Lock()  # guards adding/removing adapters, never the forward pass

_PEFT_PREFIX = "base_model.model."


@contextlib.contextmanager
def active_expert(name: str | None) -> Iterator[None]:
    """Within the block, routed layers in this thread/task apply expert ``name`` (None: the base model)."""
    token = _ACTIVE.set(name)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


RowExperts = tuple[tuple[str, slice | torch.Tensor], ...]  # (expert, the batch rows it encodes)


@contextlib.contextmanager
def active_rows(experts: list[str | None]) -> Iterator[None]:
    """Within the block, routed layers apply ``experts[i]`` to row ``i`` of the batch (None: the base model): one
    mixed pass for a batch routed to several experts, each expert's factors applied to its own rows only. Rows
    of one expert that are adjacent are a slice (a view, no gather/scatter): order the batch by expert."""
    groups: dict[str, list[int]] = {}
    for row, name in enumerate(experts):
        if name is not None:
            groups.setdefault(name, []).append(row)
    token = _ACTIVE.set(tuple((name, slice(rows[0], rows[-1] + 1) if rows[-1] - rows[0] == len(rows) - 1
                               else torch.tensor(rows)) for name, rows in groups.items()))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class RoutedLoRALinear(nn.Module):
    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.adapters: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # expert -> (A^T, (B * alpha / r)^T)

    def _apply(self, fn, recurse: bool = True):
        """``.to()``, ``.cuda()`` and the like reach every expert's factors too (they are not parameters), so a
        model moved after its experts were attached (a loaded sentence-transformers model moved to its device)
        keeps them on the device of the layer they belong to."""
        super()._apply(fn, recurse)
        with _LOCK:
            self.adapters = {name: (fn(a), fn(b)) for name, (a, b) in self.adapters.items()}
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        name = _ACTIVE.get()
        if name is None:
            return out
        if isinstance(name, tuple):  # one expert per row: each expert's low-rank update on its rows
            for expert, rows in name:
                if (factors := self.adapters.get(expert)) is not None:
                    a, b = factors
                    update = (x[rows] @ a.to(x.dtype)) @ b.to(x.dtype)
                    if isinstance(rows, slice):  # in place on the rows' view: no gather, no scatter
                        out[rows] += update
                    else:
                        out.index_add_(0, rows.to(x.device), update)
            return out
        factors = self.adapters.get(name)
        if factors is None:  # this expert leaves this layer untouched
            return out
        a, b = factors
        return out + (x @ a.to(x.dtype)) @ b.to(x.dtype)


def lora_factors(state: dict[str, torch.Tensor], config: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """Map a peft LoRA state dict to ``{module path: (A, B, scale)}`` (paths relative to the base model)."""
    if not isinstance(config, dict):
        raise ValueError(f"adapter config must be a JSON object, got {type(config).__name__}")
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"only LoRA adapters are supported, got peft_type {config.get('peft_type')!r}")
    if config.get("use_rslora") or config.get("use_dora"):
        raise ValueError("rsLoRA and DoRA adapters are not supported")
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"adapter config 'r' must be a positive integer, got {r!r}")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or alpha <= 0:
        raise ValueError(f"adapter config 'lora_alpha' must be a positive number, got {alpha!r}")
    scale = float(alpha) / float(r)
    factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    for key, tensor in state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        path = key[: -len(".lora_A.weight")]
        path = path[len(_PEFT_PREFIX):] if path.startswith(_PEFT_PREFIX) else path
        b_key = key.replace(".lora_A.weight", ".lora_B.weight")
        if b_key not in state:
            raise ValueError(f"adapter has {key} but no {b_key}")
        a, b = tensor.detach().float(), state[b_key].detach().float()
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(f"adapter factors for {path!r} have shapes {tuple(a.shape)}/{tuple(b.shape)}, which do "
                             "not form a low-rank product")
        factors[path] = (a, b, scale)
    if not factors:
        raise ValueError("adapter contains no LoRA weights")
    return factors


def adapted_layers(factors: dict) -> set[int]:
    """The transformer layers an adapter changes (``encoder.layer.<i>.`` in its module paths)."""
    found = set()
    for path in factors:
        match = re.search(r"(?:^|\.)layers?\.(\d+)\.", path)
        if match is None:
            raise ValueError(f"adapter module {path!r} is not inside a numbered transformer layer")
        found.add(int(match.group(1)))
    return found


def attach_adapter(model: nn.Module, name: str, factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]]) -> None:
    """Add expert ``name`` to ``model`` (a Hugging Face transformer), wrapping target linears on first use."""
    with _LOCK:
        modules = dict(model.named_modules())
        for path, (a, b, scale) in factors.items():
            module = modules.get(path)
            if module is None:
                raise ValueError(f"adapter targets module {path!r}, which the base model does not have")
            if isinstance(module, nn.Linear):
                parent_path, _, child = path.rpartition(".")
                module = RoutedLoRALinear(module)
                setattr(modules[parent_path] if parent_path else model, child, module)
            if not isinstance(module, RoutedLoRALinear):
                raise ValueError(f"adapter targets {path!r}, a {type(module).__name__}, not a linear layer")
            if a.shape[1] != module.base.in_features or b.shape[0] != module.base.out_features:
                raise ValueError(
                    f"adapter factors for {path!r} have shapes {tuple(a.shape)}/{tuple(b.shape)}, but the layer "
                    f"maps {module.base.in_features} -> {module.base.out_features}"
                )
            device = module.base.weight.device
            module.adapters[name] = (a.T.contiguous().to(device), (b * scale).T.contiguous().to(device))


def detach_adapter(model: nn.Module, name: str) -> None:
    with _LOCK:
        for module in model.modules():
            if isinstance(module, RoutedLoRALinear):
                module.adapters.pop(name, None)
