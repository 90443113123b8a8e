"""The training loop, spelled out: one epoch, validation, bookkeeping, the end.

:func:`train` is the entry point (``atomnet train``). It prepares the data and
model (:mod:`.prepare`), resumes from ``OUTDIR/checkpoint.atomnet`` when that
file exists, and then for each epoch: trains on shuffled batches (order fixed
by ``[seed, epoch]``), evaluates the validation set, keeps the best model,
appends to ``metrics.csv`` and writes the checkpoint. At the end the best
model is saved as ``OUTDIR/model.atomnet`` with the learning curve, the force
parity plot and a metrics table.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .. import io as model_io
from .. import keys
from .checkpoint import TrainState, restore_checkpoint, save_checkpoint
from .config import Config, load_config
from .data import batch_order
from .evaluation import evaluate_set, predict, reference
from .losses import LossWeights, check_finite, compute_loss
from .metrics import ErrorAccumulator, format_table
from .plots import force_parity, learning_curve
from .prepare import Prepared, prepare, write_split
from .resume import find_checkpoint, load_resume

CHECKPOINT = "checkpoint.atomnet"
MODEL = "model.atomnet"

#: called after every epoch with (epoch, history entry); may raise to stop the run
EpochHook = Callable[[int, dict], None]


@dataclass
class Run:
    """The mutable state of one training run."""

    config: Config
    prepared: Prepared
    optimizer: torch.optim.Optimizer
    scheduler: Any
    weights: LossWeights
    state: TrainState
    best_state: dict[str, torch.Tensor]

    @property
    def potential(self) -> torch.nn.Module:
        return self.prepared.potential

    @property
    def outdir(self) -> Path:
        return self.config.output.dir


@dataclass
class TrainResult:
    """What :func:`train` leaves behind."""

    model_path: Path
    metrics: dict[str, dict[str, float]]
    state: TrainState


def log(message: str) -> None:
    """One line to stdout without breaking the progress bar."""
    tqdm.write(message)


def make_optimizer(potential: torch.nn.Module, config: Config) -> tuple[Any, Any]:
    """AdamW and the learning-rate schedule of ``config.training``."""
    t = config.training
    optimizer = torch.optim.AdamW(potential.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    if t.scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=t.epochs, eta_min=t.lr * t.min_lr_factor
        )
    elif t.scheduler == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.5, patience=t.scheduler_patience, min_lr=t.lr * t.min_lr_factor
        )
    else:
        scheduler = None
    return optimizer, scheduler


def _state_copy(potential: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in potential.state_dict().items()}


def setup(config: Config) -> Run:
    """Prepare data and model; resume from the output folder's checkpoint if there is one."""
    prepared = prepare(config)
    t = config.training
    weights = LossWeights(t.energy_weight, t.forces_weight, t.stress_weight)
    optimizer, scheduler = make_optimizer(prepared.potential, config)
    split = {k: list(v) for k, v in prepared.split.items()}
    run = Run(config, prepared, optimizer, scheduler, weights, TrainState(split=split),
              _state_copy(prepared.potential))
    path = find_checkpoint(config.output.dir / CHECKPOINT)
    if path is not None:
        header, tensors = load_resume(path, config, split)
        run.state, run.best_state = restore_checkpoint(
            header, tensors, prepared.potential, optimizer, scheduler
        )
        if t.scheduler == "cosine":
            scheduler.T_max = t.epochs
        log(f"resuming from {path} (epoch {run.state.epoch} of {t.epochs} done)")
        if run.state.epoch >= t.epochs:
            log("training already complete; re-evaluating the best model "
                "(raise training.epochs to train further)")
    return run


def _lr(run: Run) -> float:
    return float(run.optimizer.param_groups[0]["lr"])


def train_epoch(run: Run, epoch: int, bar: tqdm) -> dict[str, float]:
    """One pass over the shuffled training set; returns the running train metrics."""
    data, t = run.prepared.data.train, run.config.training
    run.potential.train()
    acc = ErrorAccumulator()
    batches = batch_order(len(data), t.batch_size, seed=[t.seed, epoch])
    params = [p for p in run.potential.parameters() if p.requires_grad]
    for b, (graph, residuals) in enumerate(data.iterate(batches)):
        pred = predict(run.potential, graph, data.labels, create_graph=True)
        ref = reference(graph, residuals, data.labels)
        loss = compute_loss(pred, ref, run.weights)
        check_finite(loss.total, epoch, b, _lr(run))
        run.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        run.optimizer.step()
        acc.update(pred, ref, loss)
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.total.detach()):.3g}", refresh=False)
    return acc.compute()


