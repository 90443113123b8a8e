"""The training YAML as dataclasses: ``data:``, ``model:``, ``training:``, ``output:``.

Every section is checked when the file is read: an unknown key, a missing
required key or a value of the wrong type raises :class:`ConfigError` naming
the key and the file. Relative paths resolve against the YAML file's folder.

Numeric options are range-checked too (e.g. ``output.log_every >= 1``, loss
weights >= 0, ``training.patience >= 1``), so that a bad value fails at once
rather than after the first epoch.

Units: the data files may use other units than atomnet's (eV, Å). Name them
with ``data.energy_unit`` (default ``eV``; also ``meV``, ``Hartree``/``Ha``,
``Ry``/``Rydberg``, ``kcal/mol``, ``kJ/mol``) and ``data.length_unit`` (default
``Å``; also ``Angstrom``/``A``, ``Bohr``, ``nm``). Every frame read (train, valid,
test and isolated-atom files) is converted once, on reading: energies by the
energy factor, positions and cell by the length factor, forces as
energy/length, stress as energy/length³, dipoles as e·length. Values written
in the config itself stay in atomnet units (``model.cutoff`` in Å, ``data.e0s``
in eV).

Example::

    data:
      train: train.xyz            # extxyz (or anything ase.io reads) with energy (+ forces)
      test_fraction: 0.1          # held-out part of train (or test: test.xyz)
      isolated_atoms: e0s.xyz     # or e0s: {H: -13.6, ...} or e0s: fit
      energy_unit: Hartree        # units of the files (default eV, Å)
      length_unit: Bohr
    model: {type: bpnn, cutoff: 5.0, hidden: [128, 64]}
    training: {epochs: 100, batch_size: 32, lr: 1.0e-3}
    output: {dir: runs/ethanol}
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..dtypes import DTYPES
from ..errors import AtomnetError
from ..units import ENERGY_TO_EV, LENGTH_TO_ANGSTROM, Conversion


class ConfigError(AtomnetError, ValueError):
    """The training configuration is invalid; the message names the key and the file."""


@dataclass
class DataConfig:
    """Datasets and reference energies.

    ``valid``/``test``: separate files; otherwise ``valid_fraction``/``test_fraction``
    of ``train`` are held out (a split seeded by ``training.seed``).
    E0s (eV per isolated atom): ``isolated_atoms`` (a file of one-atom frames with
    energies), ``e0s: {symbol: eV}``, or ``e0s: fit`` (least squares on the
    training energies; the default when no ``isolated_atoms`` file is given).
    ``energy_key``/``forces_key``/``stress_key``: label names in the files, when
    not the standard ``energy``/``forces``/``stress``.
    ``energy_unit``/``length_unit``: units of the files (see the module docstring);
    everything is converted to eV and Å when read. ``e0s`` values are in eV.
    ``streaming``: read structures from the files as batches are needed (graphs built
    in ``workers`` DataLoader processes) instead of caching every graph in memory;
    for data sets that do not fit (e.g. an ASE database, ``train: data.db``).
    """

    train: Path
    valid: Path | None = None
    test: Path | None = None
    valid_fraction: float = 0.1
    test_fraction: float = 0.0
    isolated_atoms: Path | None = None
    e0s: dict[str, float] | str | None = None
    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: str = "stress"
    energy_unit: str = "eV"
    length_unit: str = "Å"
    streaming: bool = False
    workers: int = 0

    def units(self) -> Conversion:
        """Factors from the files' units into eV and Å."""
        return Conversion(self.energy_unit, self.length_unit)


