"""Error metrics accumulated over batches, in milli-units (meV, me·Å, me), and a text table.

Keys of :meth:`ErrorAccumulator.compute` (absent when the label is absent):
``energy_mae``/``energy_rmse`` (meV per structure), ``energy_mae_per_atom``/
``energy_rmse_per_atom`` (meV/atom), ``forces_mae``/``forces_rmse`` (meV/Å, over
components), ``stress_mae``/``stress_rmse`` (meV/Å³, over components),
``dipole_mae``/``dipole_rmse`` (me·Å = 10⁻³ e·Å, over the dipole's Cartesian
components), ``charges_mae``/``charges_rmse`` (me = 10⁻³ e, per atom), ``loss``
(the weighted training loss, eV² units) and ``n_structures``. Dipole and charge
errors need a potential with charges (:attr:`atomnet.Potential.outputs`).

Force, stress, dipole and charge errors count only the structures that carry the
label (the masks ``ref_<label>_mask``); a metric with no labelled structure in the
whole set is absent, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from .losses import LossTerms, Prediction, Reference

#: eV → meV (and e·Å → me·Å, e → me: every metric is in milli-units)
MEV = 1000.0


class _Errors:
    """Running sums of |x| and x² and a count, in float64."""

    def __init__(self) -> None:
        self.abs, self.sq, self.n = 0.0, 0.0, 0

    def add(self, err: torch.Tensor) -> None:
        err = err.detach().double()
        self.abs += float(err.abs().sum())
        self.sq += float((err * err).sum())
        self.n += err.numel()

    def values(self) -> list[float]:
        return [self.abs, self.sq, float(self.n)]

    def set(self, values: list[float]) -> None:
        self.abs, self.sq, self.n = values[0], values[1], int(round(values[2]))

    def mae(self) -> float:
        return self.abs / self.n

    def rmse(self) -> float:
        return math.sqrt(self.sq / self.n)


def _select(err: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The rows of ``err`` where ``mask`` (first dimension) is set; all without a mask."""
    return err if mask is None else err[mask.to(err.device)]


class ErrorAccumulator:
    """Collects errors batch by batch; :meth:`compute` gives MAE/RMSE in milli-units."""

    def __init__(self) -> None:
        self.energy, self.energy_per_atom = _Errors(), _Errors()
        self.forces, self.stress = _Errors(), _Errors()
        self.dipole, self.charges = _Errors(), _Errors()
        self.loss_sum, self.loss_n = 0.0, 0

    def update(self, pred: Prediction, ref: Reference, loss: LossTerms | None = None) -> None:
        e_err = pred.energy.detach().double() - ref.energy.double()
        self.energy.add(e_err)
        self.energy_per_atom.add(e_err / ref.n_atoms.double())
        if pred.forces is not None and ref.forces is not None:
            self.forces.add(_select(pred.forces.detach() - ref.forces, ref.atom_mask()))
        if pred.stress is not None and ref.stress is not None:
            self.stress.add(_select(pred.stress.detach() - ref.stress, ref.stress_mask))
        if pred.dipole is not None and ref.dipole is not None:
            self.dipole.add(_select(pred.dipole.detach() - ref.dipole, ref.dipole_mask))
        if pred.charges is not None and ref.charges is not None:
            self.charges.add(_select(pred.charges.detach() - ref.charges,
                                     ref.atom_mask("charges")))
        if loss is not None:
            self.loss_sum += float(loss.total.detach()) * len(e_err)
            self.loss_n += len(e_err)

    _PARTS = ("energy", "energy_per_atom", "forces", "stress", "dipole", "charges")

    def add_loss(self, loss: float, n_structures: int) -> None:
        """Count a batch's loss (already global in a data-parallel run) for
        ``n_structures`` structures."""
        self.loss_sum += loss * n_structures
        self.loss_n += n_structures

    def reduce(self, all_sum) -> None:
        """Pool the sums of every rank: ``all_sum`` sums a float64 tensor over ranks."""
        values = [v for name in self._PARTS for v in getattr(self, name).values()]
        values += [self.loss_sum, float(self.loss_n)]
        total = all_sum(torch.tensor(values, dtype=torch.float64)).tolist()
        for k, name in enumerate(self._PARTS):
            getattr(self, name).set(total[3 * k:3 * k + 3])
        self.loss_sum, self.loss_n = total[-2], int(round(total[-1]))

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {"n_structures": float(self.energy.n)}
        if self.loss_n:
            out["loss"] = self.loss_sum / self.loss_n
        for name in self._PARTS:
            errors = getattr(self, name)
            if errors.n:
                base = name.replace("_per_atom", "")
                suffix = "_per_atom" if name.endswith("_per_atom") else ""
                out[f"{base}_mae{suffix}"] = MEV * errors.mae()
                out[f"{base}_rmse{suffix}"] = MEV * errors.rmse()
        return out


#: (metric key, column title) for :func:`format_table`
COLUMNS = (
    ("n_structures", "N"),
    ("energy_mae_per_atom", "E MAE meV/atom"),
    ("energy_rmse_per_atom", "E RMSE meV/atom"),
    ("energy_mae", "E MAE meV"),
    ("energy_rmse", "E RMSE meV"),
    ("forces_mae", "F MAE meV/Å"),
    ("forces_rmse", "F RMSE meV/Å"),
    ("stress_mae", "S MAE meV/Å³"),
    ("stress_rmse", "S RMSE meV/Å³"),
    ("dipole_mae", "μ MAE me·Å"),
    ("dipole_rmse", "μ RMSE me·Å"),
    ("charges_mae", "q MAE me"),
    ("charges_rmse", "q RMSE me"),
)


def format_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """A fixed-width text table: one row per dataset, columns present in any row."""
    cols = [(k, t) for k, t in COLUMNS if any(k in r for r in rows.values())]
    width = max([len(n) for n in rows] + [7])
    header = f"{'set':<{width}}" + "".join(f"  {t:>{max(len(t), 8)}}" for _, t in cols)
    lines = [header, "-" * len(header)]
    for name, metrics in rows.items():
        cells = []
        for key, title in cols:
            value = metrics.get(key)
            w = max(len(title), 8)
            if value is None:
                cells.append(f"  {'-':>{w}}")
            elif key == "n_structures":
                cells.append(f"  {int(value):>{w}d}")
            else:
                cells.append(f"  {value:>{w}.2f}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)
