"""The training loop, spelled out: one epoch, validation, bookkeeping, the end.

:func:`train` is the entry point (``atomnet train``). It prepares the data and
model (:mod:`.prepare`), resumes from ``OUTDIR/checkpoint.atomnet`` when that
file exists, and then for each epoch: trains on shuffled global batches (order
fixed by ``[seed, epoch]``; each rank of a ``torchrun`` run takes its shard,
:mod:`.distributed`), sets the learning rate of every step from the run's
progress (:mod:`.schedule`), updates the weights' moving average (:mod:`.ema`),
evaluates the validation set (with the averaged weights), keeps the best model,
appends to ``metrics.csv`` and writes the checkpoint. At the end the best model
is saved as ``OUTDIR/model.atomnet`` with the learning curve, the force parity
plot and a metrics table. Only rank 0 writes files and logs.
"""

from __future__ import annotations

import contextlib
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
from . import distributed, schedule
from .checkpoint import TrainState, restore_checkpoint, save_checkpoint
from .compiled import CompiledStep, check_labels
from .config import Config, load_config
from .data import batch_order
from .ema import EMA
from .evaluation import evaluate_set, predict, reference
from .losses import TERMS, LossWeights, check_finite, combine, loss_sums
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
    ema: EMA | None = None
    world: distributed.World = distributed.World()
    #: seconds on rank 0's clock (state.elapsed_s at this session's start, and when)
    clock_origin: tuple[float, float] = (0.0, 0.0)
    #: rank 0's elapsed seconds at the last synchronisation (drives the schedule)
    elapsed: float = 0.0
    #: epoch and time (monotonic) of the last checkpoint written
    saved: tuple[int, float] = (-1, 0.0)
    #: rows of metrics.csv written by this session (0: rewrite it)
    csv_rows: int = 0
    #: False while an epoch is under way (the weights are then between two states)
    between_epochs: bool = True
    #: the compiled training step (``training.compile``), else None
    compiled: CompiledStep | None = None

    @property
    def params(self) -> list[torch.Tensor]:
        return [p for p in self.potential.parameters() if p.requires_grad]

    def local_elapsed(self) -> float:
        """Seconds of training so far, this session included, on this process's clock."""
        before, since = self.clock_origin
        return before + time.monotonic() - since

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
    """AdamW and, for ``scheduler: plateau``, its ReduceLROnPlateau (else None: the
    learning rate of each step comes from :func:`.schedule.learning_rate`)."""
    t = config.training
    params = list(potential.parameters())
    # the fused kernel: one call for every parameter (0.84 -> 0.18 ms a step for the
    # equivariant `medium` model on one CPU thread; ~7 % of a compiled ethanol epoch)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay,
                                  fused=fused or None)
    scheduler = None
    if t.scheduler == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.5, patience=t.scheduler_patience, min_lr=t.lr * t.min_lr_factor
        )
    return optimizer, scheduler


def _state_copy(potential: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in potential.state_dict().items()}


def _rank_device(config: Config, world: distributed.World) -> None:
    """One GPU per rank: ``cuda``/``auto`` become ``cuda:LOCAL_RANK`` under torchrun."""
    t = config.training
    if world.distributed and (t.device == "cuda" or (
            t.device == "auto" and torch.cuda.is_available())):
        t.device = f"cuda:{world.local_rank}"


def setup(config: Config, world: distributed.World | None = None) -> Run:
    """Prepare data and model; resume from the output folder's checkpoint if there is one."""
    world = world or distributed.World()
    _rank_device(config, world)
    t = config.training
    prepared = prepare(config)
    distributed.init(world, next(prepared.potential.parameters()).device)
    distributed.sync_parameters(world, prepared.potential)
    weights = LossWeights(*(getattr(t, f"{k}_weight") for k in TERMS))
    optimizer, scheduler = make_optimizer(prepared.potential, config)
    split = {k: list(v) for k, v in prepared.split.items()}
    run = Run(config, prepared, optimizer, scheduler, weights, TrainState(split=split),
              _state_copy(prepared.potential), world=world)
    if t.ema_decay is not None:
        run.ema = EMA(run.params, t.ema_decay)
    if t.compile:
        check_labels(prepared.data.train.labels, str(config.source or "config"))
        run.compiled = CompiledStep(prepared.potential)
    path = find_checkpoint(config.output.dir / CHECKPOINT)
    if path is not None:
        header, tensors = load_resume(path, config, split)
        run.state, run.best_state = restore_checkpoint(
            header, tensors, prepared.potential, optimizer, scheduler, run.ema
        )
        say = log if world.main else (lambda message: None)
        saved_world = header.get("world_size", 1)
        if saved_world != world.size:
            say(f"note: the checkpoint was written by {saved_world} process(es), this run has "
                f"{world.size}: the global batch changes from {saved_world * t.batch_size} "
                f"to {world.size * t.batch_size} structures")
        say(f"resuming from {path} (epoch {run.state.epoch} of {t.epochs} done)")
        if run.state.epoch >= t.epochs:
            say("training already complete; re-evaluating the best model "
                "(raise training.epochs to train further)")
    run.clock_origin = (run.state.elapsed_s, time.monotonic())
    run.elapsed = run.state.elapsed_s
    return run