@dataclass
class TrainingConfig:
    """Optimiser, schedule and loss weights.

    Loss = energy_weight·MSE(ΔE/N) [eV²/atom²] + forces_weight·MSE(ΔF) [eV²/Å²]
    + stress_weight·MSE(Δσ) [eV²/Å⁶] + dipole_weight·MSE(Δμ) [e²Å², per component]
    + charges_weight·MSE(Δq) [e², per atom]; terms without labels are left out, and the
    dipole and charge terms need a model that predicts charges (``model.physics.charges``).
    The default dipole_weight 10 = forces_weight makes 1 e·Å of dipole error weigh as
    1 eV/Å of force error (0.01 e·Å ~ 10 meV/Å, errors of a good fit of each);
    charges_weight 1 is lower, so that where both are given the dipole (an observable)
    wins over a charge partition (Hirshfeld, Mulliken, …) that need not reproduce it.
    ``scheduler``: ``cosine`` (to lr·min_lr_factor over the run), ``plateau``
    (halve the lr after ``scheduler_patience`` epochs without improvement) or ``none``.
    The cosine schedule is a closed-form function of the run's progress: the fraction
    of ``epochs`` done, or, when ``max_time_minutes`` is set, the larger of that and
    the fraction of the time budget used, so that a run cut by the clock still ends
    at the low learning rate. ``warmup_fraction``: linear warm-up over that fraction.
    ``patience``: stop after this many epochs without a better validation loss.
    ``max_time_minutes``: wall-clock budget of one run (training and validation).
    ``dtype``: ``float32`` (fast) or ``float64``.
    ``ema_decay``: keep an exponential moving average of the weights (e.g. 0.99–0.999,
    per optimizer step); validation, the best model and the saved model use it.
    ``stage_two``: an optional final stage, ``{start: 0.75, lr_factor: 0.1,
    energy_weight: ..., forces_weight: ..., stress_weight: ..., dipole_weight: ...,
    charges_weight: ...}``: from that fraction
    of the run on, the learning rate is scaled by ``lr_factor`` and the loss weights
    given replace the main ones (MACE's "stage two").
    ``ensemble``: train a committee of this many models differing in seed (and so in
    initial weights and batch order), on the same split (``split_seed``).
    ``split_seed``: seed of the train/valid/test split (default: ``seed``).
    ``compile``: run each training step through ``torch.compile``
    (:mod:`atomnet.training.compiled`): energy and force labels only; the step is
    compiled once, for the first batch's shape (2–4 minutes), and batches are kept
    full (the shuffled remainder of each epoch is left out). Worth it for data of one
    molecule (an MD trajectory), where every batch has the same shape: 3.4× faster
    steps for the equivariant model on ethanol.
    """

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    min_lr_factor: float = 0.01
    scheduler_patience: int = 10
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    stress_weight: float = 1.0
    dipole_weight: float = 10.0
    charges_weight: float = 1.0
    grad_clip: float | None = 10.0
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    valid_batch_size: int = 64
    max_time_minutes: float | None = None
    patience: int | None = None
    warmup_fraction: float = 0.0
    ema_decay: float | None = None
    stage_two: dict[str, float] | None = None
    ensemble: int = 1
    split_seed: int | None = None
    compile: bool = False


@dataclass
class OutputConfig:
    """Where results go: ``dir`` (model.atomnet, checkpoint.atomnet, metrics.csv, PNGs).

    ``log_every``: print a summary line every this many epochs.
    ``progress``: show a tqdm progress bar.
    ``checkpoint_seconds``: write ``checkpoint.atomnet`` after an epoch when this many
    seconds have passed since the last one (0: after every epoch), and always after the
    last epoch and when the run is interrupted (Ctrl-C). A run killed outright resumes
    from the last checkpoint, losing at most this much work (resuming is exact).
    """

    dir: Path
    log_every: int = 10
    progress: bool = True
    checkpoint_seconds: float = 60.0


