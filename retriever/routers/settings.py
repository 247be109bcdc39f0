"""Router settings as data: each router kind's options, the fallback requests, and the calibrated values.

A router's saved ``options`` (``routing.json``) are three frozen dataclasses written one after the other:

- ``RouterOptions`` — the kind's own fitting options (a subclass per kind: ``PilotOptions``, ...);
- ``FallbackRequests`` — what the user asked of fallbacks: ``fallback`` and ``novelty`` (``"none"``, ``"auto"``
  or a threshold) and the ``unfamiliar`` policy (``UnfamiliarPolicy``);
- ``Calibration`` — what ``fit_router`` chose from those requests: ``min_confidence``, ``min_similarity`` and the
  ``default`` system (and ``fold_gain``, which is saved in the router's info, not in its options).

A field that is None was not recorded (a plain ``Router.fit``, a router without reference vectors, a file from
before the field existed) and is not written, so a loaded ``routing.json`` is written back unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, ClassVar

__all__ = [
    "CALIBRATED_OPTIONS", "FALLBACKS", "REQUEST_OPTIONS", "UNFAMILIAR_POLICIES", "Calibration", "FallbackRequests",
    "RouterOptions", "ThresholdRequest", "UnfamiliarPolicy", "check_threshold", "parse_threshold",
    "split_options",
]


class ThresholdRequest(StrEnum):
    """The words a ``fallback`` or ``novelty`` request may be instead of a threshold in [0, 1)."""

    NONE = "none"  # no threshold: no query falls back on this signal
    AUTO = "auto"  # calibrated on the routing folds (``retriever.routers.calibration``)


class UnfamiliarPolicy(StrEnum):
    """Where queries the router does not recognise go."""

    AUTO = "auto"  # auto:base (retriever.ranking.unfamiliar: per corpus and query), the base without lexical systems
    CALIBRATED = "calibrated"  # whichever of base and hybrid:base the routing folds favour (before 2026-12-04)


FALLBACKS = tuple(request.value for request in ThresholdRequest)
UNFAMILIAR_POLICIES = tuple(policy.value for policy in UnfamiliarPolicy)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_threshold(name: str, value: str | float) -> None:
    """Refuse a ``fallback`` or ``novelty`` request that is not ``"none"``, ``"auto"`` or a threshold in [0, 1)."""
    if isinstance(value, str) and value in FALLBACKS:
        return
    if _is_number(value) and 0 <= value < 1:
        return
    raise ValueError(f"{name} must be 'none', 'auto' or a threshold in [0, 1), got {value!r}")


def parse_threshold(value: str) -> str | float:
    """A ``--fallback``/``--novelty`` value as typed: ``"none"``, ``"auto"`` or a threshold in [0, 1) (a float)."""
    if value in FALLBACKS:
        return value
    try:
        threshold = float(value)
        check_threshold("threshold", threshold)
    except ValueError:
        raise ValueError(f"{value!r} is not 'none', 'auto' or a number in [0, 1)") from None
    return threshold


def check_unfamiliar(value: str) -> UnfamiliarPolicy:
    if not isinstance(value, str) or value not in UNFAMILIAR_POLICIES:
        raise ValueError(f"unfamiliar must be one of {', '.join(UNFAMILIAR_POLICIES)}, got {value!r}")
    return UnfamiliarPolicy(value)


def _recorded(record) -> dict:
    """A settings dataclass as saved: its fields in order, those not recorded (None) left out."""
    return {f.name: getattr(record, f.name) for f in fields(record) if getattr(record, f.name) is not None}


@dataclass(frozen=True)
class RouterOptions:
    """A router kind's own fitting options (subclassed per kind); ``to_json`` is how they are saved."""

    def to_json(self) -> dict:
        return _recorded(self)

    @classmethod
    def from_json(cls, options: Mapping[str, Any]) -> RouterOptions:
        """These options from their saved mapping, which records every one of them (as ``to_json`` writes them):
        a key the kind does not take, or one missing, is an error naming the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown, missing = sorted(set(options) - set(valid)), [k for k in valid if k not in options]
        if unknown or missing:
            problem = f"unknown router option {', '.join(map(repr, unknown))}" if unknown else \
                f"missing router option {', '.join(map(repr, missing))}"
            raise ValueError(f"{problem}; valid: {', '.join(valid) or 'none'}")
        return cls(**options)


def check_seed(seed: Any) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")


@dataclass(frozen=True)
class FallbackRequests:
    """The fallbacks the user asked for (``fit_router``'s ``fallback``, ``novelty`` and ``unfamiliar``); None: not
    recorded (``novelty`` for a router without reference vectors, every field for a plain ``Router.fit``)."""

    fallback: str | float | None = None
    unfamiliar: UnfamiliarPolicy | None = None
    novelty: str | float | None = None

    def __post_init__(self):
        if self.unfamiliar is not None:
            object.__setattr__(self, "unfamiliar", check_unfamiliar(self.unfamiliar))
        for name in ("fallback", "novelty"):
            value = getattr(self, name)
            if value is not None:
                check_threshold(name, value)
                if isinstance(value, str):
                    object.__setattr__(self, name, ThresholdRequest(value))


@dataclass(frozen=True)
class Calibration:
    """What ``fit_router`` chose: the confidence and similarity below which a query goes to the ``default`` system,
    and the router's ``fold_gain`` (its gain over the base on the routing folds, as fitted; not saved in the
    options). None: not recorded (no similarity threshold for a router without reference vectors)."""

    min_confidence: float | None = None
    min_similarity: float | None = None
    default: str | None = None
    fold_gain: Mapping[str, float] | None = None

    SAVED: ClassVar[tuple[str, ...]] = ("min_confidence", "min_similarity", "default")  # in the saved options

    def __post_init__(self):
        for name in ("min_confidence", "min_similarity"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 (a threshold), got {value!r}")
        if self.default is not None and (not isinstance(self.default, str) or not self.default):
            raise ValueError(f"default must be a system name (base, auto:base, an expert, ...), got {self.default!r}")
        if self.fold_gain is not None:
            if not isinstance(self.fold_gain, Mapping) or not all(
                    isinstance(k, str) and _is_number(v) for k, v in self.fold_gain.items()):
                raise ValueError(f"fold_gain must map fold settings to finite numbers, got {self.fold_gain!r}")
            object.__setattr__(self, "fold_gain", dict(self.fold_gain))


REQUEST_OPTIONS = tuple(f.name for f in fields(FallbackRequests))
CALIBRATED_OPTIONS = Calibration.SAVED  # what fit_router sets: never carried over to a refit


def saved_options(options: RouterOptions, requests: FallbackRequests, calibration: Calibration) -> dict:
    """The saved ``options`` mapping, in the order ``routing.json`` has always had: the kind's options, then
    ``fallback``, ``min_confidence``, ``unfamiliar``, ``novelty``, ``min_similarity``, ``default``."""
    record = {**_recorded(requests), **{k: getattr(calibration, k) for k in Calibration.SAVED}}
    order = ("fallback", "min_confidence", "unfamiliar", "novelty", "min_similarity", "default")
    return {**options.to_json(), **{k: record[k] for k in order if record.get(k) is not None}}


def split_options(kind: type[RouterOptions], saved: Mapping[str, Any]) -> tuple[RouterOptions, FallbackRequests,
                                                                                Calibration]:
    """A saved ``options`` mapping as the three dataclasses (``kind``: the router's ``RouterOptions`` class)."""
    if not isinstance(saved, Mapping):
        raise ValueError(f"router options must be a mapping, got {saved!r}")
    requests = FallbackRequests(**{k: saved[k] for k in REQUEST_OPTIONS if k in saved})
    calibration = Calibration(**{k: saved[k] for k in CALIBRATED_OPTIONS if k in saved})
    own = {k: v for k, v in saved.items() if k not in REQUEST_OPTIONS and k not in CALIBRATED_OPTIONS}
    return kind.from_json(own), requests, calibration
