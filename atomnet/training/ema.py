"""Exponential moving average of the weights (``training.ema_decay``).

After each optimizer step the average moves towards the weights,
ā ← d·ā + (1 − d)·θ, with d = min(decay, (1 + n)/(10 + n)) after n updates, so
that the first steps, far from the final weights, are soon forgotten.
Validation, the choice of the best model and the saved model use the average
(:meth:`EMA.applied`); training steps use the raw weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class EMA:
    """The moving average of ``params`` (a list of the trained parameters)."""

    def __init__(self, params: list[torch.Tensor], decay: float):
        self.params = params
        self.decay = float(decay)
        self.shadow = [p.detach().clone() for p in params]
        self.updates = 0

    def decay_now(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights (call after each step)."""
        d = self.decay_now()
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - d)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the parameters hold the average; restored after."""
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)

    def tensors(self) -> dict[str, torch.Tensor]:
        """For checkpoints: ``{index: average}``."""
        return {str(k): s.detach().cpu().clone().contiguous() for k, s in enumerate(self.shadow)}

    def load(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        if len(tensors) != len(self.shadow):
            raise ValueError(f"EMA state has {len(tensors)} tensors, the model "
                             f"{len(self.shadow)} parameters")
        with torch.no_grad():
            for k, s in enumerate(self.shadow):
                s.copy_(tensors[str(k)])
        self.updates = int(updates)