def _lr(run: Run) -> float:
    return float(run.optimizer.param_groups[0]["lr"])


def _weights(run: Run, p: float) -> LossWeights:
    """The loss weights at progress ``p`` (stage two may replace them)."""
    t = run.config.training
    if not schedule.in_stage_two(t, p):
        return run.weights
    return LossWeights(*(t.stage_two.get(f"{k}_weight", getattr(run.weights, k)) for k in TERMS))


def _denominators(
    table, batch: list[int], dtype: torch.dtype, device: torch.device
) -> dict[str, torch.Tensor]:
    """The global batch's loss denominators, from the set's per-structure table: every
    rank knows them without communicating."""
    return {k: torch.tensor(v, dtype=dtype, device=device)
            for k, v in table.denominators(batch).items()}


def _set_lr(run: Run, p: float) -> None:
    if run.scheduler is None:
        lr = schedule.learning_rate(run.config.training, p)
        for group in run.optimizer.param_groups:
            group["lr"] = lr


def train_epoch(run: Run, epoch: int, bar: tqdm) -> tuple[dict[str, float], bool]:
    """One pass over the shuffled training set (this rank's shard of each global batch).

    Returns the train metrics (pooled over ranks) and whether the time budget ran out
    during the epoch (the epoch then ends early).
    """
    data, t, world = run.prepared.data.train, run.config.training, run.world
    run.potential.train()
    acc = ErrorAccumulator()
    batches = batch_order(len(data), t.batch_size * world.size, seed=[t.seed, epoch])
    if run.compiled is not None and len(batches) > 1 \
            and len(batches[-1]) < t.batch_size * world.size:
        batches = batches[:-1]  # full batches keep one shape: one compiled graph
    shards = [world.shard(b) for b in batches]
    stream = data.iterate([s for s in shards if s])
    table = data.structure_table() if world.distributed else None
    params = run.params
    dtype, device = params[0].dtype, params[0].device
    out_of_time = False
    for b, shard in enumerate(shards):
        p = schedule.progress(t, epoch - 1 + b / len(batches), run.elapsed)
        weights = _weights(run, p)
        run.optimizer.zero_grad(set_to_none=True)
        local = torch.zeros((), dtype=dtype, device=device)
        if shard:
            graph, residuals = next(stream)
            ref = reference(graph, residuals, data.labels)
            # each rank's loss is its share of the global batch's mean
            denominators = None if table is None else \
                _denominators(table, batches[b], dtype, device)
            step = None if run.compiled is None else \
                run.compiled(graph, ref, weights, denominators)
            if step is not None:  # gradients set
                local, pred = step
            else:
                pred = predict(run.potential, graph, data.labels, create_graph=True)
                local = combine(loss_sums(pred, ref, weights), weights, denominators).total
                local.backward()
        # one collective: gradients, the loss and rank 0's clock (drives the schedule)
        clock = run.local_elapsed() if world.main else 0.0
        extra = torch.tensor([float(local.detach()), clock], dtype=torch.float64)
        total, elapsed = distributed.all_sum_gradients(world, params, extra).tolist()
        run.elapsed = elapsed
        check_finite(torch.tensor(total), epoch, b, _lr(run))
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        _set_lr(run, p)
        run.optimizer.step()
        if run.ema is not None:
            run.ema.update()
        if shard:
            acc.update(pred, ref)
            acc.add_loss(total, len(shard))
        bar.update(1)
        bar.set_postfix(loss=f"{total:.3g}", refresh=False)
        if t.max_time_minutes is not None and run.elapsed >= 60.0 * t.max_time_minutes:
            out_of_time = True
            break
    if world.distributed:
        acc.reduce(world.all_sum)
    return acc.compute(), out_of_time


def _averaged(run: Run):
    """Context in which the parameters hold the EMA weights (a no-op without EMA)."""
    return run.ema.applied() if run.ema is not None else contextlib.nullcontext()


