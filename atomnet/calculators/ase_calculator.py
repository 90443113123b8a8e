"""A thin ASE calculator: structure → graph → derivatives module → ASE units."""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator as _ASECalculator
from ase.calculators.calculator import PropertyNotImplementedError, all_changes

from .. import keys
from ..derivatives import evaluate, hessian
from ..dtypes import resolve_dtype
from ..errors import UsageError
from ..structures import to_device

#: below this many atoms a CPU call runs on one intra-op thread (see ``threads``)
SMALL_SYSTEM_ATOMS = 64
#: default Verlet skin (Å) of the calculator's pair lists
DEFAULT_SKIN = 0.5


class _VerletCache:
    """Pair lists built at cutoff + skin, and the positions they were built at."""

    def __init__(self, positions, local, numbers, cell, pbc, charge, graph):
        self.positions = positions  # (N, 3) Å, as ASE gave them
        self.local = local  # (N, 3) float64, the graph's frame at the build
        self.numbers, self.cell, self.pbc, self.charge = numbers, cell, pbc, charge
        self.graph = graph

    def reusable(self, atoms: Atoms, positions: np.ndarray, skin: float) -> bool:
        if (positions.shape != self.positions.shape
                or not np.array_equal(atoms.numbers, self.numbers)
                or not np.array_equal(atoms.pbc, self.pbc)
                or not np.array_equal(atoms.cell.array, self.cell)
                or atoms.info.get("charge") != self.charge):
            return False
        if not np.isfinite(positions).all():
            return False  # rebuilt, and the full validation names the bad atom
        moved = np.linalg.norm(positions - self.positions, axis=1)
        return bool(moved.max(initial=0.0) <= 0.5 * skin)


