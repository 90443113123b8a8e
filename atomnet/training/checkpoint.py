"""Training checkpoints: safetensors + a JSON header. No pickle, no ``torch.save``.

Tensors: ``model.<name>`` (current weights and buffers), ``best.<name>`` (the
best model so far), ``optimizer.<param index>.<name>`` (e.g. Adam's
``exp_avg``, ``exp_avg_sq``, ``step``), ``ema.<param index>`` (the weights'
moving average, with ``training.ema_decay``) and ``rng.torch``. The JSON header
(metadata entry ``"atomnet_checkpoint"``) holds the optimizer's param groups
and non-tensor state, the plateau scheduler's state, the EMA's update count,
the number of processes that trained, the training progress
(:class:`TrainState`), the RNG states of Python and NumPy, and the config.
Files are written atomically (temporary file, then rename), so a run killed
while writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from ..errors import AtomnetError
from ..io.model_file import write_atomic

FORMAT = "atomnet-checkpoint/1"
_KEY = "atomnet_checkpoint"


class CheckpointError(AtomnetError, ValueError):
    """A checkpoint is missing, malformed or does not match the run."""


@dataclass
class TrainState:
    """Progress of a run. ``epoch``: epochs completed; losses in eV² units."""

    epoch: int = 0
    best_epoch: int = 0
    best_loss: float = float("inf")
    elapsed_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    split: dict[str, list[int]] = field(default_factory=dict)


def _tensors(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().clone().contiguous() for k, v in state.items()}


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state dict → (tensors, JSON part)."""
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().clone().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, entries in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    kind, keys_, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [kind, keys_.tolist(), int(pos), int(has_gauss), float(cached)]
    version, internal, gauss = random.getstate()
    return {"rng.torch": torch.get_rng_state()}, {
        "numpy": numpy_state, "python": [version, list(internal), gauss],
    }


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    kind, keys_, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.array(keys_, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def _atomic_write(tensors: dict[str, torch.Tensor], header: dict, path: Path) -> None:
    write_atomic(tensors, {_KEY: json.dumps(header)}, path)


def save_checkpoint(
    path: str | Path,
    potential: torch.nn.Module,
    best_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainState,
    config: dict,
    ema: Any = None,
    world_size: int = 1,
) -> Path:
    """Write the complete training state to ``path`` atomically."""
    tensors = _tensors("model", potential.state_dict())
    if ema is not None:
        tensors.update(_tensors("ema", ema.tensors()))
    tensors.update(_tensors("best", best_state))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    rng_tensors, rng_meta = _rng_state()
    tensors.update(rng_tensors)
    header = {
        "format": FORMAT,
        "state": asdict(state),
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_meta,
        "config": config,
        "ema": {"updates": ema.updates} if ema is not None else None,
        "world_size": int(world_size),
    }
    path = Path(path)
    _atomic_write(tensors, header, path)
    return path


def _check_header(header: Any, path: Path) -> dict:
    """Fields :func:`restore_checkpoint` and resuming rely on; raises naming the field."""

    def fail(field: str, what: str, value: Any) -> None:
        text = repr(value)
        text = text if len(text) <= 60 else text[:57] + "..."
        raise CheckpointError(f"{path}: checkpoint header field '{field}' must be {what}, "
                              f"got {text}")

    def need(obj: dict, field: str, kind: type | tuple, what: str, prefix: str = "") -> Any:
        name = f"{prefix}.{field}" if prefix else field
        if field not in obj:
            raise CheckpointError(f"{path}: checkpoint header field '{name}' is missing")
        if not isinstance(obj[field], kind) or isinstance(obj[field], bool) and kind is not bool:
            fail(name, what, obj[field])
        return obj[field]

    if not isinstance(header, dict):
        fail("", "a JSON object", header)
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {header.get('format')!r}")
    state = need(header, "state", dict, "a JSON object")
    fields = set(TrainState.__dataclass_fields__)
    unknown = sorted(set(state) - fields)
    if unknown:
        raise CheckpointError(f"{path}: checkpoint header field 'state.{unknown[0]}' is unknown")
    for key, kind, what in (("epoch", int, "an integer"), ("best_epoch", int, "an integer"),
                            ("best_loss", (int, float), "a number"),
                            ("elapsed_s", (int, float), "a number"),
                            ("history", list, "a list"), ("split", dict, "a JSON object")):
        if key in state:
            need(state, key, kind, what, "state")
    optimizer = need(header, "optimizer", dict, "a JSON object")
    need(optimizer, "param_groups", list, "a list", "optimizer")
    scalars = need(optimizer, "scalars", dict, "a JSON object", "optimizer")
    for index, entries in scalars.items():
        if not index.isdigit() or not isinstance(entries, dict):
            fail(f"optimizer.scalars.{index}", "an object under a parameter index", entries)
    if "scheduler" not in header:
        raise CheckpointError(f"{path}: checkpoint header field 'scheduler' is missing")
    if header["scheduler"] is not None and not isinstance(header["scheduler"], dict):
        fail("scheduler", "a JSON object or null", header["scheduler"])
    rng = need(header, "rng", dict, "a JSON object")
    if not (isinstance(rng.get("numpy"), list) and len(rng["numpy"]) == 5):
        fail("rng.numpy", "a list of 5 entries", rng.get("numpy"))
    if not (isinstance(rng.get("python"), list) and len(rng["python"]) == 3):
        fail("rng.python", "a list of 3 entries", rng.get("python"))
    need(header, "config", dict, "a JSON object")
    if header.get("ema") is not None:
        ema = need(header, "ema", dict, "a JSON object or null")
        need(ema, "updates", int, "an integer", "ema")
    if "world_size" in header:
        need(header, "world_size", int, "an integer")
    return header


def read_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(header, tensors) of a checkpoint, read with safetensors and json only.

    The header is parsed with bounded nesting and checked field by field before any
    tensor is read; every problem is a :class:`CheckpointError` naming the field.
    """
    from ..io.header import MAX_DEPTH, nesting_depth

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if _KEY not in meta:
                raise CheckpointError(
                    f"{path}: safetensors file without an atomnet checkpoint header"
                )
            text = meta[_KEY]
            if nesting_depth(text) > MAX_DEPTH:
                raise CheckpointError(f"{path}: corrupt checkpoint header (nested too deeply)")
            try:
                header = json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise CheckpointError(f"{path}: corrupt checkpoint header ({exc})") from exc
            _check_header(header, path)
            names = list(f.keys())
            for name in names:
                prefix, _, rest = name.partition(".")
                ok = (prefix in ("model", "best") and rest) or name == "rng.torch" or (
                    prefix == "ema" and rest.isdigit()) or (
                    prefix == "optimizer" and rest.partition(".")[0].isdigit()
                    and rest.partition(".")[2])
                if not ok:
                    raise CheckpointError(f"{path}: unexpected tensor {name!r} in the checkpoint")
            tensors = {k: f.get_tensor(k) for k in names}
    except CheckpointError:
        raise
    except Exception as exc:  # SafetensorError, OSError, ...: anything the parser objects to
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    return header, tensors


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def restore_checkpoint(
    header: dict,
    tensors: dict[str, torch.Tensor],
    potential: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    ema: Any = None,
) -> tuple[TrainState, dict[str, torch.Tensor]]:
    """Load weights, optimizer, scheduler, EMA and RNG states in place.

    Returns the :class:`TrainState` and the best model's state dict.
    """
    potential.load_state_dict(_prefixed(tensors, "model"), strict=True)
    device = next(iter(potential.parameters())).device
    opt = _unflatten_optimizer(_prefixed(tensors, "optimizer"), header["optimizer"])
    for entries in opt["state"].values():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor) and name != "step":
                entries[name] = value.to(device)
    optimizer.load_state_dict(opt)
    if scheduler is not None and header["scheduler"] is not None:
        scheduler.load_state_dict(header["scheduler"])
    _set_rng_state(tensors, header["rng"])
    if ema is not None:
        saved = _prefixed(tensors, "ema")
        if header.get("ema") is None or not saved:
            raise CheckpointError("the checkpoint has no weight average (it was written "
                                  "without training.ema_decay)")
        ema.load(saved, header["ema"]["updates"])
    best = {k: v.to(device) for k, v in _prefixed(tensors, "best").items()}
    return TrainState(**header["state"]), best
