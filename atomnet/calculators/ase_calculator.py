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
from ..derivatives import Results, evaluate, hessian
from ..dtypes import resolve_dtype
from ..errors import UsageError
from ..neighbors.trim import trim_pair_lists
from ..structures import to_device
from .bp_kernel import BPKernel, supports
from .heap import keep_heap

#: below this many atoms a CPU call runs on one intra-op thread (see ``threads``)
SMALL_SYSTEM_ATOMS = 64
#: default Verlet skin (Å) of the calculator's pair lists
DEFAULT_SKIN = 0.5
#: from this many atoms on, skinned lists are cut back to their cutoffs before each call
#: (:func:`~atomnet.neighbors.trim.trim_pair_lists`; a 1,536-atom water box: 2.2× fewer
#: angular triplets with a 0.5 Å skin); smaller systems keep them (fewer operations)
TRIM_ATOMS = 64


class _VerletCache:
    """Pair lists built at cutoff + skin, and the positions they were built at."""

    def __init__(self, positions, local, numbers, cell, pbc, charge, graph):
        self.positions = positions  # (N, 3) Å, as ASE gave them
        self.local = local  # (N, 3) float64, the graph's frame at the build
        self.numbers, self.cell, self.pbc, self.charge = numbers, cell, pbc, charge
        self.graph = graph
        self.inputs = None  # the fast BP path's index tensors, made on first use

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


def changes_since(old: Atoms | None, new: Atoms) -> list[str]:
    """ASE's ``compare_atoms`` with exact array equality: the names in ASE's
    ``all_changes`` (positions, numbers, cell, pbc, initial charges and magnetic
    moments) that differ between ``old`` (None: everything) and ``new``."""
    if old is None:
        return list(all_changes)
    changes = []
    if not np.array_equal(old.cell.array, new.cell.array):
        changes.append("cell")
    if not np.array_equal(old.pbc, new.pbc):
        changes.append("pbc")
    for name in all_changes:
        if name in ("cell", "pbc"):
            continue
        a, b = old.arrays.get(name), new.arrays.get(name)
        if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
            changes.append(name)
    return changes


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


def resolve_device(device) -> torch.device:
    """``device`` (a name such as ``"cuda:1"`` or a ``torch.device``) as a torch device;
    a :class:`UsageError` for a malformed name or CUDA without a GPU."""
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:  # a malformed name, e.g. "gpu"
        raise UsageError(f"device {device!r} is not a torch device ({exc})") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} requested but CUDA is not available")
    return resolved


