"""Deciding whether and how a run resumes from the checkpoint in its output folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError, read_checkpoint
from .config import Config, DataConfig, TrainingConfig

#: training options that may change between a run and its resumption
MAY_CHANGE = {"epochs", "max_time_minutes", "device", "patience", "valid_batch_size"}
_PATH_KEYS = {"train", "valid", "test", "isolated_atoms"}


def find_checkpoint(path: Path) -> Path | None:
    """``path`` if a checkpoint exists there, else None."""
    return path if path.is_file() else None


def _defaults(section: str) -> dict[str, Any]:
    """Default values of a section's options (an older checkpoint may lack newer keys)."""
    cls = {"data": DataConfig, "training": TrainingConfig}.get(section)
    if cls is None:
        return {}
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}


def _differences(old: dict[str, Any], new: dict[str, Any], section: str) -> list[str]:
    out = []
    defaults = _defaults(section)
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, defaults.get(key)), new.get(key)
        if section == "training" and key in MAY_CHANGE:
            continue
        if section == "data" and key in _PATH_KEYS and a is not None and b is not None:
            a, b = Path(a).name, Path(b).name  # the folder may have moved
        if a != b:
            out.append(f"{section}.{key}: {a!r} → {b!r}")
    return out


def load_resume(
    path: Path, config: Config, split: dict[str, list[int]]
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read the checkpoint and check that it belongs to this config and data split."""
    header, tensors = read_checkpoint(path)
    old, new = header["config"], config.to_dict()
    diffs = []
    for section in ("data", "model", "training"):
        diffs += _differences(old.get(section, {}), new[section], section)
    if diffs:
        raise CheckpointError(
            f"{path} was written with a different configuration ({'; '.join(diffs)}); "
            f"delete it to start afresh or choose another output.dir"
        )
    if header["state"].get("split") != split:
        raise CheckpointError(
            f"{path}: the data split differs from the checkpoint's (did the data files "
            f"change?); delete it to start afresh or choose another output.dir"
        )
    return header, tensors
