"""Always one expert (``base`` is the base model itself): the router behind a single system."""

from __future__ import annotations

import numpy as np

from retriever.routers.base import Router, Routing, RoutingData, register_router

__all__ = ["FixedRouter"]


@register_router
class FixedRouter(Router):
    name = "fixed"
    order = 90
    fitted = False

    @classmethod
    def fit(cls, data: RoutingData, expert: str = "base") -> FixedRouter:
        if expert not in data.experts:
            raise ValueError(f"unknown expert {expert!r}; available: {', '.join(data.experts)}")
        return cls(data.experts, {"expert": expert})

    def _route(self, vectors: np.ndarray) -> Routing:
        weights = np.zeros((len(vectors), len(self.experts)), dtype=np.float32)
        weights[:, self.experts.index(self.options["expert"])] = 1.0
        return Routing(self.experts, weights)

    def arrays(self):
        return {}

    @classmethod
    def from_arrays(cls, experts, options, arrays, extra):
        return cls(experts, options)