@dataclass
class Config:
    """A whole training configuration. ``model`` goes to :func:`atomnet.build`
    (``type``, ``cutoff`` in Å, optional ``elements`` and hyper-parameters)."""

    data: DataConfig
    model: dict[str, Any]
    training: TrainingConfig = field(default_factory=TrainingConfig)
    output: OutputConfig = field(default_factory=lambda: OutputConfig(Path("runs/atomnet")))
    source: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (paths as strings), e.g. for checkpoint headers."""
        out = {}
        for name in ("data", "model", "training", "output"):
            value = getattr(self, name)
            out[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return _stringify_paths(out)


_SCHEDULERS = ("cosine", "plateau", "none")


def _stringify_paths(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stringify_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stringify_paths(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (``Path``, ``float``, unions…)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        names = " or ".join(_type_name(a) for a in typing.get_args(tp))
        raise ConfigError(f"{where}: expected {names}, got {value!r}")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        # YAML 1.1 reads "1e-3" (no dot) as a string: accept numeric strings
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
    elif tp is Any:
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _section(cls: type, raw: Any, name: str, source: str) -> Any:
    """Build dataclass ``cls`` from the mapping ``raw`` (section ``name`` of ``source``)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: section '{name}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)} "
            f"(allowed in '{name}': {', '.join(fields)})"
        )
    kwargs = {}
    for key, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if key not in raw:
            if required:
                raise ConfigError(f"{source}: missing required key '{name}.{key}'")
            continue
        kwargs[key] = _coerce(raw[key], hints[key], f"{source}: {name}.{key}")
    return cls(**kwargs)


def _resolve(path: Path | None, base: Path) -> Path | None:
    if path is None:
        return None
    path = path.expanduser()
    return path if path.is_absolute() else Path(os.path.normpath(base / path))


def _check_values(cfg: Config, source: str) -> None:
    d, t = cfg.data, cfg.training
    for key in ("valid_fraction", "test_fraction"):
        if not 0.0 <= getattr(d, key) < 1.0:
            raise ConfigError(f"{source}: data.{key} must be in [0, 1), got {getattr(d, key)}")
    if d.valid_fraction + d.test_fraction >= 1.0:
        raise ConfigError(f"{source}: data.valid_fraction + data.test_fraction must be < 1")
    if isinstance(d.e0s, str) and d.e0s != "fit":
        raise ConfigError(f"{source}: data.e0s must be a mapping {{symbol: eV}} or 'fit'")
    if d.e0s is not None and d.isolated_atoms is not None:
        raise ConfigError(f"{source}: give either data.isolated_atoms or data.e0s, not both")
    for key, known in (("energy_unit", ENERGY_TO_EV), ("length_unit", LENGTH_TO_ANGSTROM)):
        if getattr(d, key) not in known:
            raise ConfigError(
                f"{source}: data.{key} {getattr(d, key)!r} is not a known unit "
                f"(known: {', '.join(known)})"
            )
    if t.scheduler not in _SCHEDULERS:
        raise ConfigError(f"{source}: training.scheduler must be one of {_SCHEDULERS}")
    if t.dtype not in DTYPES:
        raise ConfigError(f"{source}: training.dtype must be one of {sorted(DTYPES)}")
    for key in ("epochs", "batch_size", "valid_batch_size"):
        if getattr(t, key) < 1:
            raise ConfigError(f"{source}: training.{key} must be >= 1")
    if not t.lr > 0:
        raise ConfigError(f"{source}: training.lr must be positive, got {t.lr}")
    _check_ranges(cfg, source)
    if "type" not in cfg.model:
        raise ConfigError(f"{source}: missing required key 'model.type'")


