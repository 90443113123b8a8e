"""The learning rate as a closed-form function of the run's progress.

progress p ∈ [0, 1] is the fraction of ``training.epochs`` done (counted in
batches), or, with ``training.max_time_minutes``, the larger of that and the
fraction of the time budget used. Because the learning rate depends on p only
(no recursive scheduler state), a resumed run, or one extended to more epochs,
continues on the schedule of its final length.

    warm-up (p < w):  lr · max(p / w, 0.01)
    cosine:           lr · (m + (1 − m) · ½ (1 + cos π x)),  x = (p − w) / (1 − w)
    none:             lr
    stage two (p ≥ s): the above × lr_factor

with w = ``warmup_fraction``, m = ``min_lr_factor``, s = ``stage_two.start``.
The ``plateau`` scheduler is the exception: it reacts to the validation loss and
stays a ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (no warm-up or stage two).
"""

from __future__ import annotations

import math

from .config import TrainingConfig

#: stage two defaults, when ``training.stage_two`` leaves them out
STAGE_TWO_START = 0.75
STAGE_TWO_LR_FACTOR = 0.1


def progress(t: TrainingConfig, epochs_done: float, elapsed_s: float) -> float:
    """Fraction of the run done: of the epochs, or of the time budget if that is further."""
    p = epochs_done / t.epochs
    if t.max_time_minutes is not None:
        p = max(p, elapsed_s / (60.0 * t.max_time_minutes))
    return min(max(p, 0.0), 1.0)


def in_stage_two(t: TrainingConfig, p: float) -> bool:
    return t.stage_two is not None and p >= t.stage_two.get("start", STAGE_TWO_START)


def learning_rate(t: TrainingConfig, p: float) -> float:
    """The learning rate at progress ``p`` (not used by the plateau scheduler)."""
    w = t.warmup_fraction
    if p < w:
        factor = max(p / w, 0.01)
    elif t.scheduler == "cosine":
        x = (p - w) / (1.0 - w)
        m = t.min_lr_factor
        factor = m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * x))
    else:
        factor = 1.0
    if in_stage_two(t, p):
        factor *= t.stage_two.get("lr_factor", STAGE_TWO_LR_FACTOR)
    return t.lr * factor