def validate(run: Run) -> dict[str, float] | None:
    """Metrics of the current model on the validation set (None without one)."""
    valid = run.prepared.data.valid
    if valid is None:
        return None
    run.potential.eval()
    metrics, _ = evaluate_set(run.potential, valid, run.config.training.valid_batch_size,
                              run.weights)
    return metrics


def _entry(epoch: int, lr: float, seconds: float, train: dict, valid: dict | None) -> dict:
    entry: dict[str, float] = {"epoch": epoch, "lr": lr, "time_s": seconds}
    for prefix, metrics in (("train", train), ("valid", valid or {})):
        entry.update({f"{prefix}_{k}": v for k, v in metrics.items() if k != "n_structures"})
    return entry


def write_csv(history: list[dict], path: Path) -> None:
    """All epochs so far as CSV (rewritten, so a resumed run has one clean file)."""
    columns: list[str] = []
    for entry in history:
        columns += [k for k in entry if k not in columns]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)


def _summary(entry: dict, total: int, best: bool) -> str:
    text = f"epoch {entry['epoch']:>4}/{total}  lr {entry['lr']:.2e}  "
    text += f"train loss {entry['train_loss']:.3e}"
    for key, label, unit in (("valid_loss", "valid loss", ""),
                             ("valid_energy_mae_per_atom", "E MAE", " meV/atom"),
                             ("valid_forces_mae", "F MAE", " meV/Å")):
        if key in entry:
            value = entry[key]
            text += f"  {label} {value:.3e}" if not unit else f"  {label} {value:.2f}{unit}"
    return text + ("  *" if best else "")


def end_epoch(run: Run, epoch: int, train: dict, valid: dict | None, seconds: float) -> bool:
    """Book-keeping after an epoch: schedule, best model, CSV, checkpoint. True if best."""
    lr = _lr(run)
    score = (valid or train)["loss"]
    if run.scheduler is not None:
        args = (score,) if isinstance(run.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) \
            else ()
        run.scheduler.step(*args)
    state = run.state
    best = score < state.best_loss
    if best:
        state.best_loss, state.best_epoch = float(score), epoch
        run.best_state = _state_copy(run.potential)
    state.epoch = epoch
    state.elapsed_s += seconds
    state.history.append(_entry(epoch, lr, seconds, train, valid))
    run.outdir.mkdir(parents=True, exist_ok=True)
    write_csv(state.history, run.outdir / "metrics.csv")
    save_checkpoint(run.outdir / CHECKPOINT, run.potential, run.best_state, run.optimizer,
                    run.scheduler, state, run.config.to_dict())
    return best


def _last_valid(history: list[dict]) -> str:
    """Live metrics for the progress bar: the last validation errors."""
    if not history:
        return ""
    entry, parts = history[-1], []
    if "valid_energy_mae_per_atom" in entry:
        parts.append(f"E {entry['valid_energy_mae_per_atom']:.2f} meV/atom")
    if "valid_forces_mae" in entry:
        parts.append(f"F {entry['valid_forces_mae']:.1f} meV/Å")
    return f" [valid {', '.join(parts)}]" if parts else ""


def _should_stop(run: Run, started: float, last_epoch_s: float) -> str | None:
    t, state = run.config.training, run.state
    if t.patience is not None and state.epoch - state.best_epoch >= t.patience:
        return f"no improvement for {t.patience} epochs"
    if t.max_time_minutes is not None:
        if time.monotonic() - started + last_epoch_s > 60.0 * t.max_time_minutes:
            return f"time limit of {t.max_time_minutes} min reached"
    return None


