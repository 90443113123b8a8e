"""A thin ASE calculator: structure → graph → derivatives module → ASE units."""

from __future__ import annotations

import copy
import os

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator as _ASECalculator
from ase.calculators.calculator import PropertyNotImplementedError, all_changes

from ..derivatives import evaluate
from ..structures import to_device

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


class Calculator(_ASECalculator):
    """ASE calculator for an atomnet potential.

    Args:
        model: a path to a ``.atomnet`` file or a :class:`~atomnet.potential.Potential`.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``…
        dtype: ``"float64"`` (default: exact derivatives, Hessians) or ``"float32"`` (faster).

    Properties: ``energy``/``free_energy`` (eV), ``energies`` (eV per atom),
    ``forces`` (eV/Å), ``stress`` (eV/Å³, Voigt, 3-D periodic cells only).
    Per-term energies (eV) are in ``calc.results["contributions"]``.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model, device: str = "cpu", dtype="float64", **kwargs):
        super().__init__(**kwargs)
        if isinstance(model, (str, os.PathLike)):
            from ..io import load

            model = load(model)
        else:  # a private copy: casting or freezing must not touch the caller's module
            model = copy.deepcopy(model)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available")
        self.dtype = _resolve_dtype(dtype)
        self.potential = model.to(device=self.device, dtype=self.dtype).eval()
        for p in self.potential.parameters():
            p.requires_grad_(False)

    def _graph(self, atoms: Atoms) -> dict[str, torch.Tensor]:
        graph = self.potential.graph(atoms, labels=False)
        return to_device(graph, self.device, self.dtype)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        want_stress = "stress" in properties
        if want_stress and not self.atoms.pbc.all():
            raise PropertyNotImplementedError("stress needs a cell periodic in all 3 directions")
        res = evaluate(self.potential, self._graph(self.atoms), forces=True, stress=want_stress)
        energy = float(res.energy.detach().sum())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": res.atomic_energies.detach().cpu().double().numpy(),
            "forces": res.forces.detach().cpu().double().numpy(),
            "contributions": {
                k: float(v.detach().sum()) for k, v in res.contributions.items()
            },
        }
        if want_stress:
            s = res.stress[0].detach().cpu().double().numpy()
            self.results["stress"] = np.array(
                [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]]
            )

    def get_hessian(self, atoms: Atoms | None = None) -> np.ndarray:
        """Exact Hessian d²E/dr² (3N, 3N) in eV/Å² (autograd, not finite differences)."""
        atoms = self.atoms if atoms is None else atoms
        if atoms is None:
            raise ValueError("get_hessian needs atoms")
        res = evaluate(self.potential, self._graph(atoms), forces=True, hessian=True)
        return res.hessian.cpu().double().numpy()