def validate(run: Run) -> dict[str, float] | None:
    """Metrics of the model (EMA weights if any) on the validation set (None without
    one). Ranks share the batches and pool their sums."""
    valid = run.prepared.data.valid
    if valid is None:
        return None
    run.potential.eval()
    with _averaged(run):
        metrics, _ = evaluate_set(run.potential, valid, run.config.training.valid_batch_size,
                                  run.weights, world=run.world)
    return metrics


def _entry(epoch: int, lr: float, seconds: float, train: dict, valid: dict | None) -> dict:
    entry: dict[str, float] = {"epoch": epoch, "lr": lr, "time_s": seconds}
    for prefix, metrics in (("train", train), ("valid", valid or {})):
        entry.update({f"{prefix}_{k}": v for k, v in metrics.items() if k != "n_structures"})
    return entry


def _columns(history: list[dict]) -> list[str]:
    columns: list[str] = []
    for entry in history:
        columns += [k for k in entry if k not in columns]
    return columns


def write_csv(history: list[dict], path: Path, rows_in_file: int = 0) -> int:
    """All epochs so far as CSV. Rows are appended when the file already holds the
    first ``rows_in_file`` of them with the same columns, else the file is rewritten
    (so a resumed run has one clean file). Returns the rows now in the file."""
    columns = _columns(history)
    if 0 < rows_in_file < len(history) and path.is_file() and \
            _columns(history[:rows_in_file]) == columns:
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=columns).writerows(history[rows_in_file:])
        return len(history)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)
    return len(history)


def _summary(entry: dict, total: int, best: bool) -> str:
    text = f"epoch {entry['epoch']:>4}/{total}  lr {entry['lr']:.2e}  "
    text += f"train loss {entry['train_loss']:.3e}"
    for key, label, unit in (("valid_loss", "valid loss", ""),
                             ("valid_energy_mae_per_atom", "E MAE", " meV/atom"),
                             ("valid_forces_mae", "F MAE", " meV/Å"),
                             ("valid_dipole_mae", "μ MAE", " me·Å"),
                             ("valid_charges_mae", "q MAE", " me")):
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
        with _averaged(run):
            run.best_state = _state_copy(run.potential)
    state.epoch = epoch
    state.elapsed_s = run.local_elapsed()
    state.history.append(_entry(epoch, lr, seconds, train, valid))
    if run.world.main:
        run.outdir.mkdir(parents=True, exist_ok=True)
        run.csv_rows = write_csv(state.history, run.outdir / "metrics.csv", run.csv_rows)
        if time.monotonic() - run.saved[1] >= run.config.output.checkpoint_seconds:
            checkpoint(run)
    return best


def checkpoint(run: Run) -> None:
    """Write the training state (rank 0; skipped when this epoch's is already written)."""
    if not run.world.main or run.saved[0] == run.state.epoch:
        return
    save_checkpoint(run.outdir / CHECKPOINT, run.potential, run.best_state, run.optimizer,
                    run.scheduler, run.state, run.config.to_dict(), run.ema, run.world.size)
    run.saved = (run.state.epoch, time.monotonic())


def _last_valid(history: list[dict]) -> str:
    """Live metrics for the progress bar: the last validation errors."""
    if not history:
        return ""
    entry, parts = history[-1], []
    if "valid_energy_mae_per_atom" in entry:
        parts.append(f"E {entry['valid_energy_mae_per_atom']:.2f} meV/atom")
    if "valid_forces_mae" in entry:
        parts.append(f"F {entry['valid_forces_mae']:.1f} meV/Å")
    if "valid_dipole_mae" in entry:
        parts.append(f"μ {entry['valid_dipole_mae']:.1f} me·Å")
    return f" [valid {', '.join(parts)}]" if parts else ""


def _should_stop(run: Run, out_of_time: bool) -> str | None:
    t, state = run.config.training, run.state
    if t.patience is not None and state.epoch - state.best_epoch >= t.patience:
        return f"no improvement for {t.patience} epochs"
    if out_of_time:
        return f"time budget of {t.max_time_minutes} min used"
    return None


