"""Name → builder registry for short-range models (the YAML ``model: type:``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Decorator: make a model class buildable as ``{"type": name, ...}``."""

    def wrap(cls):
        MODELS[name] = cls
        return cls

    return wrap


def build_model(config: dict, elements: Sequence[str], cutoff: float) -> nn.Module:
    """Build the short-range model described by ``config`` (its ``type`` plus hyper-parameters)."""
    config = dict(config)
    if "type" not in config:
        raise ValueError(f"model config needs a 'type' (one of {sorted(MODELS)})")
    kind = config.pop("type")
    if kind not in MODELS:
        raise ValueError(f"unknown model type {kind!r}; known: {sorted(MODELS)}")
    cls = MODELS[kind]
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "elements", "cutoff"}
    unknown = set(config) - allowed
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for model type {kind!r}; "
            f"allowed: {sorted(allowed)}"
        )
    return cls(elements=list(elements), cutoff=cutoff, **config)