def place_potential(model, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A private copy of ``model`` (path or module) on ``device`` in ``dtype``, frozen
    (no parameter requires grad), in eval mode."""
    potential = load_potential(model).to(device=device, dtype=dtype).eval()
    for p in potential.parameters():
        p.requires_grad_(False)
    return potential


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
        compile: models with an ``equivariant`` term run it through ``torch.compile``
            (dynamic shapes; energies and forces, Hessians eager): ~5× faster calls on
            small molecules after a compile of ~10 s per new structure. Plain BP models
            (one ``bpnn`` term plus references, no charges) run
            through :class:`~atomnet.calculators.bp_kernel.BPKernel` compiled with
            ``torch.compile``: descriptor, networks and forces fused into a few kernels,
            on index tensors prepared once per pair-list build. An ethanol call drops
            from ~4 to ~1.4 ms on one CPU thread (``docs/benchmarks.md``); the first
            call of each new system size compiles (20–30 s on a CPU, cached on disk
            afterwards). For MD and long optimisations of one system, not for screening
            many different structures. Other models raise a :class:`UsageError`.

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
        skin: float = DEFAULT_SKIN, compile: bool = False, **kwargs
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
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        if self.device.type == "cpu":
            keep_heap()  # large per-step tensors reused, not page-faulted (heap.py)
        self.has_charges = self._load(model)
        self.compile = bool(compile)
        self._kernel = self._make_kernel()
        #: build graphs with torch on the device (vesin-torch) rather than NumPy on the host
        self._device_graphs = self.device.type != "cpu"
        if self.has_charges:
            self.implemented_properties = [*type(self).implemented_properties,
                                           "charges", "dipole"]

    def _place(self, model) -> torch.nn.Module:
        """A private copy of ``model`` (path or module) on the device, frozen, in eval mode."""
        return place_potential(model, self.device, self.dtype)

    @contextlib.contextmanager
    def _eager_terms(self):
        """Within the block, compiled terms run eagerly (Hessians need double backward,
        which compiled functions do not support)."""
        saved = [(t, t.__dict__.pop("forward")) for t in self._compiled_terms]
        try:
            yield
        finally:
            for term, forward in saved:
                term.forward = forward

    def _make_kernel(self) -> BPKernel | None:
        """The fast BP path when asked for (``compile``) or on a GPU (where it also avoids
        host syncs: its integer work happens once per list build), else None."""
        reason = supports(self.potential)
        #: terms whose forward runs through torch.compile (compile=True, not plain BP)
        self._compiled_terms = []
        if self.compile:
            if reason is None:
                return BPKernel(self.potential, compile=True)
            compilable = [t for t in self.potential.terms.values()
                          if getattr(t, "compilable", False)]
            if not compilable:
                raise UsageError("compile=True needs a plain BP model or a model with an "
                                 f"equivariant term: {reason}")
            for term in compilable:  # the calculator's private copy: nothing else sees it
                term.forward = torch.compile(term.forward, dynamic=True)
            self._compiled_terms = compilable
            return None
        if self.device.type == "cuda" and reason is None:
            return BPKernel(self.potential)
        return None

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
        """ASE's checks (positions, numbers, cell, pbc, …) plus the ``info`` fields read.

        Arrays are compared for exact equality (:func:`changes_since`), not with ASE's
        ``allclose`` at ``tol``: the same answer except that a change below 1e-15 Å
        also recomputes, at a fraction of the cost (ASE's comparison took 0.7 ms of a
        1–2 ms ethanol MD step, twice per step).
        """
        ignored = set(getattr(self, "ignored_changes", ()))
        changes = [c for c in changes_since(self.atoms, atoms) if c not in ignored]
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

    def _trims(self, atoms: Atoms) -> bool:
        """Whether skinned lists are cut back to their cutoffs before a call: on the CPU
        for systems of :data:`TRIM_ATOMS` atoms or more. Not on a GPU, where cutting
        (``nonzero``) would stall the host every step; there the extra pairs cost
        arithmetic only."""
        return self.device.type == "cpu" and len(atoms) >= TRIM_ATOMS

    def _graph(self, atoms: Atoms) -> dict[str, torch.Tensor]:
        """The graph of ``atoms``: lists at cutoff + skin (reused, see
        :meth:`_verlet_graph`), cut back to the cutoffs where :meth:`_trims`."""
        skin = self.active_skin
        if skin > 0.0:
            graph = self._verlet_graph(atoms, skin)
            if self._trims(atoms):
                graph = trim_pair_lists(graph, self.potential.pair_lists)
            return graph
        return to_device(self._build(atoms, 0.0), self.device, self.dtype)

    def _build(self, atoms: Atoms, skin: float) -> dict[str, torch.Tensor]:
        """A fresh graph of ``atoms`` (lists at cutoff + ``skin``), float64, on the device:
        built with NumPy and vesin on the host for a CPU calculator, and on the GPU itself
        (:func:`~atomnet.structures.device_graph`, vesin-torch) for a CUDA one."""
        if not self._device_graphs:
            return self.potential.graph(atoms, labels=False, skin=skin)
        from ..structures import validate_atoms
        from ..structures.device_graph import device_graph

        validate_atoms(atoms, elements=self.potential.elements, overlap=False)
        positions = torch.as_tensor(atoms.positions, dtype=torch.float64, device=self.device)
        charge = torch.tensor([float(atoms.info.get("charge", 0.0))], dtype=torch.float64,
                              device=self.device)
        graph = device_graph(
            positions, torch.as_tensor(atoms.numbers, device=self.device),
            torch.as_tensor(atoms.cell.array, dtype=torch.float64, device=self.device),
            torch.as_tensor(atoms.pbc, device=self.device), self.potential.elements,
            self.potential.pair_lists, charge=charge, skin=skin)
        return graph

    def _verlet_graph(self, atoms: Atoms, skin: float) -> dict[str, torch.Tensor]:
        """The graph with pair lists built at cutoff + ``skin`` and reused while no atom has
        moved more than skin/2 since they were built (and numbers, cell, pbc and charge
        are unchanged): only the positions are refreshed. Results equal a fresh list's:
        the extra pairs contribute exactly zero through the parts' smooth cutoffs."""
        positions = np.asarray(atoms.positions, dtype=np.float64)
        cache = self._verlet
        if cache is not None and cache.reusable(atoms, positions, skin):
            graph = dict(cache.graph)
            moved = torch.as_tensor(positions - cache.positions).to(self.device)
            graph[keys.POSITIONS] = (cache.local + moved).to(self.dtype)
            return graph
        graph = self._build(atoms, skin)
        local = graph[keys.POSITIONS].clone()  # float64: the frame of the build
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
        if self._kernel is not None:
            return ase_results(self._kernel_results(atoms, want_stress), want_stress, False)
        res = evaluate(self.potential, self._graph(atoms), forces=True, stress=want_stress)
        return ase_results(res, want_stress, self.has_charges)

    def _kernel_results(self, atoms: Atoms, want_stress: bool) -> Results:
        """Energy, forces and stress from the fast BP path. Its index tensors are kept
        with the Verlet lists while they are reused (small systems), else made per call
        from the trimmed lists."""
        graph = self._graph(atoms)
        cache = self._verlet
        if cache is not None and not self._trims(atoms):
            if cache.inputs is None:
                cache.inputs = self._kernel.inputs(graph)
            inputs = cache.inputs
        else:
            inputs = self._kernel.inputs(graph)
        parts, forces, virial = self._kernel(graph[keys.POSITIONS], inputs)
        atomic = parts.sum(0)
        stress = None
        if want_stress:
            volume = torch.linalg.det(graph[keys.CELL][0]).abs()
            stress = (-virial / volume).unsqueeze(0)
        return Results(energy=atomic.sum().unsqueeze(0), atomic_energies=atomic,
                       contributions=dict(zip(self._kernel.term_names, parts.unbind(0))),
                       forces=forces, stress=stress)

    def get_hessian(self, atoms: Atoms | None = None, indices=None) -> np.ndarray:
        """Exact Hessian d²E/dr² (3N, 3N) in eV/Å² (autograd, not finite differences).

        ``indices``: a partial Hessian, the (3k, 3k) block over those atoms (sorted
        ascending), as ``ase.vibrations.Vibrations(indices=...)`` would see it.
        """
        atoms = self.atoms if atoms is None else atoms
        if atoms is None:
            raise UsageError("get_hessian needs atoms")
        with _intra_op_threads(self._threads(atoms)), self._eager_terms():
            h = hessian(self.potential, self._graph(atoms), indices=indices)
        return h.cpu().double().numpy()