def fit(run: Run, on_epoch_end: EpochHook | None = None) -> None:
    """Train from ``run.state.epoch`` to ``training.epochs`` (or an earlier stop)."""
    t, out = run.config.training, run.config.output
    first = run.state.epoch + 1
    n_batches = math.ceil(len(run.prepared.data.train) / (t.batch_size * run.world.size))
    total = max(t.epochs - first + 1, 0) * n_batches
    if t.max_time_minutes is not None and run.state.elapsed_s >= 60.0 * t.max_time_minutes:
        if run.world.main:
            log(f"the time budget of {t.max_time_minutes} min is used up "
                "(raise training.max_time_minutes to train further)")
        return
    # disable=None: the bar shows on a terminal only, so logs get the summary lines alone
    show = out.progress and run.world.main
    bar = tqdm(total=total, unit="batch", disable=None if show else True, leave=False)
    run.saved = (run.state.epoch, time.monotonic())  # what the folder holds now
    try:
        _epochs(run, first, bar, on_epoch_end)
    except KeyboardInterrupt:
        if run.between_epochs:  # weights, optimizer and epoch agree: save them
            checkpoint(run)
        raise
    checkpoint(run)


def _epochs(run: Run, first: int, bar: tqdm, on_epoch_end: EpochHook | None) -> None:
    t, out = run.config.training, run.config.output
    with bar:
        for epoch in range(first, t.epochs + 1):
            bar.set_description(f"epoch {epoch}/{t.epochs}{_last_valid(run.state.history)}")
            tick = time.monotonic()
            run.between_epochs = False
            train, out_of_time = train_epoch(run, epoch, bar)
            valid = validate(run)
            seconds = time.monotonic() - tick
            best = end_epoch(run, epoch, train, valid, seconds)
            run.between_epochs = True
            entry = run.state.history[-1]
            last = epoch == t.epochs or out_of_time
            if run.world.main and (epoch == first or epoch % out.log_every == 0 or last):
                log(_summary(entry, t.epochs, best))
                if run.compiled is not None and epoch == first:
                    log(run.compiled.summary())
            if on_epoch_end is not None:
                on_epoch_end(epoch, entry)
            reason = _should_stop(run, out_of_time)
            if reason:
                if run.world.main:
                    log(f"stopping after epoch {epoch}: {reason}")
                break
        if run.compiled is not None and run.world.main:
            log(run.compiled.summary())


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


def label_notes(prepared: Prepared, weights: LossWeights) -> list[str]:
    """Lines saying which dipole/charge labels are not fitted, and why (never silent)."""
    notes = []
    labels = prepared.data.train.labels
    for label in prepared.ignored:
        notes.append(f"note: the training data carry {label} labels but the model predicts "
                     f"no charges: they are ignored (give the model "
                     f"physics: {{charges: learned}} to fit them)")
    for label in ("dipole", "charges"):
        if label in labels and getattr(weights, label) == 0:
            notes.append(f"note: {label} labels are evaluated but not fitted "
                         f"(training.{label}_weight is 0)")
    outputs = getattr(prepared.potential, "outputs", ())
    if "charges" in outputs and not {"dipole", "charges"} & set(labels):
        notes.append("note: the model predicts charges but no training structure carries a "
                     "dipole or charges label: the charges are trained only through the "
                     "energy terms that use them, if any")
    return notes


def _label_counts(data) -> str:
    """``energy, forces (12/20 structures)``: labels of a set, with how many carry each."""
    counts, n = data.label_counts(), len(data)
    return ", ".join(k if c == n else f"{k} ({c}/{n} structures)" for k, c in counts.items())


def train(config: Config | str | Path, on_epoch_end: EpochHook | None = None):
    """Train the potential described by ``config`` (a :class:`Config` or a YAML path).

    Under ``torchrun`` every process calls this; they train together and rank 0
    writes the results. Returns a :class:`TrainResult` (on rank 0; ``None`` on the
    others), or, with ``training.ensemble > 1``, one per committee member.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    if config.training.ensemble > 1:
        from .committee import train_committee

        return train_committee(config, on_epoch_end)
    world = distributed.from_environment()
    try:
        run = setup(config, world)
        p = run.prepared
        if world.main:
            config.output.dir.mkdir(parents=True, exist_ok=True)
            write_split(p, config.output.dir, config.data.train)
            log(f"{len(p.data.train)} training structures ({p.data.train.n_atoms} atoms), "
                f"{len(p.data.valid) if p.data.valid else 0} validation, "
                f"{len(p.data.test) if p.data.test else 0} test; "
                f"labels {_label_counts(p.data.train)}")
            for note in label_notes(p, run.weights):
                log(note)
            log(f"E0s {p.e0_source}: " + ", ".join(f"{s} {v:.4f} eV" for s, v in p.e0s.items()))
            if world.distributed:
                log(f"data-parallel: {world.size} processes × batch {config.training.batch_size}"
                    f" = global batch {world.size * config.training.batch_size}")
        fit(run, on_epoch_end)
        result = finish(run) if world.main else None
    except BaseException:
        distributed.abandon(world)
        raise
    distributed.shutdown(world)
    return result