#: (section, key, test, what it must be): numeric options checked when the file is read
_RANGES = (
    ("training", "energy_weight", lambda v: v >= 0, ">= 0"),
    ("training", "forces_weight", lambda v: v >= 0, ">= 0"),
    ("training", "stress_weight", lambda v: v >= 0, ">= 0"),
    ("training", "dipole_weight", lambda v: v >= 0, ">= 0"),
    ("training", "charges_weight", lambda v: v >= 0, ">= 0"),
    ("training", "weight_decay", lambda v: v >= 0, ">= 0"),
    ("training", "min_lr_factor", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("training", "scheduler_patience", lambda v: v >= 1, ">= 1"),
    ("training", "grad_clip", lambda v: v is None or v > 0, "> 0 or null (no clipping)"),
    ("training", "patience", lambda v: v is None or v >= 1, ">= 1 or null (no early stop)"),
    ("training", "max_time_minutes", lambda v: v is None or v > 0, "> 0 or null (no limit)"),
    ("training", "warmup_fraction", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("training", "ema_decay", lambda v: v is None or 0 < v < 1, "in (0, 1) or null (no EMA)"),
    ("training", "ensemble", lambda v: v >= 1, ">= 1"),
    ("data", "workers", lambda v: v >= 0, ">= 0"),
    ("output", "log_every", lambda v: v >= 1, ">= 1"),
    ("output", "checkpoint_seconds", lambda v: v >= 0, ">= 0"),
)

#: keys of ``training.stage_two``
STAGE_TWO_KEYS = ("start", "lr_factor", "energy_weight", "forces_weight", "stress_weight",
                  "dipole_weight", "charges_weight")


def _check_ranges(cfg: Config, source: str) -> None:
    for section, key, ok, what in _RANGES:
        value = getattr(getattr(cfg, section), key)
        # NaN fails every comparison, so it is refused here too
        if not ok(value):
            raise ConfigError(f"{source}: {section}.{key} must be {what}, got {value!r}")
    t = cfg.training
    if t.scheduler == "plateau" and (t.warmup_fraction > 0 or t.stage_two is not None):
        raise ConfigError(f"{source}: training.scheduler 'plateau' does not combine with "
                          f"warmup_fraction or stage_two")
    if t.stage_two is not None:
        unknown = sorted(set(t.stage_two) - set(STAGE_TWO_KEYS))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) training.stage_two.{unknown[0]} "
                              f"(allowed: {', '.join(STAGE_TWO_KEYS)})")
        start = t.stage_two.get("start", 0.75)
        if not 0 < start < 1:
            raise ConfigError(f"{source}: training.stage_two.start must be in (0, 1), "
                              f"got {start!r}")
        factor = t.stage_two.get("lr_factor", 0.1)
        if not 0 < factor <= 1:
            raise ConfigError(f"{source}: training.stage_two.lr_factor must be in (0, 1], "
                              f"got {factor!r}")
        for key in STAGE_TWO_KEYS[2:]:
            if key in t.stage_two and not t.stage_two[key] >= 0:
                raise ConfigError(f"{source}: training.stage_two.{key} must be >= 0, "
                                  f"got {t.stage_two[key]!r}")
    if t.energy_weight == t.forces_weight == t.stress_weight == 0:
        raise ConfigError(
            f"{source}: training.energy_weight, forces_weight and stress_weight are all 0"
        )


def config_from_dict(raw: Any, source: str = "<config>", base: Path | None = None) -> Config:
    """Validate a parsed YAML mapping. Relative paths resolve against ``base``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the file must hold a mapping of sections")
    sections = {"data", "model", "training", "output"}
    unknown = sorted(set(raw) - sections)
    if unknown:
        raise ConfigError(
            f"{source}: unknown section(s) {unknown} (allowed: data, model, training, output)"
        )
    for name in ("data", "model", "output"):
        if name not in raw:
            raise ConfigError(f"{source}: missing required section '{name}'")
    data = _section(DataConfig, raw["data"], "data", source)
    training = _section(TrainingConfig, raw.get("training") or {}, "training", source)
    output = _section(OutputConfig, raw["output"], "output", source)
    if not isinstance(raw["model"], dict):
        raise ConfigError(f"{source}: section 'model' must be a mapping")
    base = Path.cwd() if base is None else base
    for key in ("train", "valid", "test", "isolated_atoms"):
        setattr(data, key, _resolve(getattr(data, key), base))
    output.dir = _resolve(output.dir, base)
    cfg = Config(data, dict(raw["model"]), training, output)
    _check_values(cfg, source)
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate a training YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    cfg = config_from_dict(raw, str(path), path.resolve().parent)
    cfg.source = path
    return cfg
