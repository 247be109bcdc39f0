"""The multi-expert query encoder: one base model in memory, LoRA query experts applied per call.

``encode(texts, expert)`` runs one expert; ``encode_routed(texts, experts)`` takes one expert name per text and
runs each expert once over its group. The reserved expert ``base`` is the plain base model (which also encodes
every document). Expert choice is per call and per thread (``retriever.lora.active_expert``), never global.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from retriever.encoder import Encoder
from retriever.lora import active_expert, attach_adapter, detach_adapter
from retriever.systems import BASE

__all__ = ["BASE_EXPERT", "MultiExpertEncoder"]

BASE_EXPERT = BASE  # the reserved expert: the plain base model


class MultiExpertEncoder:
    def __init__(self, base: Encoder):
        self.base = base
        self._experts: set[str] = set()

    @property
    def info(self):
        return self.base.info

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def names(self) -> list[str]:
        """Every expert that can encode, ``base`` first."""
        return [BASE_EXPERT, *sorted(self._experts)]

    def add(self, name: str, factors: dict) -> None:
        if name == BASE_EXPERT:
            raise ValueError(f"{BASE_EXPERT!r} is reserved for the base model")
        attach_adapter(self.base.model[0].auto_model, name, factors)
        self._experts.add(name)

    def remove(self, name: str) -> None:
        self._check(name)
        if name == BASE_EXPERT:
            raise ValueError(f"{BASE_EXPERT!r} is the base model and cannot be removed")
        detach_adapter(self.base.model[0].auto_model, name)
        self._experts.discard(name)

    def _check(self, name: str) -> None:
        if name != BASE_EXPERT and name not in self._experts:
            raise ValueError(f"unknown expert {name!r}; available: {', '.join(self.names)}")

    def encode(
        self, texts: Sequence[str], expert: str = BASE_EXPERT, *, progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        self._check(expert)
        with active_expert(None if expert == BASE_EXPERT else expert):
            return self.base.encode(texts, progress=progress)

    def encode_routed(self, texts: Sequence[str], experts: Sequence[str]) -> np.ndarray:
        """Encode ``texts[i]`` with ``experts[i]``; each expert runs once over its group."""
        if len(texts) != len(experts):
            raise ValueError(f"{len(texts)} texts but {len(experts)} expert names")
        for name in set(experts):
            self._check(name)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(experts):
            groups.setdefault(name, []).append(i)
        for name, rows in groups.items():
            out[rows] = self.encode([texts[i] for i in rows], name)
        return out
