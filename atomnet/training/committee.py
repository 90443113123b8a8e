"""Training a committee: K models that differ only in their seed.

``training.ensemble: K`` (K ≥ 2) trains member k (k = 0 … K−1) into
``OUTDIR/member_<k>/`` with ``training.seed = seed + k`` (so different initial
weights and batch order) and the split seed fixed to the base one
(``training.split_seed``, else ``training.seed``): every member sees the same
training, validation and test structures, so the test set is held out from all.
Each member is a complete ordinary run (checkpoint, model.atomnet, metrics).

``OUTDIR/committee.json`` lists the finished members (model file relative to
OUTDIR, seed, metrics) and is rewritten after each one. Running the same config
again continues where it stopped: members recorded there with the same
configuration are skipped, a member that was interrupted resumes from its own
checkpoint, and the rest are trained. ``atomnet.Calculator(OUTDIR)`` (or the
``committee.json`` path) loads the committee once all K members are done.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..calculators.committee import COMMITTEE_FILE, COMMITTEE_FORMAT
from ..io.atomic import write_atomically
from . import distributed
from .config import Config, load_config
from .prepare import split_seed

if TYPE_CHECKING:
    from .trainer import EpochHook, TrainResult

MEMBER_DIR = "member_{k}"


def member_config(config: Config, k: int) -> Config:
    """The config of member ``k``: seed + k, the base split seed, its own folder, K = 1."""
    member = copy.deepcopy(config)
    member.training.split_seed = split_seed(config)
    member.training.seed = config.training.seed + k
    member.training.ensemble = 1
    member.output.dir = config.output.dir / MEMBER_DIR.format(k=k)
    return member


def fingerprint(config: Config) -> str:
    """SHA-256 of the data, model and training sections: what makes a member's result."""
    sections = {k: v for k, v in config.to_dict().items() if k != "output"}
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()


def _read_record(path: Path) -> dict[int, dict]:
    """Members recorded in an earlier ``committee.json`` by index ({} if none or unreadable)."""
    try:
        record = json.loads(path.read_text())
        return {int(m["index"]): m for m in record["members"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _entry(k: int, config: Config, result: TrainResult, outdir: Path) -> dict:
    return {
        "index": k,
        "model": result.model_path.relative_to(outdir).as_posix(),
        "seed": config.training.seed,
        "best_epoch": result.state.best_epoch,
        "epochs": result.state.epoch,
        "metrics": result.metrics,
        "fingerprint": fingerprint(config),
    }


def _write_record(path: Path, config: Config, members: dict[int, dict]) -> None:
    record = {
        "format": COMMITTEE_FORMAT,
        "size": config.training.ensemble,
        "split_seed": split_seed(config),
        "members": [members[k] for k in sorted(members)],
    }
    text = json.dumps(record, indent=2)
    write_atomically(path, lambda tmp: tmp.write_text(text))


def _finished(entry: dict | None, config: Config, outdir: Path) -> bool:
    """Whether a recorded member is done: same configuration, and its model file exists."""
    return (entry is not None and entry.get("fingerprint") == fingerprint(config)
            and (outdir / entry.get("model", "")).is_file())


def _recorded_result(entry: dict, outdir: Path) -> TrainResult:
    """The :class:`TrainResult` of a member finished in an earlier run."""
    from .checkpoint import TrainState
    from .trainer import TrainResult

    state = TrainState(epoch=entry["epochs"], best_epoch=entry["best_epoch"])
    return TrainResult(outdir / entry["model"], entry["metrics"], state)


def train_committee(
    config: Config | str | Path, on_epoch_end: EpochHook | None = None
) -> list[TrainResult]:
    """Train the ``training.ensemble`` members of a committee (see the module docstring).

    Returns one :class:`~atomnet.training.TrainResult` per member, in order; members
    finished in an earlier run are not trained again (their ``state`` then carries only
    the epoch counts). ``on_epoch_end`` is passed to every member's :func:`train`.
    Under ``torchrun`` every rank trains every member together; rank 0 writes the file.
    """
    from .trainer import log, train

    if not isinstance(config, Config):
        config = load_config(config)
    outdir, size = config.output.dir, config.training.ensemble
    path = outdir / COMMITTEE_FILE
    main = distributed.from_environment().main
    members = [member_config(config, k) for k in range(size)]
    # decided once, before any training, so that every rank skips the same members
    recorded = _read_record(path)
    done = {k: recorded[k] for k, m in enumerate(members) if _finished(recorded.get(k), m, outdir)}
    results = []
    for k, member in enumerate(members):
        if k in done:
            log(f"committee member {k + 1}/{size} already trained: {outdir / done[k]['model']}")
            results.append(_recorded_result(done[k], outdir))
            continue
        log(f"committee member {k + 1}/{size} (seed {member.training.seed}) "
            f"→ {member.output.dir}")
        results.append(train(member, on_epoch_end))
        done[k] = _entry(k, member, results[-1], outdir)
        if main:
            _write_record(path, config, done)
    if main:
        _write_record(path, config, done)
        log(f"committee of {size} members listed in {path}")
    return results
