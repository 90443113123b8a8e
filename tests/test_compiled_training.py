"""training.compile: the compiled step gives the eager step's numbers.

One training run with ``compile: true`` and one without, same seed, float64: every
epoch's losses and metrics agree, so the compiled loss, its force term and its parameter
gradients (nested ``torch.func.grad``, traced by Inductor) are the eager ones. The data
are EMT methanol rattles (one shape per batch, as for an MD trajectory).
"""

from __future__ import annotations

import csv

import ase.io
import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import bulk
from test_training import dataset, labelled, write_config  # noqa: F401

from atomnet.training import ConfigError, load_config, trainer
from atomnet.training.compiled import CompiledStep
from atomnet.training.evaluation import reference
from atomnet.training.trainer import fit, setup

SMALL_EQUIVARIANT = {"type": "equivariant", "cutoff": 4.0, "channels": 8, "l_max": 1,
                     "sh_l_max": 1, "correlation": 2, "layers": 1, "num_radial": 4,
                     "radial_mlp": [8]}


def _train(folder, dataset, model, **training):  # noqa: F811
    data = folder.parent / "data"  # the configs name ../data/train.xyz
    if not data.exists():
        data.symlink_to(dataset["train"].parent)
    path = write_config(folder, dataset, **{"epochs": 2, "batch_size": 7, **training})
    raw = yaml.safe_load(path.read_text())
    raw["model"] = model
    path.write_text(yaml.safe_dump(raw))
    run = setup(load_config(path))
    fit(run)
    with open(run.outdir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return run, rows


@pytest.mark.parametrize("model", [SMALL_EQUIVARIANT], ids=["equivariant"])
def test_compiled_steps_equal_eager_steps(dataset, tmp_path, model):  # noqa: F811
    _, eager = _train(tmp_path / "eager", dataset, model)
    run, compiled = _train(tmp_path / "compiled", dataset, model, compile=True)
    # 14 training structures in batches of 7: every step ran compiled
    assert run.compiled.compiled_calls == 4 and run.compiled.eager_calls == 0
    assert run.compiled.summary().startswith("training.compile: 4 steps compiled")
    assert len(eager) == len(compiled) == 2
    for a, b in zip(eager, compiled):
        for key in a:
            if key in ("time_s", "epoch", "lr"):
                continue
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-8, abs=1e-10), key
    # a batch of another shape is not compiled again: the caller runs the eager step
    train = run.prepared.data.train
    graph, residuals = next(train.iterate([[0, 1, 2]]))
    ref = reference(graph, residuals, train.labels)
    assert run.compiled(graph, ref, run.weights, None) is None
    assert run.compiled.eager_calls == 1


def test_a_faulty_compiled_step_falls_back_to_eager(dataset, tmp_path):  # noqa: F811
    """The first compiled step is checked against the eager one: a compiler fault (here
    gradients off by 1 %) gives a warning and an eager run, with the eager numbers."""
    _, eager = _train(tmp_path / "eager", dataset, SMALL_EQUIVARIANT, epochs=1)

    class Faulty(CompiledStep):
        def __init__(self, potential):
            super().__init__(potential)
            self._compiled = self._faulty

        def _faulty(self, *args):
            grads, loss, aux = self._step(*args)
            return {n: 1.01 * g for n, g in grads.items()}, loss, aux

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "CompiledStep", Faulty)
        with pytest.warns(RuntimeWarning, match="disagrees with the eager one"):
            run, faulty = _train(tmp_path / "faulty", dataset, SMALL_EQUIVARIANT, epochs=1,
                                 compile=True)
    assert run.compiled.failed and run.compiled.compiled_calls == 0
    assert "disagreed with the eager one; 2 steps ran eager" in run.compiled.summary()
    for key in ("train_loss", "valid_forces_mae"):
        assert float(faulty[0][key]) == pytest.approx(float(eager[0][key]), rel=1e-10)


def test_compile_keeps_batches_full(dataset, tmp_path):  # noqa: F811
    """14 structures in batches of 4: three full batches per epoch, the shuffled
    remainder of 2 is left out (it would need a second compiled graph). The step runs
    uncompiled here (same code, no Inductor), which is all batching needs."""

    class Uncompiled(CompiledStep):
        def __init__(self, potential):
            super().__init__(potential)
            self._compiled = self._step

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "CompiledStep", Uncompiled)
        run, _ = _train(tmp_path / "full", dataset, SMALL_EQUIVARIANT, epochs=2,
                        batch_size=4, compile=True)
    assert run.compiled.compiled_calls == 6 and run.compiled.eager_calls == 0


def test_stress_labels_are_a_config_error(tmp_path):
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(6):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        frames.append(labelled(atoms, stress=True))
    folder = tmp_path / "data"
    folder.mkdir()
    ase.io.write(folder / "train.xyz", frames, format="extxyz")
    ase.io.write(folder / "e0s.xyz", [labelled(Atoms("Cu"))], format="extxyz")
    path = write_config(tmp_path / "cfg", {"train": folder / "train.xyz",
                                           "e0s": folder / "e0s.xyz"}, compile=True)
    with pytest.raises(ConfigError, match="training.compile fits energy and force"):
        setup(load_config(path))