def fit(run: Run, on_epoch_end: EpochHook | None = None) -> None:
    """Train from ``run.state.epoch`` to ``training.epochs`` (or an earlier stop)."""
    t, out = run.config.training, run.config.output
    first = run.state.epoch + 1
    n_batches = math.ceil(len(run.prepared.data.train) / t.batch_size)
    total = max(t.epochs - first + 1, 0) * n_batches
    started = time.monotonic()
    # disable=None: the bar shows on a terminal only, so logs get the summary lines alone
    bar = tqdm(total=total, unit="batch", disable=None if out.progress else True, leave=False)
    with bar:
        for epoch in range(first, t.epochs + 1):
            bar.set_description(f"epoch {epoch}/{t.epochs}{_last_valid(run.state.history)}")
            tick = time.monotonic()
            train = train_epoch(run, epoch, bar)
            valid = validate(run)
            seconds = time.monotonic() - tick
            best = end_epoch(run, epoch, train, valid, seconds)
            entry = run.state.history[-1]
            if epoch == first or epoch % out.log_every == 0 or epoch == t.epochs:
                log(_summary(entry, t.epochs, best))
            if on_epoch_end is not None:
                on_epoch_end(epoch, entry)
            reason = _should_stop(run, started, seconds)
            if reason:
                log(f"stopping after epoch {epoch}: {reason}")
                break


def save_model(run: Run, metrics: dict[str, dict[str, float]]) -> Path:
    """Write the best model (float64, exact E0s) with training information."""
    potential = copy.deepcopy(run.potential).to(device="cpu", dtype=torch.float64)
    potential.reference.set(run.prepared.e0s)
    data = run.prepared.data
    info = {
        "metrics": metrics,
        "datasets": {s.name: s.source for s in (data.train, data.valid, data.test) if s},
        "n_train": len(data.train),
        "n_valid": len(data.valid) if data.valid else 0,
        "n_test": len(data.test) if data.test else 0,
        "best_epoch": run.state.best_epoch,
        "epochs": run.state.epoch,
        "e0_source": run.prepared.e0_source,
        "statistics": run.prepared.statistics,
        "training": run.config.to_dict()["training"],
    }
    return model_io.save(potential, run.outdir / MODEL, info=info)


def finish(run: Run) -> TrainResult:
    """Best model → final metrics on every set, model file, plots and the table."""
    run.potential.load_state_dict(run.best_state)
    run.potential.eval()
    batch = run.config.training.valid_batch_size
    metrics, parity, parity_name = {}, None, None
    for data in (run.prepared.data.train, run.prepared.data.valid, run.prepared.data.test):
        if data is None:
            continue
        metrics[data.name], forces = evaluate_set(run.potential, data, batch, run.weights,
                                                  collect_forces=data.name != "train")
        if forces is not None:
            parity, parity_name = forces, data.name
    path = save_model(run, metrics)
    if run.state.history:
        learning_curve(run.state.history, run.outdir / "learning_curve.png")
    if parity is not None:
        force_parity(parity, run.outdir / "force_parity.png", f"{parity_name} set")
    (run.outdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log(f"best epoch {run.state.best_epoch}; model written to {path}")
    log(format_table(metrics))
    return TrainResult(path, metrics, run.state)


def _label_counts(data) -> str:
    """``energy, forces (12/20 structures)``: labels of a set, with how many carry each."""
    parts = []
    for label in data.labels:
        n = sum(bool(g[keys.mask(label)]) for g in data.graphs) \
            if keys.mask(label) in data.graphs[0] else len(data)
        parts.append(label if n == len(data) else f"{label} ({n}/{len(data)} structures)")
    return ", ".join(parts)


def train(config: Config | str | Path, on_epoch_end: EpochHook | None = None) -> TrainResult:
    """Train the potential described by ``config`` (a :class:`Config` or a YAML path)."""
    if not isinstance(config, Config):
        config = load_config(config)
    run = setup(config)
    config.output.dir.mkdir(parents=True, exist_ok=True)
    write_split(run.prepared, config.output.dir, config.data.train)
    p = run.prepared
    log(f"{len(p.data.train)} training structures ({p.data.train.n_atoms} atoms), "
        f"{len(p.data.valid) if p.data.valid else 0} validation, "
        f"{len(p.data.test) if p.data.test else 0} test; labels {_label_counts(p.data.train)}")
    log(f"E0s {p.e0_source}: " + ", ".join(f"{s} {v:.4f} eV" for s, v in p.e0s.items()))
    fit(run, on_epoch_end)
    return finish(run)
