"""Multinomial logistic regression on base query vectors, trained on the best-expert labels."""

from __future__ import annotations

import numpy as np

from retriever.routers.base import Router, Routing, RoutingData, check_dim, register_router, softmax

__all__ = ["ClassifierRouter"]


@register_router
class ClassifierRouter(Router):
    name = "classifier"
    order = 10

    def __init__(self, experts, options, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray):
        super().__init__(experts, options)
        self.coef, self.intercept, self.classes = coef, intercept, classes  # classes: index into experts

    @classmethod
    def fit(cls, data: RoutingData, c: float = 1.0, seed: int = 0) -> ClassifierRouter:
        from sklearn.linear_model import LogisticRegression

        y = np.array([data.experts.index(label) for label in data.labels])
        classes = np.unique(y)
        if len(classes) == 1:  # one label only: a constant router
            coef = np.zeros((1, data.vectors.shape[1]), dtype=np.float32)
            return cls(data.experts, {"c": c, "seed": seed}, coef, np.zeros(1, np.float32), classes)
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(data.vectors, y)
        coef, intercept = model.coef_, model.intercept_
        if len(classes) == 2:  # sklearn keeps one row for two classes: make it a two-way softmax
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        return cls(data.experts, {"c": c, "seed": seed}, coef.astype(np.float32), intercept.astype(np.float32),
                   model.classes_)

    def _route(self, vectors: np.ndarray) -> Routing:
        vectors = check_dim(vectors, self.coef.shape[1])
        probs = softmax(vectors @ self.coef.T + self.intercept, temperature=1.0)
        weights = np.zeros((len(vectors), len(self.experts)), dtype=np.float32)
        weights[:, self.classes] = probs
        return Routing(self.experts, weights)

    def arrays(self):
        return {"coef": self.coef, "intercept": self.intercept, "classes": self.classes}

    @classmethod
    def from_arrays(cls, experts, options, arrays, extra):
        return cls(experts, options, arrays["coef"], arrays["intercept"], arrays["classes"])
