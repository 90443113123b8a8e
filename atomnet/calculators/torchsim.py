"""An atomnet potential as a TorchSim model: many systems integrated as one batch.

`TorchSim <https://github.com/Radical-AI/torch-sim>`_ (``pip install
torch-sim-atomistic``, written against 0.3.0) keeps a batch of systems in one
``SimState`` and asks its model for all of them in one call; :class:`TorchSimModel`
answers that call with one atomnet evaluation of the whole batch.
"""

from __future__ import annotations

import torch

from ..derivatives import evaluate
from ..dtypes import resolve_dtype
from ..errors import UsageError
from ..structures import device_graph
from .ase_calculator import place_potential, resolve_device

try:
    import torch_sim as ts
    from torch_sim.models.interface import ModelInterface
except ImportError as exc:  # absent, or present but missing a dependency of its own
    raise UsageError(
        "TorchSimModel needs TorchSim: pip install torch-sim-atomistic==0.3.0 "
        f"(importing torch_sim failed: {exc})"
    ) from exc


def _graphs(state: ts.SimState, potential, device: torch.device, dtype: torch.dtype) -> dict:
    """One atomnet batch graph of all systems of ``state``, in system order, built on
    ``device`` from the state's tensors (:func:`~atomnet.structures.device_graph`: no
    NumPy, no ``ase.Atoms``): the graph :meth:`~atomnet.potential.Potential.graph` and
    :func:`~atomnet.structures.collate` would give, in ``dtype``. ``state.system_idx``
    must list the atoms of each system contiguously and in ascending order of systems
    (else a :class:`~atomnet.errors.UsageError`). Total charges are 0.
    """
    return device_graph(
        state.positions.to(device=device, dtype=dtype), state.atomic_numbers,
        state.row_vector_cell, state.pbc, potential.elements, potential.pair_lists,
        system=state.system_idx)


class TorchSimModel(ModelInterface):
    """An atomnet potential behind TorchSim's ``ModelInterface`` (TorchSim 0.3.0).

    Args:
        model: a path to a ``.atomnet`` file or a :class:`~atomnet.potential.Potential`
            (a private copy is placed on ``device``, frozen, in eval mode; the module
            given is not touched).
        device: ``"cpu"``, ``"cuda"``, … (a ``torch.device`` too).
        dtype: ``"float64"`` (default) or ``"float32"`` (a torch dtype too); the
            ``SimState`` should use the same.
        compute_stress, compute_forces: what :meth:`forward` returns besides the energy.

    Units are TorchSim's "metal" units, which are atomnet's and ASE's: positions and
    cells in Å, masses in amu, energies in eV, forces in eV/Å, stress in eV/Å³. TorchSim's
    time unit is therefore ASE's (Å·√(amu/eV) ≈ 10.18 fs; ``ase.units.fs`` equals
    ``torch_sim.units.MetalUnits.time / 1000``), so nothing is converted.

    :meth:`forward` returns, for a state of ``n_systems`` systems and ``n_atoms`` atoms,
    ``"energy"`` (n_systems,), ``"forces"`` (n_atoms, 3) and ``"stress"``
    (n_systems, 3, 3), all detached. The stress has ASE's sign, (1/V) ∂E/∂ε, positive
    under tension, as TorchSim expects (its pressure is −trace/3 plus the kinetic part);
    it is zero for a state that is not periodic in all three directions. The total
    charge of every system is 0 (a ``SimState`` carries none).
    """

    def __init__(self, model, device="cpu", dtype="float64", compute_stress: bool = True,
                 compute_forces: bool = True):
        super().__init__()
        self._device = resolve_device(device)
        self._dtype = resolve_dtype(dtype)
        self._compute_stress = bool(compute_stress)
        self._compute_forces = bool(compute_forces)
        self._memory_scales_with = "n_atoms_x_density"  # radial cutoffs
        self.potential = place_potential(model, self._device, self._dtype)

    @property
    def elements(self) -> list[str]:
        """Element symbols the model knows."""
        return list(self.potential.elements)

    def forward(self, state, **_) -> dict[str, torch.Tensor]:
        """Energy (n_systems,) eV, forces (n_atoms, 3) eV/Å and stress (n_systems, 3, 3)
        eV/Å³ of every system of ``state`` (a ``SimState`` or a dict of its fields)."""
        if isinstance(state, dict):
            fields = dict(state)
            fields.setdefault("masses", torch.ones_like(fields["positions"][:, 0]))
            state = ts.SimState(**fields)
        graph = _graphs(state, self.potential, self._device, self._dtype)
        res = evaluate(self.potential, graph, forces=self._compute_forces,
                       stress=self._compute_stress)
        out = {"energy": res.energy.detach()}
        if self._compute_forces:
            out["forces"] = res.forces.detach()
        if self._compute_stress:
            out["stress"] = res.stress.detach()
        return out