@contextlib.contextmanager
def _intra_op_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (None: leave as is), then restore."""
    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def is_committee_source(model) -> bool:
    """True for what names a committee: a list or tuple of models, a ``committee.json``
    file (any ``.json`` path) or a folder (holding ``committee.json``)."""
    if isinstance(model, (list, tuple)):
        return True
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        return path.suffix == ".json" or path.is_dir()
    return False


def load_potential(model):
    """A private :class:`~atomnet.potential.Potential`: loaded from a path, or a deep
    copy of the module given (casting or freezing must not touch the caller's module)."""
    if isinstance(model, (str, os.PathLike)):
        from ..io import load

        return load(model)
    return copy.deepcopy(model)


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


def ase_results(res, want_stress: bool, has_charges: bool) -> dict:
    """ASE's ``results`` dict (float64 NumPy, eV/Å units) from one structure's
    :class:`~atomnet.derivatives.Results`."""
    energy = float(res.energy.detach().sum())
    results = {
        "energy": energy,
        "free_energy": energy,
        "energies": _to_numpy(res.atomic_energies),
        "forces": _to_numpy(res.forces),
        "contributions": {
            k: float(v.detach().sum()) for k, v in res.contributions.items()
        },
    }
    if has_charges:
        results["charges"] = _to_numpy(res.charges)
        results["dipole"] = _to_numpy(res.dipole[0])
    if want_stress:
        s = _to_numpy(res.stress[0])
        results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    return results


class Calculator(_ASECalculator):
    """ASE calculator for an atomnet potential.

    Args:
        model: a path to a ``.atomnet`` file or a :class:`~atomnet.potential.Potential`.
            A committee (a list or tuple of those, a ``committee.json`` file or the
            training folder holding one) makes a
            :class:`~atomnet.calculators.CommitteeCalculator` instead: mean
            predictions plus their spread (see ``docs/committees.md``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``…
        dtype: ``"float64"`` (default: exact derivatives, Hessians) or ``"float32"`` (faster).
        threads: torch intra-op threads for a CPU call. ``None`` (default): one thread
            for systems under 64 atoms, whose calls are bound by per-operation
            overhead that extra threads only add wake-up latency to (measured 3.3 vs
            5–8 ms per ethanol call with two threads), and torch's setting otherwise.
            The process-wide setting is restored after each call.
        skin: Verlet skin in Å (default 0.5): pair lists are built at cutoff + skin and
            reused until an atom has moved more than skin/2 (or the numbers, cell, pbc
            or charge change); results equal a fresh list's. 0 rebuilds every call, as
            do models with a part that is not ``skin_safe`` (D3, Coulomb).

    Properties: ``energy``/``free_energy`` (eV), ``energies`` (eV per atom),
    ``forces`` (eV/Å), ``stress`` (eV/Å³, Voigt, 3-D periodic cells only) and, for
    potentials with charges, ``charges`` (e) and ``dipole`` (e·Å, Σ q_i r_i over the
    positions as given; for cells the atoms are first wrapped into the cell, and the
    value is not a physical observable). Per-term energies (eV) are in
    ``calc.results["contributions"]``.

    The total charge is read from ``atoms.info["charge"]`` (e, default 0); changing
    it (or any other ``info`` field in :attr:`INFO_KEYS`) makes the next call recompute.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    #: ``atoms.info`` fields a model reads: a change to one of them invalidates results
    INFO_KEYS = ("charge",)

    def __new__(cls, model=None, *args, **kwargs):
        if cls is Calculator and is_committee_source(model):
            from .committee import CommitteeCalculator

            cls = CommitteeCalculator
        return super().__new__(cls)

    def __init__(
        self, model, device: str = "cpu", dtype="float64", threads: int | None = None,
        skin: float = DEFAULT_SKIN, **kwargs
    ):
        super().__init__(**kwargs)
        if threads is not None and threads < 1:
            raise UsageError(f"threads must be a positive integer or None, got {threads}")
        if not (isinstance(skin, (int, float)) and 0.0 <= float(skin) < 10.0):
            raise UsageError(f"skin must be a number of Å in [0, 10), got {skin!r}")
        self.threads = threads
        self.skin = float(skin)
        self._verlet: _VerletCache | None = None
        #: how many times the pair lists were built (a Verlet-list statistic)
        self.rebuilds = 0
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:  # a malformed name, e.g. "gpu"
            raise UsageError(f"device {device!r} is not a torch device ({exc})") from exc
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"device {device!r} requested but CUDA is not available")
        self.dtype = resolve_dtype(dtype)
        self.has_charges = self._load(model)
        if self.has_charges:
            self.implemented_properties = [*type(self).implemented_properties,
                                           "charges", "dipole"]

    def _place(self, model) -> torch.nn.Module:
        """A private copy of ``model`` (path or module) on the device, frozen, in eval mode."""
        potential = load_potential(model).to(device=self.device, dtype=self.dtype).eval()
        for p in potential.parameters():
            p.requires_grad_(False)
        return potential

    def _load(self, model) -> bool:
        """Set up the model(s); returns whether charges and dipoles are predicted."""
        self.potential = self._place(model)
        return keys.CHARGES in self.potential.outputs

    @property
    def elements(self) -> list[str]:
        """Element symbols the model knows."""
        return list(self.potential.elements)

    @property
    def outputs(self) -> tuple[str, ...]:
        """What the model predicts besides the energy (e.g. charges, dipole)."""
        return tuple(self.potential.outputs)

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's checks (positions, numbers, cell, pbc, …) plus the ``info`` fields read."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None:
            old, new = self.atoms.info, atoms.info
            if any(old.get(k) != new.get(k) for k in self.INFO_KEYS):
                changes.append("info")
        return changes

    def _threads(self, atoms: Atoms) -> int | None:
        if self.device.type != "cpu":
            return None
        if self.threads is not None:
            return self.threads
        return 1 if len(atoms) < SMALL_SYSTEM_ATOMS else None

    @property
    def active_skin(self) -> float:
        """The Verlet skin in use (Å): :attr:`skin`, or 0 when a part of the model may not
        read lists longer than its cutoff (``Term.skin_safe``: D3, Coulomb)."""
        parts = [*self.potential.stages.values(), *self.potential.terms.values()]
        return self.skin if all(getattr(p, "skin_safe", False) for p in parts) else 0.0

    def _graph(self, atoms: Atoms) -> dict[str, torch.Tensor]:
        skin = self.active_skin
        if skin > 0.0:
            return self._verlet_graph(atoms, skin)
        graph = self.potential.graph(atoms, labels=False)
        return to_device(graph, self.device, self.dtype)

    def _verlet_graph(self, atoms: Atoms, skin: float) -> dict[str, torch.Tensor]:
        """The graph with pair lists built at cutoff + ``skin`` and reused while no atom has
        moved more than skin/2 since they were built (and numbers, cell, pbc and charge
        are unchanged): only the positions are refreshed. Results equal a fresh list's:
        the extra pairs contribute exactly zero through the parts' smooth cutoffs."""
        positions = np.asarray(atoms.positions, dtype=np.float64)
        cache = self._verlet
        if cache is not None and cache.reusable(atoms, positions, skin):
            graph = dict(cache.graph)
            moved = torch.as_tensor(positions - cache.positions, dtype=torch.float64)
            graph[keys.POSITIONS] = (cache.local + moved).to(self.device, self.dtype)
            return graph
        graph = self.potential.graph(atoms, labels=False, skin=skin)
        local = graph[keys.POSITIONS].clone()
        graph = to_device(graph, self.device, self.dtype)
        self._verlet = _VerletCache(positions.copy(), local, atoms.numbers.copy(),
                                    atoms.cell.array.copy(), atoms.pbc.copy(),
                                    atoms.info.get("charge"), graph)
        self.rebuilds += 1
        return graph

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        want_stress = "stress" in properties
        if want_stress and not self.atoms.pbc.all():
            raise PropertyNotImplementedError("stress needs a cell periodic in all 3 directions")
        with _intra_op_threads(self._threads(self.atoms)):
            self.results = self._compute(self.atoms, want_stress)

    def _compute(self, atoms: Atoms, want_stress: bool) -> dict:
        """The ``results`` dict of ``atoms`` (runs inside the thread setting)."""
        res = evaluate(self.potential, self._graph(atoms), forces=True, stress=want_stress)
        return ase_results(res, want_stress, self.has_charges)

    def get_hessian(self, atoms: Atoms | None = None, indices=None) -> np.ndarray:
        """Exact Hessian d²E/dr² (3N, 3N) in eV/Å² (autograd, not finite differences).

        ``indices``: a partial Hessian, the (3k, 3k) block over those atoms (sorted
        ascending), as ``ase.vibrations.Vibrations(indices=...)`` would see it.
        """
        atoms = self.atoms if atoms is None else atoms
        if atoms is None:
            raise UsageError("get_hessian needs atoms")
        with _intra_op_threads(self._threads(atoms)):
            h = hessian(self.potential, self._graph(atoms), indices=indices)
        return h.cpu().double().numpy()
