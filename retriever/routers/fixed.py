"""Always one expert (``base`` is the base model itself): the router behind a single system."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retriever.routers.base import BASE, Router, Routing, RoutingData, register_router
from retriever.routers.settings import RouterOptions

__all__ = ["FixedOptions", "FixedRouter"]


@dataclass(frozen=True)
class FixedOptions(RouterOptions):
    """``expert``: the one expert (system) every query goes to."""

    expert: str = BASE

    def __post_init__(self):
        if not isinstance(self.expert, str) or not self.expert:
            raise ValueError(f"expert must be an expert's name (base for the base model), got {self.expert!r}")


@register_router
class FixedRouter(Router):
    name = "fixed"
    Options = FixedOptions
    order = 90
    fitted = False

    @classmethod
    def _fit(cls, data: RoutingData, options: FixedOptions, **context) -> FixedRouter:
        if options.expert not in data.systems:
            raise ValueError(f"unknown expert {options.expert!r}; available: {', '.join(data.systems)}")
        return cls(data.systems, options, **context)

    def _route(self, vectors: np.ndarray) -> Routing:
        weights = np.zeros((len(vectors), len(self.systems)), dtype=np.float32)
        weights[:, self.systems.index(self.settings.expert)] = 1.0
        return Routing(self.systems, weights)

    def arrays(self):
        return {}

    @classmethod
    def from_arrays(cls, systems, options, arrays, extra, **context):
        return cls(systems, options, **context)
