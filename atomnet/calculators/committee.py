"""Committees (ensembles) of potentials: mean predictions and their spread.

A committee is K ≥ 2 potentials over the same elements, usually trained with
``training.ensemble: K`` (same data split, different seeds). The
:class:`CommitteeCalculator` evaluates every member on the structure and
returns the committee mean as the usual ASE properties, plus the spread
across members (population standard deviation, ``ddof=0``):

- ``energy_std`` (float, eV): std of the members' total energies;
- ``forces_std`` ((N, 3), eV/Å): std of each force component;
- ``forces_std_norm`` ((N,), eV/Å): per atom, ``sqrt(Σ_c forces_std[i, c]²)``,
  the root-mean-square distance of the members' force vectors from their mean
  (rotation invariant);
- ``forces_std_max`` (float, eV/Å): the largest ``forces_std_norm``, DP-GEN's
  "max model deviation of forces", a per-structure flag for active learning;
- ``stress_std`` ((6,), eV/Å³, Voigt) when stress was computed;
- ``energy_members`` ((K,), eV) and ``forces_members`` ((K, N, 3), eV/Å):
  each member's prediction, for statistics of one's own (e.g. ``ddof=1``).

``committee.json`` (written by :func:`atomnet.training.committee.train_committee`)
lists the member model files relative to its own folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from .. import keys
from ..derivatives import evaluate, hessian
from ..errors import UsageError
from ..structures import to_device
from .ase_calculator import Calculator, _intra_op_threads, ase_results

#: the file a committee's training folder holds, and its format tag
COMMITTEE_FILE = "committee.json"
COMMITTEE_FORMAT = "atomnet-committee/1"

#: results averaged over members as arrays (the energy and contributions are handled apart)
_ARRAY_KEYS = ("energies", "forces", "stress", "charges", "dipole")


def read_committee(path: str | os.PathLike) -> list[Path]:
    """Member model files listed in a ``committee.json`` (or a folder holding one).

    Paths in the file are relative to its folder. Raises :class:`UsageError` naming
    the file when it is missing, malformed, or lists fewer members than it should
    (a committee whose training has not finished).
    """
    path = Path(path)
    if path.is_dir():
        path = path / COMMITTEE_FILE
    if not path.is_file():
        raise UsageError(f"{path}: no committee file (train with training.ensemble: K "
                         f"to write one, or pass a list of model files)")
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(record, dict) or record.get("format") != COMMITTEE_FORMAT:
        raise UsageError(f"{path}: not an {COMMITTEE_FORMAT} file")
    members = record.get("members")
    if not isinstance(members, list) or not all(
        isinstance(m, dict) and isinstance(m.get("model"), str) for m in members
    ):
        raise UsageError(f"{path}: 'members' must be a list of {{'model': path, ...}}")
    size = record.get("size", len(members))
    if len(members) < size:
        raise UsageError(f"{path}: only {len(members)} of {size} members are trained; "
                         f"run the training again to finish the committee")
    return [path.parent / m["model"] for m in members]


def committee_sources(models) -> list:
    """The member models (paths or modules) named by a list, a ``committee.json`` or a folder."""
    if isinstance(models, (list, tuple)):
        return list(models)
    return list(read_committee(models))


def _name(model, index: int) -> str:
    return str(model) if isinstance(model, (str, os.PathLike)) else f"member {index}"


def check_members(potentials: Sequence[torch.nn.Module], names: Sequence[str]) -> None:
    """At least two members, all over the same elements and with the same outputs."""
    if len(potentials) < 2:
        raise UsageError(f"a committee needs at least two models, got {len(potentials)}")
    first = potentials[0]
    for potential, name in zip(potentials[1:], names[1:], strict=True):
        if set(potential.elements) != set(first.elements):
            raise UsageError(
                f"committee members must share their elements: {name} has "
                f"{potential.elements}, {names[0]} has {first.elements}"
            )
        if set(potential.outputs) != set(first.outputs):
            raise UsageError(
                f"committee members must declare the same outputs: {name} has "
                f"{sorted(potential.outputs)}, {names[0]} has {sorted(first.outputs)}"
            )


def combine(members: Sequence[dict]) -> dict:
    """The committee's ``results`` from each member's: means and spreads (``ddof=0``).

    ``members``: ASE results dicts as :func:`~.ase_calculator.ase_results` makes them.
    See the module docstring for the keys and units.
    """
    energies = np.array([m["energy"] for m in members])
    forces = np.stack([m["forces"] for m in members])
    energy = float(energies.mean())
    forces_std = forces.std(axis=0)
    norm = np.sqrt((forces_std**2).sum(axis=1))
    results = {
        "energy": energy,
        "free_energy": energy,
        "contributions": {
            k: float(np.mean([m["contributions"][k] for m in members]))
            for k in members[0]["contributions"]
        },
        "energy_std": float(energies.std()),
        "forces_std": forces_std,
        "forces_std_norm": norm,
        "forces_std_max": float(norm.max()),
        "energy_members": energies,
        "forces_members": forces,
    }
    for key in _ARRAY_KEYS:
        if key in members[0]:
            results[key] = np.mean([m[key] for m in members], axis=0)
    if "stress" in members[0]:
        results["stress_std"] = np.std([m["stress"] for m in members], axis=0)
    return results


class CommitteeCalculator(Calculator):
    """ASE calculator for a committee of atomnet potentials (see the module docstring).

    Args:
        models: a list or tuple of ``.atomnet`` paths or
            :class:`~atomnet.potential.Potential` modules, a ``committee.json`` file,
            or the training folder that holds one.
        device, dtype, threads: as for :class:`~atomnet.calculators.Calculator`.

    ``atomnet.Calculator(models)`` builds one of these whenever ``models`` names a
    committee. Properties are the committee means (``energy``, ``forces``, ``stress``,
    ``energies``, ``charges``, ``dipole``, ``contributions``); the forces are the
    mean of the members' forces, i.e. exactly −∂(mean energy)/∂r, so dynamics on a
    committee conserve energy. :meth:`get_hessian` is the mean of the members'
    Hessians. The members are evaluated one after another: a call costs K single calls.
    """

    def _load(self, models) -> bool:
        sources = committee_sources(models)
        names = [_name(m, k) for k, m in enumerate(sources)]
        self.potentials = [self._place(m) for m in sources]
        self.member_names = names
        check_members(self.potentials, names)
        return keys.CHARGES in self.potentials[0].outputs

    def _make_kernel(self) -> None:
        """Members are evaluated by the reference path (no fast BP kernel)."""
        if self.compile:
            raise UsageError("compile=True is for single models, not committees")
        return None

    @property
    def size(self) -> int:
        """Number of members K."""
        return len(self.potentials)

    @property
    def elements(self) -> list[str]:
        """Element symbols of the first member (every member has the same set)."""
        return list(self.potentials[0].elements)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self.potentials[0].outputs)

    @property
    def potential(self):
        raise UsageError(
            "a committee has no single potential: this needs one model "
            f"(e.g. {self.member_names[0]}); energies, forces, stress and Hessians "
            "work on the committee")

    def _graphs(self, atoms: Atoms) -> list[dict[str, torch.Tensor]]:
        """One graph per member, built once for members with the same elements and lists."""
        cache: dict[tuple, dict[str, torch.Tensor]] = {}
        graphs = []
        for potential in self.potentials:
            key = (tuple(potential.elements), tuple(potential.pair_lists.items()))
            if key not in cache:
                cache[key] = self._graph_of(potential, atoms)
            graphs.append(cache[key])
        return graphs

    def _graph_of(self, potential, atoms: Atoms) -> dict[str, torch.Tensor]:
        return to_device(potential.graph(atoms, labels=False), self.device, self.dtype)

    def _compute(self, atoms: Atoms, want_stress: bool) -> dict:
        members = [
            ase_results(evaluate(p, g, forces=True, stress=want_stress), want_stress,
                        self.has_charges)
            for p, g in zip(self.potentials, self._graphs(atoms), strict=True)
        ]
        return combine(members)

    def get_hessian(self, atoms: Atoms | None = None, indices=None) -> np.ndarray:
        """Hessian of the mean energy (3N, 3N) in eV/Å²: the mean of the members' Hessians."""
        atoms = self.atoms if atoms is None else atoms
        if atoms is None:
            raise UsageError("get_hessian needs atoms")
        with _intra_op_threads(self._threads(atoms)):
            blocks = [hessian(p, g, indices=indices).cpu().double().numpy()
                      for p, g in zip(self.potentials, self._graphs(atoms), strict=True)]
        return np.mean(blocks, axis=0)
