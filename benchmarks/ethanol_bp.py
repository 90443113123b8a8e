"""Train the BP model on rMD17 ethanol and report test MAE, CPU time and call speed.

Trains on ``../shared/data/botnet/ethanol/train.xyz`` (E0s from
``isolated_atoms.xyz``), tests on ``test_MD.xyz`` (1,000 structures), then times
``atomnet.Calculator`` energy+forces calls with the trained model on ethanol and
a 1,536-atom periodic water box (see ``calculator_speed.py``).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/ethanol_bp.py \\
        [--config benchmarks/ethanol_bp.yaml] [--epochs N] [--hidden 128 64] [--out DIR] \\
        [--minutes M] [--ema DECAY | --no-ema] [--stop-after M]

``--minutes M`` sets ``training.max_time_minutes`` (the schedule then runs on the
budget). ``--stop-after M`` instead keeps the schedule on ``epochs`` and stops the run
between epochs once M minutes have passed: atomnet's behaviour before the budgeted
schedule, for comparison. Data-parallel, on 2 processes::

    OMP_WAIT_POLICY=PASSIVE torchrun --nproc_per_node=2 benchmarks/ethanol_bp.py \\
        --config benchmarks/ethanol_budget.yaml

Published reference (rMD17 ethanol, 1,000 training structures): ANI energy MAE
2.5 meV, force MAE 13.4 meV/Å.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from calculator_speed import run_speed  # noqa: E402

from atomnet.training import load_config, train  # noqa: E402
from atomnet.training.trainer import finish, fit, setup  # noqa: E402


class _Stop(Exception):
    pass


def train_stopped_after(config, minutes: float):
    """Train with the schedule on ``epochs``, stopping between epochs after ``minutes``."""
    run = setup(config)
    start = time.monotonic()

    def hook(epoch: int, entry: dict) -> None:
        if time.monotonic() - start > 60.0 * minutes:
            print(f"stopped after epoch {epoch} of {config.training.epochs} (time)")
            raise _Stop

    try:
        fit(run, hook)
    except _Stop:
        pass
    return finish(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(HERE / "ethanol_bp.yaml"))
    parser.add_argument("--epochs", type=int, help="override training.epochs")
    parser.add_argument("--hidden", type=int, nargs="+", help="override model.hidden")
    parser.add_argument("--out", help="override output.dir")
    parser.add_argument("--repeats", type=int, default=200, help="speed: calls per median")
    parser.add_argument("--minutes", type=float, help="training.max_time_minutes (budget)")
    parser.add_argument("--stop-after", type=float,
                        help="stop between epochs after this many minutes, schedule on epochs")
    parser.add_argument("--ema", type=float, help="training.ema_decay")
    parser.add_argument("--no-ema", action="store_true", help="training.ema_decay: null")
    parser.add_argument("--no-speed", action="store_true", help="skip the call-speed part")
    parser.add_argument("--weight-decay", type=float, help="training.weight_decay (AdamW)")
    args = parser.parse_args()
    config = load_config(args.config)
    if args.epochs:
        config.training.epochs = args.epochs
    if args.hidden:
        config.model["hidden"] = args.hidden
    if args.out:
        config.output.dir = Path(args.out).resolve()
    if args.minutes:
        config.training.max_time_minutes = args.minutes
    if args.stop_after:  # the schedule runs on the epochs; the clock only stops the run
        config.training.max_time_minutes = None
    if args.ema:
        config.training.ema_decay = args.ema
    if args.no_ema:
        config.training.ema_decay = None
    if args.weight_decay is not None:
        config.training.weight_decay = args.weight_decay
    t = config.training
    print(f"threads {torch.get_num_threads()}; model {config.model}; epochs {t.epochs}, "
          f"batch {t.batch_size}, budget {t.max_time_minutes} min, stop after "
          f"{args.stop_after} min, EMA {t.ema_decay}")
    wall, cpu = time.perf_counter(), time.process_time()
    if args.stop_after:
        result = train_stopped_after(config, args.stop_after)
    else:
        result = train(config)
    if result is None:  # a rank other than 0 of a torchrun run
        return
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    test = result.metrics.get("test", {})
    print(f"\ntraining + evaluation: {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU")
    print("test_MD.xyz (1,000 structures):")
    for key in ("energy_mae", "energy_rmse", "energy_mae_per_atom", "forces_mae", "forces_rmse"):
        if key in test:
            unit = "meV/Å" if key.startswith("forces") else (
                "meV/atom" if key.endswith("per_atom") else "meV")
            print(f"  {key:<22} {test[key]:8.2f} {unit}")
    print("  published ANI: energy MAE 2.5 meV, forces MAE 13.4 meV/Å")
    print(f"epochs run {result.state.epoch}, best epoch {result.state.best_epoch}")
    if not args.no_speed:
        run_speed(str(result.model_path), args.repeats)


if __name__ == "__main__":
    main()
