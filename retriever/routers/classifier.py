"""Multinomial logistic regression on base query vectors, trained on the best-expert labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retriever.routers.base import Router, Routing, RoutingData, check_dim, register_router, softmax
from retriever.routers.settings import RouterOptions, check_seed

__all__ = ["ClassifierOptions", "ClassifierRouter"]


@dataclass(frozen=True)
class ClassifierOptions(RouterOptions):
    """``c``: the logistic regression's inverse regularisation strength (> 0); ``seed``: its random state."""

    c: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.c, int | float) or isinstance(self.c, bool) or not 0 < self.c < float("inf"):
            raise ValueError(f"c must be a finite number > 0, got {self.c!r}")
        check_seed(self.seed)


@register_router
class ClassifierRouter(Router):
    name = "classifier"
    Options = ClassifierOptions
    order = 10

    def __init__(self, systems, options, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, **context):
        super().__init__(systems, options, **context)
        self.coef, self.intercept, self.classes = coef, intercept, classes  # classes: index into experts

    @classmethod
    def _fit(cls, data: RoutingData, options: ClassifierOptions, **context) -> ClassifierRouter:
        from sklearn.linear_model import LogisticRegression

        y = np.array([data.systems.index(label) for label in data.labels])
        classes = np.unique(y)
        if len(classes) == 1:  # one label only: a constant router
            coef = np.zeros((1, data.vectors.shape[1]), dtype=np.float32)
            return cls(data.systems, options, coef, np.zeros(1, np.float32), classes, **context)
        model = LogisticRegression(C=options.c, max_iter=2000, random_state=options.seed).fit(data.vectors, y)
        coef, intercept = model.coef_, model.intercept_
        if len(classes) == 2:  # sklearn keeps one row for two classes: make it a two-way softmax
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        return cls(data.systems, options, coef.astype(np.float32), intercept.astype(np.float32), model.classes_,
                   **context)

    def _route(self, vectors: np.ndarray) -> Routing:
        vectors = check_dim(vectors, self.coef.shape[1])
        probs = softmax(vectors @ self.coef.T + self.intercept, temperature=1.0)
        weights = np.zeros((len(vectors), len(self.systems)), dtype=np.float32)
        weights[:, self.classes] = probs
        return Routing(self.systems, weights)

    def arrays(self):
        return {"coef": self.coef, "intercept": self.intercept, "classes": self.classes}

    @classmethod
    def from_arrays(cls, systems, options, arrays, extra, **context):
        return cls(systems, options, arrays["coef"], arrays["intercept"], arrays["classes"], **context)
